"""The records of the worker protocol: a WorkItem goes out, a Completion comes back.

Both are plain values. Backends that cross a process boundary encode them (see
``graflow.core.codec``); the in-process backend hands the objects over as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = [
    "ITEM_FIELDS",
    "CheckpointRequest",
    "Command",
    "CommandKind",
    "Completion",
    "Outcome",
    "OutcomeKind",
    "WorkItem",
]


class CommandKind(IntEnum):
    """Control commands a task can issue while it runs."""

    NEXT_TASK = 1  # payload: (task_id, executable, goto)
    TERMINATE = 2  # payload: message
    CANCEL = 3  # payload: message
    CHECKPOINT = 4  # payload: metadata = a CheckpointRequest


@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    """What ``ctx.checkpoint()`` asks of the scheduler.

    ``immediate``: the checkpoint shows the run as it was while the task ran, so a resume runs
    the task again; otherwise it is taken after the task finished and its successors were
    queued. ``path``: write upstream's three files there instead of the run's checkpoint.
    """

    metadata: dict[str, Any]
    path: str | None = None
    immediate: bool = False


@dataclass(slots=True)
class Command:
    """One control command issued by a running task, applied by the scheduler."""

    kind: CommandKind
    task_id: str = ""
    executable: Any = None
    goto: bool = False
    message: str = ""
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One attempt of one task, as handed to a worker.

    ``seq`` is unique within a run and ties the completion back to the scheduler's frame.
    ``kwargs`` is None when the worker resolves the task's keyword arguments itself (the
    in-process and Redis backends, and a conditional item of a chain lookahead); the process
    pool ships them resolved otherwise.
    """

    seq: int
    task_id: str
    attempt: int = 0
    cycle_count: int = 1
    max_cycles: int = 10
    max_retries: int = 0
    kwargs: dict[str, Any] | None = None
    timeout_s: float | None = None
    in_block: bool = False  # run as if inside the driver's `with workflow(...)` block
    trace: str | None = None  # the run's W3C traceparent when traced (graflow.trace.span)

    def as_tuple(self) -> tuple[Any, ...]:
        """The wire form: the fields in order (``WorkItem(*t)`` rebuilds it)."""
        return (
            self.seq,
            self.task_id,
            self.attempt,
            self.cycle_count,
            self.max_cycles,
            self.max_retries,
            self.kwargs,
            self.timeout_s,
            self.in_block,
            self.trace,
        )


ITEM_FIELDS = len(WorkItem(0, "").as_tuple())
"""Fields of a WorkItem's wire form; a conditional item's tuple adds its predecessor's seq."""


@dataclass(slots=True)
class Completion:
    """What came of a WorkItem: its value or its error, plus the commands it issued."""

    seq: int
    task_id: str
    ok: bool
    value: Any = None
    error: BaseException | None = None
    commands: list[Command] | None = None
    duration_s: float = 0.0
    traceback: str | None = None
    stored: bool = field(default=False)  # the value is already in the run's channel
    void: bool = False  # a conditional item that did not run (graflow.core.lookahead)
    worker: str = ""  # who ran it, for the run's record: "pid 123", "node-a/2"; "" = driver


class OutcomeKind(IntEnum):
    """How a work item ended on its worker."""

    OK = 1
    FAILED = 2
    UNSTARTED = 3  # handed back before it started (its worker drains)
    VOID = 4  # a conditional item skipped: its predecessor did not finish cleanly


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports of one work item: the wire form of a Completion.

    ``value`` is what the source made of the result for its way back (a sealed blob, a
    shared-memory reference, a marker for a value stored in Redis); the driver side turns
    it back into a value. New fields go at the end, with a default.
    """

    seq: int
    task_id: str
    kind: OutcomeKind
    value: Any = None
    error: BaseException | None = None
    commands: list[Command] | None = None
    duration_s: float = 0.0
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        """True if the task ran and returned."""
        return self.kind is OutcomeKind.OK

    @property
    def is_clean(self) -> bool:
        """Ran and returned without a control command: a conditional successor may run."""
        return self.kind is OutcomeKind.OK and not self.commands

    @classmethod
    def of(cls, completion: Completion, value: Any = None) -> Outcome:
        """The outcome of a completion, carrying ``value`` in place of its result."""
        kind = OutcomeKind.OK if completion.ok else OutcomeKind.FAILED
        return cls(
            completion.seq,
            completion.task_id,
            kind,
            value if completion.ok else None,
            completion.error,
            completion.commands,
            completion.duration_s,
            completion.traceback,
        )

    @classmethod
    def skipped(cls, item: WorkItem, kind: OutcomeKind) -> Outcome:
        """An item that did not run (UNSTARTED or VOID)."""
        return cls(item.seq, item.task_id, kind)

    @classmethod
    def failure(cls, item_seq: int, task_id: str, error: BaseException) -> Outcome:
        """A failed outcome with ``error`` and nothing else."""
        return cls(item_seq, task_id, OutcomeKind.FAILED, None, error)
