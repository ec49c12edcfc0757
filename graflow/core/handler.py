"""Task handlers: how a task's body is run once a worker has it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable

__all__ = ["TaskHandler", "TaskResult"]


@dataclass
class TaskResult:
    """Outcome of one parallel-group member (its whole branch), for group policies."""

    task_id: str
    success: bool
    error: BaseException | None = None
    error_message: str | None = None
    duration: float = 0.0
    timestamp: float = 0.0


class TaskHandler(ABC):
    """Runs one task: call it, store its result with ``context.set_result``, return it.

    Handlers are selected by a task's ``handler_type`` (``@task(handler="name")``) among
    those registered with ``WorkflowEngine.register_handler``. On failure a handler stores
    the exception as the result and re-raises it. A handler may be called from several
    threads at once (parallel branches) and must be picklable to run in worker processes.
    """

    def get_name(self) -> str:
        """The name this handler is known by (default: its class name)."""
        return type(self).__name__

    @abstractmethod
    def execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        """Run ``task`` in ``context`` and return its result."""
