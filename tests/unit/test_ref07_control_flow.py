"""Reference §7: scheduling order, next_task / goto, iterations, cycles, terminate / cancel."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import pytest

from graflow import TaskExecutionContext, parallel, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.task import SequentialTask, TaskWrapper
from graflow.exceptions import (
    CycleLimitExceededError,
    GraflowWorkflowCanceledError,
    ParallelGroupError,
)


class Log:
    """A thread-safe list of events."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def step(self, task_id: str, value: Any = None) -> TaskWrapper:
        """A task that logs its id and returns ``value`` (default: its id)."""

        def body() -> Any:
            self.add(task_id)
            return task_id if value is None else value

        return TaskWrapper(task_id, body)


@pytest.fixture
def log() -> Log:
    return Log()


# -- §7.2 successor scheduling ----------------------------------------------------------------


def test_fifo_order(log: Log) -> None:
    with workflow("wf") as wf:
        a, b, c, d, e = (log.step(x) for x in "abcde")
        a >> b >> d
        a >> c >> e
    wf.execute("a")
    assert log.items == ["a", "b", "c", "d", "e"]


def test_plain_diamond_runs_the_join_twice(log: Log) -> None:
    with workflow("wf") as wf:
        a, b, c, d = (log.step(x) for x in "abcd")
        a >> b >> d
        a >> c >> d
    result, ctx = wf.execute("a", ret_context=True)
    assert log.items == ["a", "b", "c", "d", "d"]
    assert result == "d"
    assert ctx.completed_tasks == ["a", "b", "c", "d"]
    assert ctx.steps == 5
    assert ctx.cycle_controller.get_cycle_count("d") == 2


def test_group_node_is_the_join(log: Log) -> None:
    with workflow("wf") as wf:
        a, b, c, d = (log.step(x) for x in "abcd")
        a >> (b | c) >> d
    result, ctx = wf.execute("a", ret_context=True)
    assert log.items[0] == "a"
    assert sorted(log.items[1:3]) == ["b", "c"]
    assert log.items[3:] == ["d"]
    assert result == "d"
    assert ctx.steps == 5  # a, b, c, the group node, d


# -- §7.1 next_task ---------------------------------------------------------------------------


