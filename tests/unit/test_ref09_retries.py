"""Reference §9: RetryPolicy, per-task and per-context retries, RetryController, CycleController."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from graflow import RetryPolicy, TaskExecutionContext, task, workflow
from graflow.core import retry as retry_module
from graflow.core.context import ExecutionContext
from graflow.core.cycle import CycleController
from graflow.core.engine import WorkflowEngine
from graflow.core.retry import RetryController
from graflow.core.task import TaskWrapper
from graflow.exceptions import (
    ConfigError,
    CycleLimitExceededError,
    GraflowRuntimeError,
    ParallelGroupError,
    RetryLimitExceededError,
)


class Flaky:
    """A task body that fails its first ``failures`` calls, logging every attempt."""

    def __init__(self, name: str, failures: int, log: list[Any]) -> None:
        self.name = name
        self.failures = failures
        self.calls = 0
        self.log = log

    def __call__(self) -> str:
        attempt = self.calls
        self.calls += 1
        self.log.append(f"{self.name}#{attempt}")
        if attempt < self.failures:
            raise RuntimeError(f"{self.name} failed attempt {attempt}")
        return f"{self.name} ok"


def step(name: str, log: list[Any]) -> TaskWrapper:
    return TaskWrapper(name, lambda: log.append(name) or name)


# -- RetryPolicy ------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (
        policy.max_retries,
        policy.initial_interval,
        policy.backoff_factor,
        policy.max_interval,
        policy.jitter,
    ) == (0, 1.0, 2.0, 60.0, False)


def test_get_delay_is_exponential_and_zero_based() -> None:
    policy = RetryPolicy(max_retries=5, initial_interval=0.5, backoff_factor=3.0)
    assert [policy.get_delay(n) for n in range(4)] == [0.5, 1.5, 4.5, 13.5]


def test_get_delay_is_capped() -> None:
    policy = RetryPolicy(initial_interval=10.0, backoff_factor=10.0, max_interval=60.0)
    assert policy.get_delay(0) == 10.0
    assert policy.get_delay(1) == 60.0
    assert policy.get_delay(5) == 60.0


def test_jitter_multiplies_within_half_to_one_and_a_half() -> None:
    policy = RetryPolicy(initial_interval=2.0, backoff_factor=2.0, jitter=True)
    random.seed(1234)
    delays = [policy.get_delay(1) for _ in range(200)]
    assert all(2.0 <= d <= 6.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(("factor", "expected"), [(0.5, 2.0), (1.5, 6.0)])
def test_jitter_bounds_exactly(
    monkeypatch: pytest.MonkeyPatch, factor: float, expected: float
) -> None:
    calls: list[tuple[float, float]] = []

    def fake_uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return factor

    monkeypatch.setattr(retry_module.random, "uniform", fake_uniform)
    policy = RetryPolicy(initial_interval=4.0, jitter=True)
    assert policy.get_delay(0) == expected
    assert calls == [(0.5, 1.5)]


def test_jitter_is_applied_before_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module.random, "uniform", lambda low, high: 1.5)
    policy = RetryPolicy(initial_interval=50.0, max_interval=60.0, jitter=True)
    assert policy.get_delay(0) == 60.0


def test_negative_max_retries_is_rejected() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_retries=-1)


# -- retries in a run -------------------------------------------------------------------------


def test_max_retries_retries_until_success() -> None:
    log: list[Any] = []
    flaky = Flaky("t", 2, log)
    with workflow("wf") as wf:
        TaskWrapper("t", flaky, max_retries=2)
    result, ctx = wf.execute(ret_context=True)
    assert result == "t ok"
    assert log == ["t#0", "t#1", "t#2"]
    assert ctx.retry_controller.get_retry_count("t") == 2
    assert ctx.completed_tasks == ["t"]
    assert ctx.steps == 1


def test_retry_count_is_visible_in_the_task_context() -> None:
    seen: list[tuple[int, int, int]] = []
    with workflow("wf") as wf:

        @task(inject_context=True, max_retries=3)
        def job(ctx: TaskExecutionContext) -> str:
            seen.append((ctx.retry_count, ctx.max_retries, ctx.cycle_count))
            if ctx.retry_count < 2:
                raise RuntimeError("not yet")
            return "done"

    assert wf.execute() == "done"
    # Retries do not bump the cycle count.
    assert seen == [(0, 3, 1), (1, 3, 1), (2, 3, 1)]


def test_exhausted_retries_raise_retry_limit_exceeded() -> None:
    log: list[Any] = []
    flaky = Flaky("x", 10, log)
    with workflow("wf") as wf:
        TaskWrapper("x", flaky, max_retries=1)
    with pytest.raises(RetryLimitExceededError) as info:
        wf.execute()
    err = info.value
    assert (err.task_id, err.retry_count, err.max_retries) == ("x", 2, 1)
    assert err.message == "RetryLimitExceededError(task_id=x, retry_count=2, max_retries=1)"
    assert isinstance(err.cause, RuntimeError)
    assert err.last_error is err.cause
    assert str(err.cause) == "x failed attempt 1"
    assert log == ["x#0", "x#1"]


def test_retry_policy_budget_and_delay_are_used() -> None:
    log: list[Any] = []
    flaky = Flaky("p", 1, log)
    policy = RetryPolicy(max_retries=1, initial_interval=0.001)
    with workflow("wf") as wf:
        TaskWrapper("p", flaky, retry_policy=policy)
    result, ctx = wf.execute(ret_context=True)
    assert result == "p ok"
    assert ctx.retry_controller.get_policy_for_node("p") is policy


def test_without_retries_the_error_is_wrapped() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        TaskWrapper("once", Flaky("once", 1, log))
    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute()
    assert type(info.value) is GraflowRuntimeError
    assert str(info.value).startswith("An error occurred: once failed attempt 0")


def test_context_default_max_retries() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        TaskWrapper("d", Flaky("d", 2, log))
    ctx = ExecutionContext.create(wf.graph, "d", default_max_retries=2)
    assert WorkflowEngine().execute(ctx) == "d ok"
    assert log == ["d#0", "d#1", "d#2"]


def test_task_setting_beats_context_default() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        TaskWrapper("n", Flaky("n", 1, log), max_retries=0)
    ctx = ExecutionContext.create(wf.graph, "n", default_max_retries=5)
    with pytest.raises(GraflowRuntimeError):
        WorkflowEngine().execute(ctx)
    assert log == ["n#0"]


def test_retry_goes_to_the_tail_of_the_queue() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        a = step("a", log)
        b = TaskWrapper("b", Flaky("b", 1, log), max_retries=1)
        a >> b
        a >> step("c", log)
    wf.execute("a")
    assert log == ["a", "b#0", "c", "b#1"]


def test_backoff_does_not_block_other_ready_tasks() -> None:
    """Deviation (6): while b waits out a long backoff, the rest of the run goes on.

    The last task of the other chain terminates the run, so the test never waits for
    the backoff: upstream would sleep it out before running anything else.
    """
    log: list[Any] = []
    with workflow("wf") as wf:
        a = step("a", log)
        slow = TaskWrapper(
            "b", Flaky("b", 1, log), retry_policy=RetryPolicy(max_retries=1, initial_interval=60)
        )

        @task(inject_context=True)
        def c3(ctx: TaskExecutionContext) -> str:
            log.append("c3")
            ctx.terminate_workflow("finished without b")
            return "c3"

        a >> slow
        a >> step("c1", log) >> step("c2", log) >> c3
    result, ctx = wf.execute("a", ret_context=True)
    assert result == "c3"
    assert log == ["a", "b#0", "c1", "c2", "c3"]
    assert ctx.retry_controller.get_retry_count("b") == 1


def test_backoff_retry_runs_after_other_ready_tasks() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        a = step("a", log)
        b = TaskWrapper(
            "b", Flaky("b", 1, log), retry_policy=RetryPolicy(max_retries=1, initial_interval=0.01)
        )
        a >> b >> step("after_b", log)
        a >> step("c", log)
    wf.execute("a")
    assert log.index("b#0") < log.index("c")
    assert log.index("b#0") < log.index("b#1") < log.index("after_b")
    assert sorted(log) == ["a", "after_b", "b#0", "b#1", "c"]


def test_retries_inside_a_parallel_branch() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        group = TaskWrapper("m", Flaky("m", 1, log), max_retries=1) | step("other", log)
        group >> step("after", log)
    result, ctx = wf.execute(group.task_id, ret_context=True)
    assert result == "after"
    assert ctx.get_result("m") == "m ok"


def test_exhausted_member_fails_the_group() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        group = TaskWrapper("m", Flaky("m", 5, log), max_retries=1) | step("other", log)
    with pytest.raises(ParallelGroupError) as info:
        wf.execute(group.task_id)
    (failed_id, message), *_ = info.value.failed_tasks
    assert failed_id == "m"
    assert (message or "").startswith("RetryLimitExceededError(task_id=m, retry_count=2")


def test_group_node_retries_with_the_context_default() -> None:
    log: list[Any] = []
    with workflow("wf") as wf:
        group = TaskWrapper("m", Flaky("m", 100, log), max_retries=0) | step("other", log)
    ctx = ExecutionContext.create(wf.graph, group.task_id, default_max_retries=1)
    with pytest.raises(RetryLimitExceededError) as info:
        WorkflowEngine().execute(ctx)
    assert info.value.task_id == group.task_id
    assert isinstance(info.value.cause, ParallelGroupError)
    assert log.count("other") == 2  # the whole group ran twice


def test_iteration_nodes_inherit_retry_settings() -> None:
    attempts: list[tuple[int, int]] = []
    with workflow("wf") as wf:

        @task(inject_context=True, max_retries=1)
        def loop(ctx: TaskExecutionContext, data: Any = None) -> None:
            attempts.append((ctx.cycle_count, ctx.retry_count))
            if ctx.cycle_count == 2 and ctx.retry_count == 0:
                raise RuntimeError("flaky iteration")
            if ctx.cycle_count < 3:
                ctx.next_iteration()

    wf.execute()
    assert attempts == [(1, 0), (2, 0), (2, 1), (3, 0)]


def test_retried_task_stops_counting_cycles() -> None:
    """Quirk §7.4: retry counts never reset, so later visits keep the same cycle count."""
    seen: list[int] = []
    with workflow("wf") as wf:

        @task(inject_context=True, max_retries=1)
        def agent(ctx: TaskExecutionContext) -> None:
            seen.append(ctx.cycle_count)
            if len(seen) == 1:
                raise RuntimeError("first visit fails")
            if len(seen) == 4:
                ctx.terminate_workflow("stop")

        agent >> TaskWrapper("tool", lambda: None) >> agent
    wf.execute("agent")
    assert seen == [1, 1, 1, 1]


# -- controllers ------------------------------------------------------------------------------


def test_retry_controller_api() -> None:
    rc = RetryController()
    assert rc.default_max_retries == 0
    assert rc.get_max_retries_for_node("a") == 0
    assert not rc.accept_retry("a")
    rc.set_node_max_retries("a", 2)
    assert rc.accept_retry("a")
    first = RuntimeError("e1")
    assert rc.increment("a", first) == 1
    assert rc.get_retry_count("a") == 1
    assert rc.get_last_error("a") is first
    assert rc.get_last_error_text("a") == "e1"
    assert rc.get_delay("a") == 0.0
    rc.check_retry_limit("a")  # 1 of 2 used: no error
    assert rc.increment("a") == 2
    assert not rc.accept_retry("a")
    with pytest.raises(RetryLimitExceededError) as info:
        rc.check_retry_limit("a")
    assert (info.value.retry_count, info.value.max_retries) == (2, 2)
    assert info.value.last_error is first
    assert pickle.loads(pickle.dumps(rc)).get_last_error("a") == "e1"
    policy = RetryPolicy(max_retries=3, initial_interval=0.5)
    rc.set_node_policy("b", policy)
    assert rc.get_policy_for_node("b") is policy
    assert rc.get_max_retries_for_node("b") == 3
    rc.increment("b")
    assert rc.get_delay("b") == 0.5
    rc.increment("b")
    assert rc.get_delay("b") == 1.0
    assert RetryController(default_max_retries=4).get_max_retries_for_node("z") == 4


def test_cycle_controller_api() -> None:
    cc = CycleController()
    assert cc.default_max_cycles == 100
    assert cc.cycle_counts == {}
    assert cc.increment("loop") == 1
    assert cc.increment("loop_cycle_1_0123abcd") == 2
    assert cc.get_cycle_count("loop") == 2
    assert cc.cycle_counts == {"loop": 2}
    cc.set_node_max_cycles("loop", 3)
    assert cc.get_max_cycles_for_node("loop") == 3
    assert cc.accept_next_cycle("loop")
    cc.increment("loop")
    assert not cc.accept_next_cycle("loop")
    with pytest.raises(CycleLimitExceededError) as info:
        cc.check_cycle_limit("loop")
    assert (info.value.task_id, info.value.cycle_count, info.value.max_cycles) == ("loop", 3, 3)
    cc.set_node_max_cycles("loop", 4)
    cc.check_cycle_limit("loop")  # 3 of 4 used: no error
    assert CycleController(10).get_max_cycles_for_node("other") == 10
