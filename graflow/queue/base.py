"""The task-queue abstraction and the TaskSpec record of one queued task."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable

__all__ = ["TaskQueue", "TaskSpec", "TaskStatus"]


class TaskStatus(Enum):
    """Where a queued task stands."""

    READY = "ready"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"


@dataclass
class TaskSpec:
    """One queued task: the executable, its run, and its retry bookkeeping."""

    executable: Executable
    execution_context: ExecutionContext
    status: TaskStatus = TaskStatus.READY
    created_at: float = field(default_factory=time.time)
    retry_count: int = 0
    max_retries: int = 3
    last_error: str | None = None
    group_id: str | None = None
    trace_id: str | None = None
    parent_span_id: str | None = None

    @property
    def task_id(self) -> str:
        """The id of the queued task."""
        return self.executable.task_id

    def __lt__(self, other: TaskSpec) -> bool:
        return self.created_at < other.created_at

    def can_retry(self) -> bool:
        """True while the task has retries left."""
        return self.retry_count < self.max_retries

    def increment_retry(self, error_message: str | None = None) -> None:
        """Count one more retry and remember why."""
        self.retry_count += 1
        self.last_error = error_message

    def get_task(self) -> Executable:
        """The queued executable."""
        return self.executable


class TaskQueue(ABC):
    """A FIFO of TaskSpecs for one run.

    ``enqueue`` and ``dequeue`` are the contract; the rest are conveniences with default
    implementations. Implementations used by parallel branches must be thread-safe.
    """

    def __init__(self, execution_context: ExecutionContext | None = None) -> None:
        self.execution_context = execution_context
        self.enable_retry = False
        self.enable_metrics = False
        self.metrics: dict[str, int] = {"enqueued": 0, "dequeued": 0, "retries": 0, "failures": 0}

    @abstractmethod
    def enqueue(self, task_spec: TaskSpec) -> bool:
        """Add a task at the tail; True if it was accepted."""

    @abstractmethod
    def dequeue(self) -> TaskSpec | None:
        """Take the task at the head, or None when empty (never blocks)."""

    @abstractmethod
    def is_empty(self) -> bool:
        """True when nothing is queued."""

    def cleanup(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the queue holds."""

    def get_next_task(self) -> str | None:
        """Dequeue and return only the task id."""
        spec = self.dequeue()
        return spec.task_id if spec is not None else None

    def size(self) -> int:
        """Number of queued tasks (0 when the backend cannot tell)."""
        return 0

    def get_task_spec(self, task_id: str) -> TaskSpec | None:
        """The queued spec of ``task_id``, if the backend keeps them."""
        return None

    def configure(self, enable_retry: bool = False, enable_metrics: bool = False) -> None:
        """Turn queue-level retries and metrics on or off."""
        self.enable_retry = enable_retry
        self.enable_metrics = enable_metrics

    def handle_task_failure(self, task_spec: TaskSpec, error_message: str) -> bool:
        """Re-enqueue a failed task if queue-level retries allow; True if re-enqueued."""
        self.metrics["failures"] += 1
        if self.enable_retry and task_spec.can_retry():
            task_spec.increment_retry(error_message)
            self.metrics["retries"] += 1
            return self.enqueue(task_spec)
        task_spec.status = TaskStatus.ERROR
        task_spec.last_error = error_message
        return False

    def get_metrics(self) -> dict[str, int]:
        """Counters: enqueued, dequeued, retries, failures."""
        return dict(self.metrics)

    def reset_metrics(self) -> None:
        """Zero the counters."""
        for key in self.metrics:
            self.metrics[key] = 0

    def notify_task_completion(  # noqa: B027 - optional hook, empty by default
        self,
        task_id: str,
        success: bool,
        group_id: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Hook called when a queued task finished (used by distributed barriers)."""

    def to_list(self) -> list[str]:
        """Ids of the queued tasks, head first (empty when the backend cannot tell)."""
        return []

    def snapshot_ids(self) -> list[str]:
        """Ids of the queued tasks (for checkpoints and status)."""
        return self.to_list()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()
