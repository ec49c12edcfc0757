"""What is running right now in this thread: the current task's execution context.

Kept apart from ``context.py`` so that the task model can read it without importing the
engine side (the engine sets it around every task it runs).
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["current_task_context"]

# Holds a graflow.core.context.TaskExecutionContext while a task body runs in this thread.
current_task_context: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "graflow_task_context", default=None
)
