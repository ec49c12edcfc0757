"""The contract suite: the same workflows, the same results, on every backend.

Each test runs through ``run_on(wf)``, parametrised over the in-process engine, the process
pool started with fork and with spawn, and a Redis node (a real redis-server and a real
``graflow supervisor`` process) on one server and on a 3-master Redis Cluster. Tasks are
built inside the tests (closures travel by value with cloudpickle), so nothing here depends
on how a backend imports code.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import graflow
from graflow import RetryPolicy, parallel, task, workflow
from graflow.core.policy import AtLeastNGroupPolicy, CriticalGroupPolicy, GroupExecutionPolicy
from graflow.core.task import TaskWrapper
from graflow.exceptions import (
    CycleLimitExceededError,
    GraflowRuntimeError,
    GraflowWorkflowCanceledError,
    MaxStepsExceeded,
    ParallelGroupError,
    RetryLimitExceededError,
)
from tests.conftest import Runner, runner_for


@pytest.fixture(params=["inprocess", "fork", "spawn", "redis", "cluster"])
def run_on(request: pytest.FixtureRequest) -> Runner:
    return runner_for(request, request.param)


def test_pipeline_results_flow_by_parameter_name(run_on: Runner) -> None:
    with workflow("etl") as wf:

        @task
        def extract() -> list[int]:
            return [1, 2, 3]

        @task
        def transform(extract: list[int]) -> list[int]:
            return [x * 10 for x in extract]

        @task
        def load(transform: list[int], suffix: str = "!") -> str:
            return f"{sum(transform)}{suffix}"

        extract >> transform >> load

    result = run_on(wf, initial_channel={"suffix": "?"})
    assert result.value == "60?"
    assert result.results == {"extract": [1, 2, 3], "transform": [10, 20, 30], "load": "60?"}
    assert result.completed == ["extract", "transform", "load"]
    assert result.channel["suffix"] == "?"
    assert result.stats.tasks_run == 3


def test_group_is_the_join_and_plain_diamond_runs_twice(run_on: Runner) -> None:
    with workflow("fan") as wf:

        @task
        def src() -> int:
            return 2

        @task
        def left(src: int) -> int:
            return src + 1

        @task
        def right(src: int) -> int:
            return src * 10

        @task(inject_context=True)
        def join(ctx: Any, left: int, right: int) -> int:
            ctx.get_channel().append("joins", left + right)
            return left + right

        src >> (left | right) >> join

    result = run_on(wf, start="src")
    assert result.value == 23
    assert result.channel["joins"] == [23]

    with workflow("diamond") as wf2:

        @task(inject_context=True)
        def a(ctx: Any) -> None:
            ctx.get_channel().append("order", "a")

        def make(name: str) -> TaskWrapper:
            def body(ctx: Any) -> None:
                ctx.get_channel().append("order", name)

            return TaskWrapper(name, body, inject_context=True)

        b, c, d = make("b"), make("c"), make("d")
        a >> b >> d
        a >> c >> d

    result = run_on(wf2, start="a")
    assert result.channel["order"] == ["a", "b", "c", "d", "d"]


def test_parallel_writes_are_never_lost(run_on: Runner) -> None:
    with workflow("count") as wf:

        @task(inject_context=True)
        def start(ctx: Any) -> None:
            ctx.get_channel().set("n", 0)

        def bump(ctx: Any) -> None:
            channel = ctx.get_channel()
            for _ in range(100):
                channel.atomic_add("n", 1)

        members = [TaskWrapper(f"bump{i}", bump, inject_context=True) for i in range(5)]

        @task(inject_context=True)
        def total(ctx: Any) -> int:
            return int(ctx.get_channel().get("n"))

        start >> parallel(*members) >> total

    assert run_on(wf, start="start").value == 500


def test_goto_loop_and_terminate(run_on: Runner) -> None:
    with workflow("agent") as wf:

        @task(inject_context=True)
        def agent(ctx: Any) -> str:
            n = ctx.get_channel().atomic_add("turns", 1)
            if n >= 3:
                ctx.terminate_workflow("done")
                return f"answer after {n}"
            ctx.next_task(tool, goto=True)
            return "thinking"

        @task(inject_context=True)
        def tool(ctx: Any) -> str:
            ctx.get_channel().append("calls", ctx.cycle_count)
            return "tool output"

        @task
        def never() -> str:
            return "should not run"

        agent >> never
        tool >> agent

    result = run_on(wf, start="agent")
    assert result.value == "answer after 3"
    assert result.channel["calls"] == [1, 2]
    assert "never" not in result.results


def test_next_iteration_passes_data_and_respects_max_cycles(run_on: Runner) -> None:
    with workflow("iter") as wf:

        @task(inject_context=True, max_cycles=4)
        def refine(ctx: Any, data: int | None = None) -> int:
            value = (data or 0) + 1
            ctx.get_channel().append("seen", (ctx.cycle_count, value))
            if value < 3:
                ctx.next_iteration(value)
            return value

    result = run_on(wf)
    assert result.value == 3
    assert result.channel["seen"] == [(1, 1), (2, 2), (3, 3)]

    with workflow("over") as wf2:

        @task(inject_context=True, max_cycles=2)
        def forever(ctx: Any, data: Any = None) -> None:
            ctx.next_iteration(data)

    with pytest.raises(CycleLimitExceededError) as info:
        run_on(wf2)
    assert info.value.max_cycles == 2


def test_cancel_raises_with_task_id(run_on: Runner) -> None:
    with workflow("cancel") as wf:

        @task(inject_context=True)
        def guard(ctx: Any) -> None:
            ctx.cancel_workflow("bad input")

        @task
        def after() -> None:
            return None

        guard >> after

    with pytest.raises(GraflowWorkflowCanceledError) as info:
        run_on(wf)
    assert info.value.task_id == "guard"
    assert "bad input" in str(info.value)


def test_task_error_is_wrapped_with_cause(run_on: Runner) -> None:
    with workflow("err") as wf:

        @task
        def boom() -> None:
            raise ValueError("bad")

    with pytest.raises(GraflowRuntimeError) as info:
        run_on(wf)
    assert str(info.value) == "An error occurred: bad (caused by bad)"
    assert isinstance(info.value.cause, ValueError)


def test_retries_then_success_and_limit(run_on: Runner) -> None:
    with workflow("flaky") as wf:

        @task(inject_context=True, retry_policy=RetryPolicy(max_retries=3, initial_interval=0.01))
        def flaky(ctx: Any) -> int:
            attempt = ctx.get_channel().atomic_add("attempts", 1)
            if attempt < 3:
                raise ConnectionError(f"attempt {attempt}")
            return attempt

    result = run_on(wf)
    assert result.value == 3
    assert result.stats.retries == 2

    with workflow("always") as wf2:

        @task(max_retries=1)
        def always() -> None:
            raise RuntimeError("nope")

    with pytest.raises(RetryLimitExceededError) as info:
        run_on(wf2)
    assert (info.value.retry_count, info.value.max_retries) == (2, 1)
    assert isinstance(info.value.cause, RuntimeError)


def _group_wf(policy: Any) -> Any:
    with workflow("groups") as wf:

        @task
        def ok1() -> int:
            return 1

        @task
        def ok2() -> int:
            return 2

        @task
        def bad() -> None:
            raise ValueError("member failed")

        @task
        def after() -> str:
            return "after ran"

        (ok1 | ok2 | bad).set_group_name("g").with_execution(policy=policy) >> after
    return wf


def test_group_policies(run_on: Runner) -> None:
    with pytest.raises(ParallelGroupError) as info:
        run_on(_group_wf("strict"), start="g")
    err = info.value
    assert err.group_id == "g"
    assert sorted(err.successful_tasks) == ["ok1", "ok2"]
    assert [t for t, _ in err.failed_tasks] == ["bad"]
    assert "member failed" in (err.failed_tasks[0][1] or "")

    assert run_on(_group_wf("best_effort"), start="g").value == "after ran"
    assert run_on(_group_wf(AtLeastNGroupPolicy(2)), start="g").value == "after ran"
    with pytest.raises(ParallelGroupError):
        run_on(_group_wf(AtLeastNGroupPolicy(3)), start="g")
    assert run_on(_group_wf(CriticalGroupPolicy(["ok1"])), start="g").value == "after ran"
    with pytest.raises(ParallelGroupError):
        run_on(_group_wf(CriticalGroupPolicy(["bad"])), start="g")


class _NoMoreThanOneFailure(GroupExecutionPolicy):
    def on_group_finished(self, group_id: str, tasks: Any, results: Any, context: Any) -> None:
        ok, failed = self._partition_group_results(results)
        if len(failed) > 1:
            raise ParallelGroupError("too many", group_id, failed, ok)


def test_custom_group_policy(run_on: Runner) -> None:
    assert run_on(_group_wf(_NoMoreThanOneFailure()), start="g").value == "after ran"


def test_dynamic_tasks_created_at_run_time(run_on: Runner) -> None:
    def build() -> Any:
        @task(inject_context=True)
        def planner(ctx: Any) -> str:
            for i in range(3):
                ctx.next_task(TaskWrapper(f"step{i}", lambda i=i: i * i))
            return "planned"

        return planner

    graph = graflow.core.graph.TaskGraph()
    graph.add_node(build())
    result = run_on(graph)
    assert {k: result.results[k] for k in ("step0", "step1", "step2")} == {
        "step0": 0,
        "step1": 1,
        "step2": 4,
    }


def test_max_steps_stops_a_static_loop(run_on: Runner) -> None:
    with workflow("loop") as wf:

        @task(inject_context=True)
        def ping(ctx: Any) -> None:
            ctx.get_channel().atomic_add("pings", 1)

        @task
        def pong() -> None:
            return None

        ping >> pong >> ping

    with pytest.raises(MaxStepsExceeded) as info:
        run_on(wf, start="ping", max_steps=10)
    assert info.value.max_steps == 10
    assert info.value.result.max_steps_reached
    assert info.value.result.channel["pings"] == 5


def test_workers_are_separate_processes(run_on: Runner) -> None:
    with workflow("pids") as wf:

        @task
        def where() -> int:
            return os.getpid()

    pid = run_on(wf).value
    assert isinstance(pid, int)