def test_next_task_new_without_goto_runs_dynamic_then_successors(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> str:
            log.add("a")
            returned = ctx.next_task(
                TaskWrapper("dyn", lambda: log.add("dyn"), register_to_context=False)
            )
            log.add(("returned", returned))
            return "a"

        a >> log.step("b")
    wf.execute("a")
    assert log.items == ["a", ("returned", "dyn"), "dyn", "b"]


def test_next_task_goto_skips_successors(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            ctx.next_task(
                TaskWrapper("dyn", lambda: log.add("dyn"), register_to_context=False), goto=True
            )

        a >> log.step("b")
    _, ctx = wf.execute("a", ret_context=True)
    assert log.items == ["a", "dyn"]
    assert "dyn" in ctx.graph.nodes
    assert ctx.goto_called is False  # reset once dyn (which did not jump) finished


def test_next_task_to_an_existing_node_is_an_auto_goto(log: Log) -> None:
    with workflow("wf") as wf:
        fallback = log.step("fallback")

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            ctx.next_task(fallback)

        a >> log.step("b")
    wf.execute("a")
    assert log.items == ["a", "fallback"]


def test_goto_to_an_existing_node_with_goto_true(log: Log) -> None:
    with workflow("wf") as wf:
        c = log.step("c")

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            ctx.next_task(c, goto=True)

        a >> log.step("b") >> c
    wf.execute("a")
    assert log.items == ["a", "c"]


def test_with_block_quirk_dynamic_task_built_inside_the_block(log: Log) -> None:
    """Quirk §7.1: a task built while the with-block is current is already a node: goto."""

    def build() -> None:
        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")

            @task
            def dyn() -> None:
                log.add("dyn")

            ctx.next_task(dyn)

        a >> log.step("b")

    with workflow("inside") as inside:
        build()
        inside.execute("a")
    assert log.items == ["a", "dyn"]

    log.items.clear()
    with workflow("outside") as outside:
        build()
    outside.execute("a")
    assert log.items == ["a", "dyn", "b"]


def test_with_block_quirk_does_not_reach_thread_branches(log: Log) -> None:
    """Inside a parallel branch no workflow is current, so the dynamic task is new."""
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")

            @task
            def dyn() -> None:
                log.add("dyn")

            ctx.next_task(dyn)

        (a >> log.step("a2")) | log.step("other")
        wf.execute("ParallelGroup_1")
    branch = [x for x in log.items if x != "other"]
    assert branch == ["a", "dyn", "a2"]


def test_next_task_with_a_chain_schedules_its_leftmost(log: Log) -> None:
    with workflow("wf") as wf:
        x, y = log.step("x"), log.step("y")
        x >> y

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add(("returned", ctx.next_task(SequentialTask([x, y]))))

    wf.execute("a")
    assert log.items == [("returned", "x"), "x", "y"]


def test_chain_built_at_run_time_brings_its_edges(log: Log) -> None:
    """Deviation (7): a chain built inside a task runs whole when passed to next_task."""
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            ctx.next_task(log.step("x") >> log.step("y") >> log.step("z"))

        a >> log.step("b")
    wf.execute("a")
    assert log.items == ["a", "x", "b", "y", "z"]


def test_next_task_with_a_group_schedules_the_group_node(log: Log) -> None:
    returned: list[str] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            group = parallel(log.step("x"), log.step("y")).set_group_name("fan")
            returned.append(ctx.next_task(group))

        a >> log.step("b")
    _, ctx = wf.execute("a", ret_context=True)
    assert returned == ["fan"]
    assert sorted(log.items[1:3]) == ["x", "y"]
    assert log.items == ["a", *log.items[1:3], "b"]
    assert "fan" in ctx.completed_tasks


def test_run_time_group_with_colliding_default_name_gets_its_own(log: Log) -> None:
    """Deviation (3): a default-named group built in a branch does not jump to another group."""
    returned: list[str] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def a(ctx: TaskExecutionContext) -> None:
            log.add("a")
            returned.append(ctx.next_task(parallel(log.step("x"), log.step("y"))))

        (a | log.step("b")) >> log.step("after")
    wf.execute("ParallelGroup_1")
    assert len(returned) == 1
    assert returned[0] != "ParallelGroup_1"
    assert sorted(log.items) == ["a", "after", "b", "x", "y"]
    assert log.items[-1] == "after"
    assert log.items.count("a") == 1


# -- §7.3 / §7.4 iterations and cycles --------------------------------------------------------


def test_next_iteration_ids_data_and_cycle_counts(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: int | None = None) -> int:
            log.add((ctx.task_id, ctx.cycle_count, data))
            if ctx.cycle_count < 3:
                log.add(("next", ctx.next_iteration((data or 0) + 10)))
            return ctx.cycle_count

    wf.execute("loop")
    runs = [x for x in log.items if x[0] != "next"]
    nexts = [x[1] for x in log.items if x[0] == "next"]
    assert [(c, d) for _, c, d in runs] == [(1, None), (2, 10), (3, 20)]
    assert runs[0][0] == "loop"
    assert re.fullmatch(r"loop_cycle_1_[0-9a-f]{8}", runs[1][0])
    assert re.fullmatch(r"loop_cycle_2_[0-9a-f]{8}", runs[2][0])
    assert nexts == [runs[1][0], runs[2][0]]


def test_next_iteration_without_injected_context(log: Log) -> None:
    """``data`` is the first positional argument when the context is not injected."""
    holder: list[ExecutionContext] = []

    def body(data: int = 0) -> int:
        log.add(data)
        if data < 2:
            holder[0].next_iteration(data + 1)
        return data

    with workflow("wf") as wf:
        TaskWrapper("count", body)
    ctx = ExecutionContext.create(wf.graph, "count")
    holder.append(ctx)
    assert WorkflowEngine().execute(ctx) == 2
    assert log.items == [0, 1, 2]


def test_default_cycle_budget_is_ten(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def forever(ctx: TaskExecutionContext, data: Any = None) -> None:
            log.add(ctx.cycle_count)
            ctx.next_iteration()

    with pytest.raises(CycleLimitExceededError) as info:
        wf.execute()
    err = info.value
    assert (err.task_id, err.cycle_count, err.max_cycles) == ("forever", 10, 10)
    assert str(err) == "CycleLimitExceededError(task_id=forever, cycle_count=10, max_cycles=10)"
    assert log.items == list(range(1, 11))


def test_per_task_cycle_budget(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True, max_cycles=3)
        def short(ctx: TaskExecutionContext, data: Any = None) -> None:
            log.add((ctx.cycle_count, ctx.max_cycles, ctx.can_iterate()))
            ctx.next_iteration()

    with pytest.raises(CycleLimitExceededError) as info:
        wf.execute()
    assert (info.value.cycle_count, info.value.max_cycles) == (3, 3)
    assert log.items == [(1, 3, True), (2, 3, True), (3, 3, False)]


def test_context_default_max_cycles(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: Any = None) -> None:
            log.add(ctx.max_cycles)
            if ctx.can_iterate():
                ctx.next_iteration()

    ctx = ExecutionContext.create(wf.graph, "loop", default_max_cycles=2)
    WorkflowEngine().execute(ctx)
    assert log.items == [2, 2]


def test_iteration_in_a_with_block_skips_successors(log: Log) -> None:
    """Quirk §7.3: inside the block every iteration node exists already: auto-goto."""
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: Any = None) -> None:
            log.add(f"loop{ctx.cycle_count}")
            if ctx.cycle_count < 3:
                ctx.next_iteration()

        loop >> log.step("after")
        wf.execute("loop")
    assert log.items == ["loop1", "loop2", "loop3"]


def test_iteration_outside_a_with_block_interleaves_successors(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: Any = None) -> None:
            log.add(f"loop{ctx.cycle_count}")
            if ctx.cycle_count < 3:
                ctx.next_iteration()

        loop >> log.step("after")
    wf.execute("loop")
    assert log.items == ["loop1", "loop2", "after", "loop3"]


def test_static_cycle_counts_revisits_and_ends_with_terminate(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def agent(ctx: TaskExecutionContext) -> str:
            log.add(("agent", ctx.cycle_count))
            if ctx.cycle_count == 3:
                ctx.terminate_workflow("answer found")
            return f"answer{ctx.cycle_count}"

        tool = log.step("tool")
        agent >> tool >> agent
    result, ctx = wf.execute("agent", ret_context=True)
    assert log.items == [("agent", 1), "tool", ("agent", 2), "tool", ("agent", 3)]
    assert result == "answer3"
    assert ctx.ctrl_message == "answer found"


def test_goto_loop_is_not_bounded_by_max_cycles(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def spin(ctx: TaskExecutionContext) -> int:
            log.add(ctx.cycle_count)
            ctx.next_task(spin, goto=True)
            return ctx.cycle_count

    result, ctx = wf.execute(max_steps=25, ret_context=True)
    assert log.items == list(range(1, 26))
    assert result == 25
    assert ctx.max_steps_reached


def test_static_cycle_is_bounded_by_max_steps(log: Log, caplog: pytest.LogCaptureFixture) -> None:
    """Deviation (8): hitting max_steps logs a warning and sets max_steps_reached."""
    with workflow("wf") as wf:
        agent = log.step("agent")
        agent >> log.step("tool") >> agent
    with caplog.at_level(logging.WARNING):
        result, ctx = wf.execute("agent", max_steps=7, ret_context=True)
    assert len(log.items) == 7
    assert result == "agent"
    assert ctx.steps == 7
    assert ctx.max_steps_reached is True
    assert any("max_steps" in r.getMessage() for r in caplog.records)


# -- §7.5 terminate vs cancel -----------------------------------------------------------------


def test_terminate_finishes_the_task_and_stops(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def stop(ctx: TaskExecutionContext) -> str:
            log.add("stop-before")
            ctx.terminate_workflow("enough")
            log.add("stop-after")
            return "final"

        a = log.step("a")
        a >> stop >> log.step("never")
        a >> log.step("sibling") >> log.step("also-never")
    result, ctx = wf.execute("a", ret_context=True)
    assert result == "final"
    assert log.items == ["a", "stop-before", "stop-after"]
    assert ctx.completed_tasks == ["a", "stop"]
    assert ctx.get_result("stop") == "final"
    assert ctx.steps == 2
    assert ctx.terminate_called


def test_cancel_raises_with_the_task_id(log: Log) -> None:
    with workflow("wf") as wf:

        @task("t1", inject_context=True)
        def t1(ctx: TaskExecutionContext) -> str:
            ctx.cancel_workflow("nope")
            log.add("body-continues")
            return "partial"

        log.step("a") >> t1 >> log.step("never")
    ctx = ExecutionContext.create(wf.graph, "a")
    with pytest.raises(GraflowWorkflowCanceledError) as info:
        WorkflowEngine().execute(ctx)
    err = info.value
    assert err.task_id == "t1"
    assert str(err) == "Workflow canceled by task 't1': nope"
    assert log.items == ["a", "body-continues"]
    assert ctx.completed_tasks == ["a"]
    assert ctx.get_result("t1") == "partial"
    assert ctx.cancel_called


def test_cancel_wins_over_terminate() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def both(ctx: TaskExecutionContext) -> None:
            ctx.terminate_workflow("done")
            ctx.cancel_workflow("abort")

    with pytest.raises(GraflowWorkflowCanceledError, match="abort"):
        wf.execute()


def test_terminate_inside_a_branch_ends_only_that_branch(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def quitter(ctx: TaskExecutionContext) -> None:
            log.add("quitter")
            ctx.terminate_workflow("branch done")

        ((quitter >> log.step("skipped")) | log.step("other")) >> log.step("after")
    result = wf.execute("ParallelGroup_1")
    assert sorted(log.items[:2]) == ["other", "quitter"]
    assert log.items[2:] == ["after"]
    assert result == "after"


def test_cancel_inside_a_branch_fails_a_strict_group(log: Log) -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def canceller(ctx: TaskExecutionContext) -> None:
            ctx.cancel_workflow("stop it")

        (canceller | log.step("other")) >> log.step("after")
    with pytest.raises(ParallelGroupError) as info:
        wf.execute("ParallelGroup_1")
    err = info.value
    assert err.successful_tasks == ["other"]
    assert [tid for tid, _ in err.failed_tasks] == ["canceller"]
    assert "stop it" in (err.failed_tasks[0][1] or "")
    assert "after" not in log.items


# -- §7.6 max_steps ---------------------------------------------------------------------------


def test_max_steps_stops_quietly_and_keeps_the_queue(log: Log) -> None:
    with workflow("wf") as wf:
        log.step("a") >> log.step("b") >> log.step("c")
    result, ctx = wf.execute("a", max_steps=2, ret_context=True)
    assert result == "b"
    assert log.items == ["a", "b"]
    assert ctx.steps == 2
    assert ctx.queue.to_list() == ["c"]
    assert ctx.max_steps_reached


def test_max_steps_not_reached(log: Log) -> None:
    with workflow("wf") as wf:
        log.step("a") >> log.step("b")
    _, ctx = wf.execute("a", max_steps=2, ret_context=True)
    assert ctx.steps == 2
    assert ctx.max_steps_reached is False
