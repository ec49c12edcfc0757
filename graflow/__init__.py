"""graflow: workflows of plain Python functions, fast on one machine, scalable through Redis.

from graflow import task, workflow

@task
def hello() -> str:
    return "hello"

with workflow("demo") as wf:
    hello >> world
result = graflow.run(wf, processes=4)   # or wf.execute() in this process
"""

from typing import TYPE_CHECKING, Any

from graflow.core.context import TaskExecutionContext
from graflow.core.decorators import task
from graflow.core.retry import RetryPolicy
from graflow.core.task import chain, parallel
from graflow.core.workflow import workflow

if TYPE_CHECKING:
    from graflow.mp.supervisor import Supervisor
    from graflow.runner import RunResult, run

__version__ = "0.3.0"

__all__ = [
    "RetryPolicy",
    "RunResult",
    "Supervisor",
    "TaskExecutionContext",
    "chain",
    "parallel",
    "run",
    "task",
    "workflow",
]


def __getattr__(name: str) -> Any:
    # The process-pool engine is imported on first use, so that in-process users do not
    # pay for multiprocessing and shared-memory set-up at import time.
    if name in ("run", "RunResult"):
        from graflow import runner  # noqa: PLC0415 - lazy, see above

        return getattr(runner, name)
    if name == "Supervisor":
        from graflow.mp.supervisor import Supervisor  # noqa: PLC0415 - lazy, see above

        return Supervisor
    raise AttributeError(f"module 'graflow' has no attribute {name!r}")
