"""Message shapes for typed channels; ``ChannelTypeRegistry`` knows each by a short name.

Timestamps are ``time.time()`` seconds; ``status`` and ``state`` fields are free-form strings
such as ``"running"``, ``"completed"`` or ``"failed"``.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "BUILTIN_MESSAGE_TYPES",
    "CycleNotificationMessage",
    "DataTransferMessage",
    "TaskErrorMessage",
    "TaskProgressMessage",
    "TaskResultMessage",
    "WorkflowStateMessage",
]


class TaskResultMessage(TypedDict):
    """A task's outcome."""

    task_id: str
    result: Any
    timestamp: float
    status: str


class TaskProgressMessage(TypedDict):
    """How far a running task has got; ``progress`` runs from 0.0 to 1.0."""

    task_id: str
    progress: float
    message: str
    timestamp: float


class TaskErrorMessage(TypedDict):
    """A task failure, with the attempt it happened on."""

    task_id: str
    error_type: str
    error_message: str
    retry_count: int
    timestamp: float


class WorkflowStateMessage(TypedDict):
    """Where a workflow run stands."""

    workflow_id: str
    state: str
    current_task: str
    completed_tasks: list[str]
    timestamp: float


class DataTransferMessage(TypedDict):
    """A payload handed from one task to another."""

    from_task: str
    to_task: str
    data: Any
    data_type: str
    timestamp: float


class CycleNotificationMessage(TypedDict):
    """One more iteration of a cycling task, and whether it is the last allowed."""

    task_id: str
    cycle_count: int
    max_cycles: int
    is_final: bool
    timestamp: float


BUILTIN_MESSAGE_TYPES: dict[str, type[Any]] = {
    "task_result": TaskResultMessage,
    "task_progress": TaskProgressMessage,
    "task_error": TaskErrorMessage,
    "workflow_state": WorkflowStateMessage,
    "data_transfer": DataTransferMessage,
    "cycle_notification": CycleNotificationMessage,
}
