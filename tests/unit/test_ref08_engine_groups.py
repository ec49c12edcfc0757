"""Reference §8: the engine, task handlers, parallel groups and their policies."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from graflow import TaskExecutionContext, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.handler import TaskHandler, TaskResult
from graflow.core.handlers.direct import DirectTaskHandler
from graflow.core.handlers.group_policy import (
    POLICY_REGISTRY,
    AtLeastNGroupPolicy,
    BestEffortGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
    StrictGroupPolicy,
    canonicalize_group_policy,
    resolve_group_policy,
)
from graflow.core.task import Executable, ParallelGroup, Task, TaskWrapper
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import (
    ConfigError,
    CycleLimitExceededError,
    GraflowError,
    GraflowRuntimeError,
    ParallelGroupError,
    UnknownTaskError,
)


class Log:
    """A thread-safe event list."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)


def ok(log: Log, task_id: str) -> TaskWrapper:
    def body() -> str:
        log.add(task_id)
        return task_id

    return TaskWrapper(task_id, body)


def failing(task_id: str, message: str = "boom") -> TaskWrapper:
    def body() -> None:
        raise RuntimeError(message)

    return TaskWrapper(task_id, body)


class Recording(TaskHandler):
    """A handler that records what it ran, then runs it like the direct handler."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        self.log.add(("handled", task.task_id))
        value = task.run()
        context.set_result(task.task_id, value)
        return value


def run(wf: WorkflowContext, start: str, engine: WorkflowEngine | None = None) -> Any:
    ctx = ExecutionContext.create(wf.graph, start)
    return (engine or WorkflowEngine()).execute(ctx), ctx


# -- §8.1 the engine --------------------------------------------------------------------------


def test_new_engine_knows_only_direct() -> None:
    engine = WorkflowEngine()
    assert list(engine.handlers) == ["direct"]
    assert isinstance(engine.handlers["direct"], DirectTaskHandler)
    assert DirectTaskHandler().get_name() == "direct"


def test_register_handler_rejects_non_handlers() -> None:
    with pytest.raises(TypeError):
        WorkflowEngine().register_handler("x", object())  # type: ignore[arg-type]


def test_custom_handler_runs_tasks_that_name_it() -> None:
    log = Log()
    with workflow("wf") as wf:

        @task(handler="mine")
        def special() -> int:
            return 7

        special >> ok(log, "plain")
    engine = WorkflowEngine()
    engine.register_handler("mine", Recording(log))
    result, ctx = run(wf, "special", engine)
    assert result == "plain"
    assert log.items == [("handled", "special"), "plain"]
    assert ctx.get_result("special") == 7
    assert Recording(log).get_name() == "Recording"


def test_custom_handler_is_used_inside_parallel_groups() -> None:
    """Deviation (4): handlers registered on the engine also run group members."""
    log = Log()
    with workflow("wf") as wf:

        @task(handler="mine")
        def member() -> str:
            return "m"

        member | ok(log, "other")
    engine = WorkflowEngine()
    engine.register_handler("mine", Recording(log))
    _, ctx = run(wf, "ParallelGroup_1", engine)
    assert ("handled", "member") in log.items
    assert ctx.get_result("member") == "m"


def test_unknown_handler_error_text() -> None:
    with workflow("wf") as wf:

        @task(handler="x")
        def job() -> None:
            return None

    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute()
    err = info.value
    assert err.message == "An error occurred: Unknown handler type: x. Supported: direct"
    assert isinstance(err.cause, ValueError)
    assert str(err.cause) == "Unknown handler type: x. Supported: direct"


def test_start_task_id_runs_first() -> None:
    log = Log()
    with workflow("wf") as wf:
        ok(log, "a") >> ok(log, "b")
        ok(log, "z")
    ctx = ExecutionContext.create(wf.graph, "a")
    assert WorkflowEngine().execute(ctx, start_task_id="z") == "b"
    assert log.items == ["z", "a", "b"]


def test_result_is_the_last_executed_node_and_none_for_a_group() -> None:
    log = Log()
    with workflow("wf") as wf:
        ok(log, "a") >> (ok(log, "b") | ok(log, "c"))
    result, ctx = run(wf, "a")
    assert result is None
    assert ctx.completed_tasks[-1] == "ParallelGroup_1"


def test_unknown_node_in_the_queue() -> None:
    with workflow("wf") as wf:
        Task("a")
    ctx = ExecutionContext.create(wf.graph, "a")
    ctx.add_to_queue(Task("ghost", register_to_context=False))
    with pytest.raises(GraflowRuntimeError) as info:
        WorkflowEngine().execute(ctx)
    assert isinstance(info.value, UnknownTaskError)
    assert str(info.value).startswith("Node 'ghost' not found in graph. Available nodes: a")


# -- error wrapping ---------------------------------------------------------------------------


def test_task_error_is_wrapped_with_its_cause() -> None:
    original = ValueError("bad")

    def fail() -> None:
        raise original

    with workflow("wf") as wf:
        TaskWrapper("t", fail)
    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute()
    err = info.value
    assert type(err) is GraflowRuntimeError
    assert str(err) == "An error occurred: bad (caused by bad)"
    assert err.cause is original


def test_runtime_errors_raised_by_tasks_pass_through_unchanged() -> None:
    original = CycleLimitExceededError("t", 1, 1)

    def fail() -> None:
        raise original

    with workflow("wf") as wf:
        TaskWrapper("t", fail)
    with pytest.raises(CycleLimitExceededError) as info:
        wf.execute()
    assert info.value is original


def test_other_graflow_errors_are_wrapped() -> None:
    def fail() -> None:
        raise ConfigError("bad setting")

    with workflow("wf") as wf:
        TaskWrapper("t", fail)
    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute()
    assert isinstance(info.value.cause, ConfigError)
    assert info.value.message == "An error occurred: bad setting"


# -- §8.2 handlers ----------------------------------------------------------------------------


def test_task_result_defaults() -> None:
    result = TaskResult(task_id="t", success=True)
    assert result.error is None
    assert result.error_message is None
    assert result.duration == 0.0
    assert result.timestamp == 0.0


def test_direct_handler_stores_value_or_exception() -> None:
    graph = TaskGraph()
    graph.add_node(Task("root", register_to_context=False))
    ctx = ExecutionContext.create(graph)
    handler = DirectTaskHandler()
    good = TaskWrapper("good", lambda: 5, register_to_context=False)
    good.set_execution_context(ctx)
    assert handler.execute_task(good, ctx) == 5
    assert ctx.get_result("good") == 5
    error = KeyError("k")

    def raise_it() -> None:
        raise error

    bad = TaskWrapper("bad", raise_it, register_to_context=False)
    bad.set_execution_context(ctx)
    with pytest.raises(KeyError):
        handler.execute_task(bad, ctx)
    assert ctx.get_result("bad") is error


# -- §8.3 parallel groups ---------------------------------------------------------------------


def test_threading_branch_runs_member_and_its_chain_off_the_driver_thread() -> None:
    threads: dict[str, int] = {}
    with workflow("wf") as wf:

        def mark(name: str) -> TaskWrapper:
            return TaskWrapper(name, lambda: threads.__setitem__(name, threading.get_ident()))

        (mark("a") >> mark("b")) | mark("c")
    run(wf, "ParallelGroup_1")
    assert set(threads) == {"a", "b", "c"}
    assert threading.get_ident() not in threads.values()


def test_direct_backend_runs_members_in_the_driver_thread() -> None:
    threads: dict[str, int] = {}
    with workflow("wf") as wf:

        def mark(name: str) -> TaskWrapper:
            return TaskWrapper(name, lambda: threads.__setitem__(name, threading.get_ident()))

        group = mark("a") | mark("b")
        group.with_execution(backend="direct")
    run(wf, "ParallelGroup_1")
    assert threads == {"a": threading.get_ident(), "b": threading.get_ident()}


def test_branches_share_one_channel_so_counters_add_up() -> None:
    """Deviation (1): every branch writes to the run's channel; no write is lost."""
    with workflow("wf") as wf:

        def adder(name: str) -> TaskWrapper:
            @task(name, inject_context=True)
            def body(ctx: TaskExecutionContext) -> None:
                channel = ctx.get_channel()
                for _ in range(100):
                    channel.atomic_add("counter", 1)

            return body

        group = ParallelGroup([adder(f"w{i}") for i in range(5)])

        @task
        def total(counter: int) -> int:
            return counter

        group >> total
    result, ctx = run(wf, group.task_id)
    assert result == 500
    assert ctx.get_channel().get("counter") == 500


