"""Reference §5: result storage, keyword-argument resolution and initial data."""

from __future__ import annotations

from typing import Any

import pytest

from graflow import TaskExecutionContext, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.task import Task, TaskWrapper
from graflow.exceptions import GraflowRuntimeError

# -- §5.1 result storage ----------------------------------------------------------------------


def test_results_are_stored_under_the_result_key() -> None:
    with workflow("wf") as wf:
        TaskWrapper("a", lambda: {"rows": 3}) >> TaskWrapper("b", lambda: None)
    _, ctx = wf.execute("a", ret_context=True)
    channel = ctx.get_channel()
    assert channel.get("a.__result__") == {"rows": 3}
    assert channel.exists("b.__result__")
    assert channel.get("b.__result__", "missing") is None
    assert ctx.get_result("a") == {"rows": 3}
    assert ctx.get_result("zzz", default="dflt") == "dflt"


def test_task_context_reads_results_too() -> None:
    seen: list[Any] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def reader(ctx: TaskExecutionContext) -> None:
            seen.append((ctx.get_result("a"), ctx.get_result("nope", 7)))

        TaskWrapper("a", lambda: "A") >> reader
    wf.execute("a")
    assert seen == [("A", 7)]


def test_a_failing_task_stores_its_exception_as_result() -> None:
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    with workflow("wf") as wf:
        TaskWrapper("bad", fail)
    ctx = ExecutionContext.create(wf.graph, "bad")
    with pytest.raises(GraflowRuntimeError):
        WorkflowEngine().execute(ctx)
    assert ctx.get_result("bad") is boom


def test_group_node_result_is_none() -> None:
    with workflow("wf") as wf:
        TaskWrapper("a", lambda: 1) | TaskWrapper("b", lambda: 2)
    _, ctx = wf.execute(ret_context=True)
    assert ctx.get_channel().exists("ParallelGroup_1.__result__")
    assert ctx.get_result("ParallelGroup_1", "missing") is None


def test_iteration_results_go_under_the_iteration_id() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: int | None = None) -> int:
            value = 0 if data is None else data
            if value < 2:
                ctx.next_iteration(value + 1)
            return value * 100

    _, ctx = wf.execute("loop", ret_context=True)
    assert ctx.get_result("loop") == 0
    iteration_ids = [t for t in ctx.completed_tasks if t != "loop"]
    assert len(iteration_ids) == 2
    assert [ctx.get_result(t) for t in iteration_ids] == [100, 200]


# -- §5.2 keyword resolution ------------------------------------------------------------------


def test_parameter_named_after_a_task_gets_its_result() -> None:
    with workflow("wf") as wf:
        b = TaskWrapper("b", lambda: 2)
        c = TaskWrapper("c", lambda: 3)

        @task
        def d(b: int, c: int) -> int:
            return b * 10 + c

        TaskWrapper("a", lambda: 1) >> (b | c) >> d
    assert wf.execute("a") == 23


def test_result_key_wins_over_plain_key() -> None:
    with workflow("wf") as wf:

        @task
        def use(source: str) -> str:
            return source

        TaskWrapper("source", lambda: "from-result") >> use
    assert wf.execute("source", initial_channel={"source": "from-plain"}) == "from-result"


def test_plain_key_is_used_when_no_result_exists() -> None:
    with workflow("wf") as wf:

        @task
        def use(limit: int, *, scale: int = 1) -> int:
            return limit * scale

    assert wf.execute(initial_channel={"limit": 4, "scale": 3}) == 12


def test_function_default_applies_when_nothing_matches() -> None:
    with workflow("wf") as wf:

        @task
        def use(limit: int = 9) -> int:
            return limit

    assert wf.execute() == 9


def test_missing_required_parameter_is_a_task_failure() -> None:
    with workflow("wf") as wf:

        @task
        def produce() -> int:
            return 5

        @task
        def consume(value: int) -> int:
            return value

        produce >> consume
    # No positional hand-over of the predecessor's value: only names are resolved.
    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute("produce")
    assert isinstance(info.value.cause, TypeError)
    assert str(info.value).startswith("An error occurred: ")


def test_var_args_and_var_kwargs_are_not_resolved() -> None:
    seen: list[Any] = []
    with workflow("wf") as wf:

        @task
        def flexible(*args: Any, **kwargs: Any) -> None:
            seen.append((args, kwargs))

    wf.execute(initial_channel={"args": 1, "kwargs": 2, "other": 3})
    assert seen == [((), {})]


def test_injected_context_parameter_is_not_resolved() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def job(ctx: TaskExecutionContext, value: int) -> str:
            return f"{type(ctx).__name__}:{value}"

    assert wf.execute(initial_channel={"ctx": "wrong", "value": 1}) == "TaskExecutionContext:1"


def test_resolution_can_be_switched_off() -> None:
    with workflow("wf") as wf:

        @task(resolve_keyword_args=False)
        def job(value: int = 0) -> int:
            return value

        TaskWrapper("value", lambda: 99) >> job
    assert wf.execute("value", initial_channel={"value": 5}) == 0


def test_resolution_off_with_required_parameter_fails() -> None:
    with workflow("wf") as wf:

        @task(resolve_keyword_args=False)
        def job(value: int) -> int:
            return value

    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute(initial_channel={"value": 5})
    assert isinstance(info.value.cause, TypeError)


def test_bound_kwargs_beat_channel_values() -> None:
    @task
    def scale(x: int, factor: int = 1) -> int:
        return x * factor

    with workflow("wf") as wf:
        scale(task_id="triple", factor=3)
    assert wf.execute("triple", initial_channel={"x": 2, "factor": 100}) == 6


def test_explicit_call_kwargs_beat_bound_kwargs_and_channel() -> None:
    @task
    def scale(x: int, factor: int = 1) -> int:
        return x * factor

    with workflow("wf") as wf:
        inst = scale(task_id="inst", factor=3)
        Task("root")
    ctx = ExecutionContext.create(wf.graph, "root")
    ctx.get_channel().set("x", 2)
    ctx.get_channel().set("factor", 100)
    inst.set_execution_context(ctx)
    assert inst() == 6
    assert inst(factor=5) == 10
    assert inst.run(x=1) == 3


def test_initial_data_through_the_context_channel() -> None:
    with workflow("wf") as wf:

        @task
        def greet(name: str) -> str:
            return f"hi {name}"

    ctx = ExecutionContext.create(wf.graph, "greet")
    ctx.get_channel().set("name", "bo")
    assert WorkflowEngine().execute(ctx) == "hi bo"


def test_writes_by_a_task_feed_later_tasks() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def writer(ctx: TaskExecutionContext) -> None:
            ctx.get_channel().set("threshold", 0.5)

        @task
        def reader(threshold: float) -> float:
            return threshold * 2

        writer >> reader
    assert wf.execute("writer") == 1.0
