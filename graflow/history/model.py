"""The records of a run's history: one RunRecord, and one AttemptRecord per task attempt.

A task's state transitions are kept as the times of one row per attempt: ``queued_at``
(handed to a backend), ``started_at`` (began on its worker), ``ended_at`` and the state it
ended in (``succeeded``, ``failed``, ``retried``: failed and tried again, ``skipped``: never
ran). ``transitions`` spells them out as a list, the way ``graflow runs show`` prints them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ATTEMPT_FIELDS",
    "AttemptRecord",
    "RunDetail",
    "RunRecord",
    "RunStatus",
    "TaskState",
    "TaskSummary",
    "summarize_tasks",
    "transitions",
]


class RunStatus(StrEnum):
    """How a run stands or ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOST = "lost"  # still "running" but its driver stopped writing (it died)


class TaskState(StrEnum):
    """The state of one task attempt."""

    QUEUED = "queued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    SKIPPED = "skipped"


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRIED})


@dataclass
class RunRecord:
    """One run: who ran what, where, when, and how it ended."""

    run_id: str
    workflow: str
    target: str
    backend: str
    started_at: float
    host: str = ""
    pid: int = 0
    ended_at: float | None = None
    updated_at: float = 0.0
    status: str = RunStatus.RUNNING
    exit_code: int | None = None
    error: str = ""
    tasks: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Attempts by state (filled by the stores when they list runs)."""

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values."""
        return asdict(self)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (None while it runs)."""
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass
class AttemptRecord:
    """One attempt of one task."""

    seq: int
    task_id: str
    attempt: int
    state: str
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    worker: str = ""
    error: str = ""
    traceback: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values."""
        return asdict(self)


ATTEMPT_FIELDS = (
    "seq",
    "task_id",
    "attempt",
    "state",
    "queued_at",
    "started_at",
    "ended_at",
    "duration_s",
    "worker",
    "error",
    "traceback",
)
"""AttemptRecord's fields in order: the row the writer hands to a store."""


@dataclass
class RunDetail:
    """A run with its attempts and its graph (``{"nodes": [...], "edges": [...]}``)."""

    run: RunRecord
    attempts: list[AttemptRecord]
    graph: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values, each attempt with its transitions."""
        return {
            "run": self.run.as_dict(),
            "attempts": [{**a.as_dict(), "transitions": transitions(a)} for a in self.attempts],
            "graph": self.graph,
        }


def transitions(attempt: AttemptRecord) -> list[dict[str, Any]]:
    """The state changes of one attempt, in order, each ``{"state", "at"}``."""
    out: list[dict[str, Any]] = []
    if attempt.queued_at is not None:
        out.append({"state": TaskState.QUEUED.value, "at": attempt.queued_at})
    if attempt.started_at is not None:
        out.append({"state": TaskState.STARTED.value, "at": attempt.started_at})
    if attempt.state == TaskState.RETRIED:  # it failed, then the scheduler tried again
        out.append({"state": TaskState.FAILED.value, "at": attempt.ended_at})
    if attempt.state in FINAL_STATES or attempt.state == TaskState.SKIPPED:
        out.append({"state": attempt.state, "at": attempt.ended_at})
    return out


@dataclass
class TaskSummary:
    """One task of a run: its last state, how many attempts, where and when it ran."""

    task_id: str
    state: str
    attempts: int
    worker: str
    start_offset_s: float | None
    duration_s: float | None
    error: str
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain values."""
        return dict(self.__dict__)


def summarize_tasks(detail: RunDetail) -> list[TaskSummary]:
    """Per task (in the order they were first queued): last state, attempts, worker, times."""
    by_task: dict[str, list[AttemptRecord]] = {}
    ordered = sorted(detail.attempts, key=lambda a: (a.queued_at is None, a.queued_at or 0.0))
    for attempt in ordered:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    start = detail.run.started_at
    out = []
    for task_id, attempts in by_task.items():
        last = attempts[-1]
        first_start = next((a.started_at for a in attempts if a.started_at is not None), None)
        ran = [a for a in attempts if a.started_at is not None]
        out.append(
            TaskSummary(
                task_id=task_id,
                state=last.state,
                attempts=len(ran),
                worker=last.worker,
                start_offset_s=None if first_start is None else first_start - start,
                duration_s=last.duration_s,
                error=last.error,
                traceback=last.traceback,
            )
        )
    return out
