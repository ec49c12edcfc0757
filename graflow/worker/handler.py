"""Worker-side task handlers: the ``process_task`` hooks of graflow's original worker design.

A handler in graflow is a ``graflow.core.handler.TaskHandler``: ``execute_task(task,
context)`` runs the task, stores its result with ``context.set_result`` and returns it. The
original worker design had handlers answer a yes/no question instead::

    class ContainerizedTaskHandler(TaskHandler):
        def _process_task(self, task) -> bool: ...     # True: done, False: failed

``TaskHandler`` here is the adapter between the two: its ``execute_task`` calls
``process_task(task)``, which calls ``_process_task(task)``, and turns the answer into
graflow's contract:

    False          the task failed: TaskError (retried or failing the run like any error)
    True           the task succeeded with no value (its result is None)
    anything else  the task's value (the seed's fallback ``return task()`` hands back the
                   task's own return value, so such a handler runs tasks unchanged)
    an exception   the task failed with it (stored as its result, then re-raised)

A handler that overrides ``execute_task`` itself is a plain graflow handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graflow.core.handler import TaskHandler as _CoreTaskHandler
from graflow.core.handler import TaskResult
from graflow.core.handlers.direct import DirectTaskHandler
from graflow.exceptions import TaskError

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable

__all__ = ["InProcessTaskExecutor", "TaskHandler", "TaskResult"]


class TaskHandler(_CoreTaskHandler):
    """A graflow task handler that subclasses may write as ``_process_task(task) -> bool``."""

    def execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        """Run ``task`` through ``process_task`` and store what came of it (module docstring)."""
        try:
            outcome = self.process_task(task)
        except Exception as exc:
            context.set_result(task.task_id, exc)
            raise
        if outcome is False:
            raise TaskError(task.task_id, f"{self.get_name()} reported the task as failed")
        value = None if outcome is True else outcome
        context.set_result(task.task_id, value)
        return value

    def process_task(self, task: Executable) -> Any:
        """Run ``task``: True or its value on success, False on failure."""
        return self._process_task(task)

    def _process_task(self, task: Executable) -> Any:
        """The subclass's work: True or the task's value on success, False on failure."""
        raise NotImplementedError(
            f"{type(self).__name__} must define _process_task(task) or execute_task(task, context)"
        )


class InProcessTaskExecutor(DirectTaskHandler, TaskHandler):
    """The default worker handler: runs the task in the worker's thread (as ``direct`` does).

    ``process_task(task)`` runs it too and answers True, for callers of the original API.
    A subclass that overrides ``_process_task`` gets the adapter of ``TaskHandler``.
    """

    def execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        if type(self)._process_task is not InProcessTaskExecutor._process_task:
            return TaskHandler.execute_task(self, task, context)
        return DirectTaskHandler.execute_task(self, task, context)

    def _process_task(self, task: Executable) -> bool:
        task.run()
        return True
