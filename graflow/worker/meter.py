"""Counters of the tasks one worker ran, small enough to travel in its heartbeat.

A worker process counts what it runs in a ``TaskMeter`` and publishes it as one JSON field
of its node's heartbeat hash; the node supervisor adds the meters of its workers up and
serves them as Prometheus metrics, and ``graflow status`` shows them. Plain counters, no
locks: one thread updates them, the heartbeat thread reads them (a reading may be one task
behind, never torn: each field is a single int or float).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["DURATION_BUCKETS_S", "TaskMeter"]

DURATION_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Upper bounds of the task duration histogram (seconds); a last bucket holds the rest."""

_COUNTS: Final = ("started", "succeeded", "failed", "retried", "dead_lettered")


def _zero_buckets() -> list[int]:
    return [0] * (len(DURATION_BUCKETS_S) + 1)


@dataclass
class TaskMeter:
    """Tasks started, succeeded, failed, retried (attempt > 0), and their durations."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duration_sum_s: float = 0.0
    buckets: list[int] = field(default_factory=_zero_buckets)
    """Per bucket of DURATION_BUCKETS_S (then +Inf), not cumulative."""

    def start(self, attempt: int) -> None:
        """A task starts; ``attempt`` > 0 makes it a retry."""
        self.started += 1
        if attempt > 0:
            self.retried += 1

    def finish(self, ok: bool, duration_s: float) -> None:
        """A started task ended after ``duration_s`` seconds."""
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self.duration_sum_s += duration_s
        self.buckets[bisect_left(DURATION_BUCKETS_S, duration_s)] += 1

    @property
    def finished(self) -> int:
        """Tasks that ended, either way."""
        return self.succeeded + self.failed

    def add(self, other: TaskMeter) -> None:
        """Add ``other``'s counts to these."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration_sum_s += other.duration_sum_s
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def is_behind(self, other: TaskMeter) -> bool:
        """True if any count is below ``other``'s (a restarted worker counts from zero)."""
        return any(getattr(self, name) < getattr(other, name) for name in _COUNTS)

    def to_json(self, **extra: float | str) -> str:
        """The meter as one JSON object (plus ``extra`` fields, e.g. a rate)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        data["duration_sum_s"] = round(self.duration_sum_s, 6)
        data["buckets"] = self.buckets
        data.update(extra)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskMeter:
        """The meter ``to_json`` wrote; ValueError if ``text`` is not one."""
        try:
            data = json.loads(text)
            meter = cls()
            for name in _COUNTS:
                setattr(meter, name, int(data.get(name, 0)))
            meter.duration_sum_s = float(data.get("duration_sum_s", 0.0))
            buckets = [int(n) for n in data.get("buckets", ())]
        except (TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a task meter: {exc}") from exc
        if len(buckets) == len(meter.buckets):
            meter.buckets = buckets
        return meter
