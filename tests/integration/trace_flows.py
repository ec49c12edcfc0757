"""The workflow the OpenTelemetry tests trace (importable by worker processes and nodes).

    prepare ─▶ (left | right) ─▶ flaky ─▶ finish

``left`` opens a span of its own inside its task (it must nest under the task's span);
``flaky`` fails its first attempt and succeeds on the retry; ``finish`` is a plain chain
successor, so a pool or a node may send it ahead of ``flaky`` (a conditional item that comes
back unrun after the failed attempt, and must leave no span).
"""

from __future__ import annotations

from opentelemetry import trace

from graflow import TaskExecutionContext, task, workflow
from graflow.core.workflow import WorkflowContext

TASK_SPANS = 6  # prepare, left, right, flaky twice, finish
INNER_SPAN = "left's own work"


def build() -> WorkflowContext:
    """A fresh copy of the traced workflow."""
    with workflow("traced") as wf:

        @task("prepare")
        def prepare() -> int:
            return 2

        @task("left")
        def left() -> str:
            with trace.get_tracer("tests").start_as_current_span(INNER_SPAN):
                return "left"

        @task("right")
        def right() -> str:
            return "right"

        @task("flaky", max_retries=1, inject_context=True)
        def flaky(ctx: TaskExecutionContext) -> str:
            if ctx.retry_count == 0:
                raise RuntimeError("the first attempt fails")
            return "ok"

        @task("finish")
        def finish() -> str:
            return "done"

        _ = prepare >> (left | right) >> flaky >> finish
    return wf


traced = build()
"""For ``graflow run tests/integration/trace_flows.py:traced``."""