def test_failed_branch_has_no_result_but_keeps_its_writes() -> None:
    """As upstream, get_result(failed member) is None; deviation (1): its writes stay."""

    @task(inject_context=True)
    def writes_then_fails(ctx: Any) -> None:
        ctx.get_channel().set("note", "written before failing")
        raise RuntimeError("boom")

    with workflow("wf") as wf:
        group = writes_then_fails | TaskWrapper("good", lambda: 1)
        group.with_execution(policy="best_effort")
    _, ctx = run(wf, group.task_id)
    assert ctx.get_result("writes_then_fails") is None
    assert ctx.get_channel().get("note") == "written before failing"
    assert ctx.get_result("good") == 1


def test_strict_policy_error_attributes() -> None:
    log = Log()
    with workflow("wf") as wf:
        group = failing("bad") | ok(log, "good")
        group >> ok(log, "after")
    with pytest.raises(ParallelGroupError) as info:
        run(wf, "ParallelGroup_1")
    err = info.value
    assert str(err) == "Parallel group ParallelGroup_1 failed: 1 task(s) failed"
    assert err.group_id == "ParallelGroup_1"
    assert err.failed_tasks == [("bad", "An error occurred: boom (caused by boom)")]
    assert err.successful_tasks == ["good"]
    assert "after" not in log.items


