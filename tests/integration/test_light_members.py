"""Wide groups of plain tasks on the process pool: members without a frame of their own.

The scheduler submits a group's plain members (no successor, no timeout) under one
stand-in frame, and gives a member a frame of its own only when it fails or issues a
command. These tests make members do each of those things and check, against the
in-process engine run in the same test, that the same tasks run the same number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import graflow
from graflow import parallel, task, workflow
from graflow.core.task import TaskWrapper
from graflow.exceptions import MaxStepsExceeded, ParallelGroupError

Runner = Callable[..., Any]


@pytest.fixture(params=["fork", "spawn"])
def run_on(request: pytest.FixtureRequest) -> Runner:
    kind = request.param
    sup = request.getfixturevalue("supervisors")(kind)
    return lambda target, **kw: sup.run(target, **kw)


def in_process(target: Any, **kw: Any) -> Any:
    return graflow.run(target, processes=0, **kw)


def _member(task_id: str, body: Callable[[Any], Any] | None = None) -> TaskWrapper:
    def fn(ctx: Any) -> Any:
        ctx.get_channel().atomic_add(f"runs.{task_id}", 1)
        return body(ctx) if body is not None else task_id

    return TaskWrapper(task_id, fn, inject_context=True)


def _counts(result: Any) -> dict[str, int]:
    return {k[5:]: v for k, v in result.channel.items() if k.startswith("runs.")}


def _wide(n: int, special: dict[int, Callable[[Any], Any]] | None = None) -> Any:
    special = special or {}
    with workflow("wide") as wf:
        members = [_member(f"m{i}", special.get(i)) for i in range(n)]
        group = parallel(*members).set_group_name("wide")

        @task(inject_context=True)
        def after(ctx: Any) -> int:
            keys = ctx.get_channel().keys()  # a Channel method, not a dict view
            return len([k for k in keys if k.startswith("runs.")])

        group >> after
    return wf


def test_every_member_runs_once_then_the_successor(run_on: Runner) -> None:
    wf = _wide(300)
    result = run_on(wf, start="wide")
    assert _counts(result) == {f"m{i}": 1 for i in range(300)}
    assert result.value == 300
    assert result.results["m299"] == "m299"
    assert sorted(result.completed) == sorted(in_process(wf, start="wide").completed)


def test_failing_members_are_retried_in_frames_of_their_own(run_on: Runner) -> None:
    def flaky(ctx: Any) -> str:
        if ctx.retry_count == 0:
            raise RuntimeError("first attempt fails")
        return "second time lucky"

    wf = _wide(50, {i: flaky for i in range(0, 50, 7)})
    for exe in wf.graph.nodes.values():
        task_obj = exe.get("task")
        if isinstance(task_obj, TaskWrapper) and task_obj.task_id.startswith("m"):
            task_obj.max_retries = 1
    result = run_on(wf, start="wide")
    expected = {f"m{i}": 2 if i % 7 == 0 else 1 for i in range(50)}
    assert _counts(result) == expected
    assert result.results["m7"] == "second time lucky"
    assert result.stats.retries == 8
    assert _counts(in_process(wf, start="wide")) == expected


def test_a_member_that_adds_a_task_runs_it_in_its_branch(run_on: Runner) -> None:
    def spawn(ctx: Any) -> str:
        ctx.next_task(_member("extra"))
        return "spawned"

    wf = _wide(40, {3: spawn})
    result = run_on(wf, start="wide")
    counts = _counts(result)
    assert counts.pop("extra") == 1
    assert counts == {f"m{i}": 1 for i in range(40)}
    assert result.value == 41  # the successor ran after the branch with the extra task


def test_terminate_in_a_member_ends_only_its_branch(run_on: Runner) -> None:
    def stop(ctx: Any) -> str:
        ctx.terminate_workflow("this branch only")
        return "stopped"

    wf = _wide(30, {5: stop})
    result = run_on(wf, start="wide")
    reference = in_process(wf, start="wide")
    assert _counts(result) == _counts(reference)
    assert result.value == reference.value


def test_a_failed_member_fails_a_strict_group(run_on: Runner) -> None:
    def boom(ctx: Any) -> None:
        raise ValueError("member broke")

    wf = _wide(60, {17: boom})
    with pytest.raises(ParallelGroupError) as info:
        run_on(wf, start="wide")
    assert [t for t, _ in info.value.failed_tasks] == ["m17"]


def test_the_step_limit_holds_inside_a_wide_group(run_on: Runner) -> None:
    wf = _wide(100)
    with pytest.raises(MaxStepsExceeded) as info:
        run_on(wf, start="wide", max_steps=40)
    with pytest.raises(MaxStepsExceeded) as in_process_info:
        in_process(wf, start="wide", max_steps=40)
    result, reference = info.value.result, in_process_info.value.result
    assert result.max_steps_reached and reference.max_steps_reached
    assert sum(_counts(result).values()) == sum(_counts(reference).values())
