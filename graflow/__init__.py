"""graflow: workflows of plain Python functions, fast on one machine, scalable through Redis.

    from graflow import task, workflow

    @task
    def hello() -> str:
        return "hello"

    with workflow("demo") as wf:
        hello >> world
    wf.execute()
"""

from graflow.core.context import TaskExecutionContext
from graflow.core.decorators import task
from graflow.core.retry import RetryPolicy
from graflow.core.task import chain, parallel
from graflow.core.workflow import workflow

__version__ = "0.3.0"

__all__ = [
    "RetryPolicy",
    "TaskExecutionContext",
    "chain",
    "parallel",
    "task",
    "workflow",
]