def test_strict_is_the_default_and_by_name() -> None:
    with workflow("wf") as wf:
        group = failing("b1") | failing("b2")
        group.with_execution(policy="strict")
    with pytest.raises(ParallelGroupError) as info:
        run(wf, group.task_id)
    assert info.value.successful_tasks == []
    assert sorted(t for t, _ in info.value.failed_tasks) == ["b1", "b2"]
    assert str(info.value).endswith("2 task(s) failed")


def test_best_effort_continues_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    with workflow("wf") as wf:
        group = failing("bad") | ok(log, "good")
        group.with_execution(policy=BestEffortGroupPolicy())
        group >> ok(log, "after")
    with caplog.at_level(logging.WARNING):
        result, _ = run(wf, group.task_id)
    assert result == "after"
    assert log.items == ["good", "after"]
    assert any("bad" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_critical_policy() -> None:
    log = Log()
    with workflow("wf") as wf:
        group = failing("optional") | ok(log, "key")
        group.with_execution(policy=CriticalGroupPolicy(["key"]))
        group >> ok(log, "after")
    assert run(wf, group.task_id)[0] == "after"

    with workflow("wf2") as wf2:
        group2 = failing("key") | ok(log, "optional")
        group2.with_execution(policy=CriticalGroupPolicy(critical_task_ids=["key"]))
    with pytest.raises(ParallelGroupError) as info:
        run(wf2, group2.task_id)
    err = info.value
    assert str(err) == "Critical tasks failed: ['key']"
    assert err.group_id == group2.task_id
    assert [t for t, _ in err.failed_tasks] == ["key"]
    assert err.successful_tasks == ["optional"]
    assert CriticalGroupPolicy(["key"]).get_name() == "critical"


def test_critical_policy_validation() -> None:
    with pytest.raises(ValueError):
        CriticalGroupPolicy([])
    with workflow("wf") as wf:
        group = TaskWrapper("a", lambda: 1) | TaskWrapper("b", lambda: 2)
        group.with_execution(policy=CriticalGroupPolicy(["not_a_member"]))
    with pytest.raises(GraflowRuntimeError) as info:
        run(wf, group.task_id)
    assert isinstance(info.value.cause, ValueError)


def test_at_least_n_policy() -> None:
    log = Log()
    with workflow("wf") as wf:
        group = failing("f1") | ok(log, "s1") | ok(log, "s2")
        group.with_execution(policy=AtLeastNGroupPolicy(min_success=2))
        group >> ok(log, "after")
    assert run(wf, group.task_id)[0] == "after"

    with workflow("wf2") as wf2:
        group2 = failing("f1") | failing("f2") | ok(log, "s1")
        group2.with_execution(policy=AtLeastNGroupPolicy(2))
    with pytest.raises(ParallelGroupError) as info:
        run(wf2, group2.task_id)
    err = info.value
    assert str(err) == f"Only 1/2 tasks succeeded in group {group2.task_id}"
    assert err.successful_tasks == ["s1"]
    assert sorted(t for t, _ in err.failed_tasks) == ["f1", "f2"]
    assert AtLeastNGroupPolicy(3).get_name() == "at_least_3"


def test_at_least_n_validation() -> None:
    with pytest.raises(ValueError):
        AtLeastNGroupPolicy(-1)
    with workflow("wf") as wf:
        group = TaskWrapper("a", lambda: 1) | TaskWrapper("b", lambda: 2)
        group.with_execution(policy=AtLeastNGroupPolicy(3))
    with pytest.raises(GraflowRuntimeError) as info:
        run(wf, group.task_id)
    assert isinstance(info.value.cause, ValueError)


class MajorityPolicy(GroupExecutionPolicy):
    """Fails unless more than half of the members succeeded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str], dict[str, TaskResult]]] = []

    def on_group_finished(
        self, group_id: str, tasks: list[str], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        self.seen.append((group_id, list(tasks), dict(results)))
        good, bad = self._partition_group_results(results)
        if len(good) * 2 <= len(tasks):
            raise ParallelGroupError(
                "no majority", group_id=group_id, failed_tasks=bad, successful_tasks=good
            )


def test_custom_policy_subclass() -> None:
    log = Log()
    policy = MajorityPolicy()
    assert policy.get_name() == "MajorityPolicy"
    with workflow("wf") as wf:
        group = ok(log, "a") | ok(log, "b") | failing("c")
        group.with_execution(policy=policy)
        group >> ok(log, "after")
    assert run(wf, group.task_id)[0] == "after"
    group_id, tasks, results = policy.seen[0]
    assert group_id == group.task_id
    assert [t.task_id for t in tasks] == ["a", "b", "c"]
    assert results["a"].success and results["b"].success
    assert not results["c"].success
    assert isinstance(results["c"].error, GraflowError)
    assert results["c"].error_message == "An error occurred: boom (caused by boom)"

    with workflow("wf2") as wf2:
        group2 = ok(log, "a") | failing("b")
        group2.with_execution(policy=MajorityPolicy())
    with pytest.raises(ParallelGroupError, match="no majority") as info:
        run(wf2, group2.task_id)
    assert info.value.successful_tasks == ["a"]


def test_policy_helpers() -> None:
    policy = StrictGroupPolicy()
    results = {
        "a": TaskResult("a", True),
        "b": TaskResult("b", False, error_message="x"),
    }
    assert policy._partition_group_results(results) == (["a"], [("b", "x")])
    policy._validate_group_results("g", ["a", "b"], results)
    with pytest.raises(ParallelGroupError, match="result mismatch") as info:
        policy._validate_group_results("g", ["a", "c"], results)
    assert info.value.group_id == "g"


def test_policy_registry_and_resolution() -> None:
    assert set(POLICY_REGISTRY) == {"strict", "best_effort", "critical", "at_least_n"}
    assert isinstance(resolve_group_policy("STRICT"), StrictGroupPolicy)
    assert isinstance(resolve_group_policy("best_effort"), BestEffortGroupPolicy)
    critical = resolve_group_policy({"type": "critical", "critical_task_ids": ["a"]})
    assert isinstance(critical, CriticalGroupPolicy)
    assert critical.critical_task_ids == ["a"]
    at_least = resolve_group_policy({"type": "at_least_n", "min_success": 2})
    assert isinstance(at_least, AtLeastNGroupPolicy)
    assert at_least.min_success == 2
    custom = MajorityPolicy()
    assert resolve_group_policy(canonicalize_group_policy(custom)) is custom
    assert StrictGroupPolicy().get_name() == "strict"
    assert BestEffortGroupPolicy().get_name() == "best_effort"
    with pytest.raises(ConfigError):
        resolve_group_policy("critical")


def test_nested_group_members_fail_the_outer_group() -> None:
    with workflow("wf") as wf:
        inner = failing("bad") | TaskWrapper("fine", lambda: 1)
        inner >> Task("inner_next")
        outer = inner | (TaskWrapper("x", lambda: 2) | TaskWrapper("y", lambda: 3))
    with pytest.raises(ParallelGroupError) as info:
        run(wf, outer.task_id)
    assert info.value.group_id == outer.task_id
    assert [t for t, _ in info.value.failed_tasks] == [inner.task_id]
