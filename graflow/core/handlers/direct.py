"""The default handler: run the task's function right here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graflow.core.handler import TaskHandler

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable

__all__ = ["DirectTaskHandler"]


class DirectTaskHandler(TaskHandler):
    """Calls ``task.run()`` in the current thread and stores the result."""

    def get_name(self) -> str:
        return "direct"

    def execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        try:
            value = task.run()
        except Exception as exc:
            context.set_result(task.task_id, exc)
            raise
        context.set_result(task.task_id, value)
        return value
