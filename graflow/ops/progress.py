"""Live progress of a run on a terminal, and the engine hook that feeds it.

    scheduler loop ──on_progress(counters), at most every 100 ms──▶ RunWatch
    RunWatch ──▶ RunTag (run id for log lines) and ProgressLine.update
    ProgressLine thread ──every 250 ms: "\\r<line>\\x1b[K"──▶ stderr (a TTY only)

The line is redrawn by its own thread so that elapsed time and rate stay live while long
tasks run; log lines clear it first and it is redrawn after them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

from graflow.ops.logs import RunTag

__all__ = ["ProgressLine", "RunWatch"]

logger = logging.getLogger(__name__)

_RATE_WINDOW_S = 5.0
_CLEAR = "\r\x1b[K"


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """One self-refreshing status line on a terminal stream."""

    def __init__(
        self, stream: TextIO, refresh_s: float = 0.25, *, workers: int | None = None
    ) -> None:
        self.stream = stream
        # Tasks the scheduler has handed over but no worker runs yet (a pool worker's batch,
        # a Redis stream) show as queued: "running" never exceeds the workers (#18). With no
        # known worker count (Redis nodes come and go) they show as "in flight".
        self.workers = workers
        self.refresh_s = refresh_s
        self.started = time.monotonic()
        self.counters: dict[str, Any] = {}
        self.samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._shown = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="graflow-progress", daemon=True)

    def start(self) -> None:
        """Start redrawing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing and erase the line."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        with self._lock:
            self._erase()

    def update(self, counters: dict[str, Any]) -> None:
        """Take new counters (any thread)."""
        now = time.monotonic()
        finished = int(counters.get("done", 0)) + int(counters.get("failed", 0))
        with self._lock:
            self.counters = counters
            self.samples.append((now, finished))
            while len(self.samples) > 2 and self.samples[0][0] < now - _RATE_WINDOW_S:
                self.samples.popleft()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Erase the line while something else writes to the stream; redraw after."""
        with self._lock:
            self._erase()
            yield
            self._draw()

    def render(self) -> str:
        """The text of the line, e.g. ``run 9f3c1a2b: 120 done | 30 queued | ...``."""
        c = self.counters
        now = time.monotonic()
        rate = 0.0
        if len(self.samples) >= 2:
            (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
            rate = (n1 - n0) / max(now - t0, t1 - t0, 1e-3)
        run = str(c.get("run_id", ""))[:8]
        running, queued = int(c.get("running", 0)), int(c.get("queued", 0))
        if self.workers is not None:
            shown = min(running, self.workers)
            busy = f"{shown} running"
            queued += running - shown
        else:
            busy = f"{running} in flight"
        return (
            f"run {run}: {c.get('done', 0)} done | {queued} queued | {busy} | "
            f"{c.get('failed', 0)} failed | {rate:.1f} tasks/s | {_elapsed(now - self.started)}"
        )

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                self._draw()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return max(20, columns - 1) if columns > 0 else 99  # 0: a terminal of unknown size

    def _draw(self) -> None:
        if self._stop.is_set() or not self.counters:
            return
        self.stream.write(_CLEAR + self.render()[: self._width()])
        self.stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._shown = False


class RunWatch:
    """The engine's ``on_progress`` hook for one command: run id, last counters, live line."""

    def __init__(self, tag: RunTag, line: ProgressLine | None) -> None:
        self.tag = tag
        self.line = line
        self.counters: dict[str, Any] = {}

    def __call__(self, counters: dict[str, Any]) -> None:
        if self.tag.run_id != counters.get("run_id"):
            self.tag.run_id = counters.get("run_id")
            logger.info("run %s started", self.tag.run_id)
        self.counters = counters
        if self.line is not None:
            self.line.update(counters)
