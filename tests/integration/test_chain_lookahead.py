"""Chain lookahead on the process pool: a chain's next tasks travel with the running one.

A conditional successor runs exactly when the scheduler would have queued it (the
predecessor returned and issued no command). These tests break chains in every way a task
can (terminate, goto, failure with retry, a crash that kills the worker, the step limit)
and count executions with the run's channel, which is atomic across processes: no task may
run that the in-process engine would not run, and none may be lost.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import chain, task, workflow
from graflow.core.task import TaskWrapper
from graflow.exceptions import MaxStepsExceeded, TaskError, WorkerLost
from graflow.mp.backend import ProcessBackend
from tests.by_parameter import taking_previous

Runner = Callable[..., Any]


@pytest.fixture(params=["inprocess", "fork", "spawn"])
def run_on(request: pytest.FixtureRequest) -> Runner:
    kind = request.param
    if kind == "inprocess":
        return lambda target, **kw: graflow.run(target, processes=0, **kw)
    sup = request.getfixturevalue("supervisors")(kind, chain_lookahead=8)
    return lambda target, **kw: sup.run(target, **kw)


def _counted(task_id: str, body: Callable[[Any], Any] | None = None) -> TaskWrapper:
    """A task that counts its executions in the channel, then runs ``body(ctx)``."""

    def fn(ctx: Any) -> Any:
        ctx.get_channel().atomic_add(f"runs.{task_id}", 1)
        ctx.get_channel().append("order", task_id)
        return body(ctx) if body is not None else task_id

    return TaskWrapper(task_id, fn, inject_context=True)


def _runs(result: Any, ids: list[str]) -> dict[str, int]:
    return {i: result.channel.get(f"runs.{i}", 0) for i in ids}


def test_a_chain_runs_every_task_once_in_order(run_on: Runner) -> None:
    ids = [f"t{i}" for i in range(60)]
    with workflow("plain") as wf:
        chain(*[_counted(i) for i in ids])
    result = run_on(wf, start="t0")
    assert result.channel["order"] == ids
    assert _runs(result, ids) == dict.fromkeys(ids, 1)
    assert result.value == "t59"
    assert set(ids) <= set(result.results)


def test_terminate_in_the_middle_runs_nothing_after_it(run_on: Runner) -> None:
    ids = [f"t{i}" for i in range(30)]

    def stop(ctx: Any) -> str:
        ctx.terminate_workflow("enough")
        return "stopped"

    with workflow("terminate") as wf:
        chain(*[_counted(i, stop if i == "t10" else None) for i in ids])
    result = run_on(wf, start="t0")
    assert result.channel["order"] == ids[:11]
    assert result.value == "stopped"
    assert not set(ids[11:]) & set(result.results)


def test_goto_in_the_middle_skips_the_plain_successor(run_on: Runner) -> None:
    ids = [f"t{i}" for i in range(20)]
    side = _counted("side")

    def jump(ctx: Any) -> str:
        ctx.next_task(side, goto=True)
        return "jumped"

    with workflow("goto") as wf:
        chain(*[_counted(i, jump if i == "t5" else None) for i in ids])
    result = run_on(wf, start="t0")
    assert result.channel["order"] == [*ids[:6], "side"]
    assert "t6" not in result.results


def test_a_failure_is_retried_and_the_chain_goes_on_once(run_on: Runner) -> None:
    ids = [f"t{i}" for i in range(25)]

    def flaky(ctx: Any) -> str:
        if ctx.get_channel().atomic_add("flaky.attempts", 1) < 3:
            raise RuntimeError("not yet")
        return "finally"

    with workflow("retry") as wf:
        tasks = [_counted(i, flaky if i == "t7" else None) for i in ids]
        tasks[7].max_retries = 3
        chain(*tasks)
    result = run_on(wf, start="t0")
    counts = _runs(result, ids)
    assert counts.pop("t7") == 3
    assert counts == {i: 1 for i in ids if i != "t7"}
    assert result.channel["order"] == [*ids[:8], "t7", "t7", *ids[8:]]
    assert result.results["t7"] == "finally"


def test_each_task_sees_its_predecessors_result(run_on: Runner) -> None:
    n = 40
    with workflow("results") as wf:

        def make(i: int) -> TaskWrapper:
            def fn(ctx: Any) -> int:
                previous = 0 if i == 0 else ctx.get_result(f"r{i - 1}")
                return int(previous) + i

            return TaskWrapper(f"r{i}", fn, inject_context=True)

        chain(*[make(i) for i in range(n)])
    result = run_on(wf, start="r0")
    assert result.value == sum(range(n))


def _step_by_parameter(i: int, previous: Any, *, ctx: Any, bonus: int) -> tuple[int, int, int]:
    _pid, total, _ = previous if previous is not None else (0, 0, 0)
    if i % 3 == 0:
        ctx.get_channel().set("bonus", i)  # for the successor, which starts after this ends
    ctx.get_channel().atomic_add(f"runs.p{i}", 1)
    return os.getpid(), total + i + bonus, bonus


def _by_parameter(i: int) -> TaskWrapper:
    """Task ``p<i>``: takes ``p<i-1>``'s result by parameter name, and ``bonus`` from the
    channel, which every third task sets for its successor."""
    body = functools.partial(_step_by_parameter, i)
    previous = f"p{i - 1}" if i else None
    fn = taking_previous(previous, body, context=True, extra={"bonus": 0})
    return TaskWrapper(f"p{i}", fn, inject_context=True)


def test_successors_that_take_their_predecessors_result_run_ahead(run_on: Runner) -> None:
    n = 40
    with workflow("by-parameter") as wf:
        chain(*[_by_parameter(i) for i in range(n)])
    result = run_on(wf, start="p0", initial_channel={"bonus": 1000})
    # What each task saw: its predecessor's result and the bonus written before it started.
    expected_total, bonus = 0, 1000
    for i in range(n):
        expected_total += i + bonus
        assert result.results[f"p{i}"][1:] == (expected_total, bonus), i
        if i % 3 == 0:
            bonus = i
    assert _runs(result, [f"p{i}" for i in range(n)]) == {f"p{i}": 1 for i in range(n)}


def test_a_chain_by_parameter_runs_ahead_on_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    ahead: list[int] = []
    submit_after = ProcessBackend.submit_after

    def counting(self: ProcessBackend, item: Any, exe: Any, parent: int) -> None:
        ahead.append(item.seq)
        submit_after(self, item, exe, parent)

    monkeypatch.setattr(ProcessBackend, "submit_after", counting)
    with workflow("local-by-parameter") as wf:
        chain(*[_by_parameter(i) for i in range(30)])
    with graflow.Supervisor(2, chain_lookahead=8) as sup:
        result = sup.run(wf, start="p0")
    assert len({result.results[f"p{i}"][0] for i in range(30)}) == 1
    assert len(ahead) == 29  # every task but the first went out with its predecessor


def test_a_successor_does_not_run_after_a_result_that_cannot_be_sent(tmp_path: Path) -> None:
    ran = tmp_path / "b-ran"
    with workflow("unsendable") as wf:
        a = _counted("a", lambda ctx: threading.Lock())
        b = TaskWrapper("b", lambda a: ran.touch())
        a >> b
    with graflow.Supervisor(1, chain_lookahead=8) as sup, pytest.raises(TaskError) as info:
        sup.run(wf, start="a")
    assert info.value.task_id == "a"
    assert not ran.exists()  # a failed (its result could not be sent): b must not run


def test_the_step_limit_is_exact(run_on: Runner) -> None:
    ids = [f"t{i}" for i in range(100)]
    with workflow("steps") as wf:
        chain(*[_counted(i) for i in ids])
    with pytest.raises(MaxStepsExceeded) as info:
        run_on(wf, start="t0", max_steps=13)
    result = info.value.result
    assert result.max_steps_reached
    assert result.channel["order"] == ids[:13]


def test_a_static_loop_runs_its_cycles_on_the_pool_as_in_process(run_on: Runner) -> None:
    with workflow("loop") as wf:
        a = _counted("a")
        b = _counted("b")
        c = _counted("c")
        a >> b >> c >> a
    with pytest.raises(MaxStepsExceeded) as info:
        run_on(wf, start="a", max_steps=20)
    result = info.value.result
    assert result.max_steps_reached
    assert result.channel["order"] == (["a", "b", "c"] * 7)[:20]


def test_a_chain_stays_on_one_worker() -> None:
    with workflow("local") as wf:
        chain(*[TaskWrapper(f"p{i}", os.getpid) for i in range(50)])
    with graflow.Supervisor(2, chain_lookahead=8) as sup:
        result = sup.run(wf, start="p0")
        workers = set(sup.worker_pids)
    pids = {result.results[f"p{i}"] for i in range(50)}
    assert len(pids) == 1
    assert pids <= workers


def test_without_lookahead_the_same_results() -> None:
    ids = [f"t{i}" for i in range(30)]
    with workflow("off") as wf:
        chain(*[_counted(i) for i in ids])
    with graflow.Supervisor(2, chain_lookahead=0) as sup:
        result = sup.run(wf, start="t0")
    assert result.channel["order"] == ids


def test_a_successor_that_kills_its_worker_ends_in_worker_lost(tmp_path: Path) -> None:
    marks = tmp_path / "deliveries"

    @task
    def first() -> str:
        return "fine"

    def crash() -> None:
        with marks.open("a") as fh:
            fh.write("x\n")
        os._exit(1)

    with workflow("crash") as wf:
        never = _counted("never")
        first >> TaskWrapper("crash", crash) >> never
    with (
        graflow.Supervisor(2, max_deliveries=3, chain_lookahead=8) as sup,
        pytest.raises(WorkerLost) as info,
    ):
        sup.run(wf, start="first", timeout_s=60)
    assert info.value.task_id == "crash"
    assert marks.read_text().count("x") == 3


@task(inject_context=True)
def _bound_step(ctx: Any, previous: str | None, add: int) -> tuple[int, int]:
    """One hop of a chain of bound instances: reads its predecessor with get_result."""
    ctx.get_channel().atomic_add(f"runs.{ctx.task_id}", 1)
    total = 0 if previous is None else ctx.get_result(previous)[1]
    return os.getpid(), total + add


def test_bound_instances_run_ahead_with_their_arguments(
    run_on: Runner, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    ahead: list[str] = []
    submit_after = ProcessBackend.submit_after

    def counting(self: ProcessBackend, item: Any, exe: Any, parent: int) -> None:
        ahead.append(item.task_id)
        submit_after(self, item, exe, parent)

    monkeypatch.setattr(ProcessBackend, "submit_after", counting)
    ids = [f"b{i}" for i in range(30)]
    with workflow("bound-chain") as wf:
        chain(*[_bound_step(task_id=t, previous=ids[i - 1] if i else None, add=i)
                for i, t in enumerate(ids)])  # fmt: skip
    result = run_on(wf, start="b0")
    assert [result.results[t][1] for t in ids] == [sum(range(i + 1)) for i in range(30)]
    assert _runs(result, ids) == dict.fromkeys(ids, 1)
    if request.node.callspec.params["run_on"] != "inprocess":
        # On the pool every task but the first went out with its predecessor.
        assert ahead == ids[1:]
        assert len({result.results[t][0] for t in ids}) == 1
