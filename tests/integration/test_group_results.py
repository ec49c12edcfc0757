"""A group hands its members' results to a successor that names the group (#18), on every
backend; the group's own result stays None as upstream; wrong guesses name the fix."""

from __future__ import annotations

from typing import Any

import pytest

from graflow import parallel, task, workflow
from graflow.core.context import TaskExecutionContext
from graflow.core.task import ParallelGroup
from tests.conftest import Runner


def test_a_successor_takes_the_members_results_by_the_groups_name(run_on: Runner) -> None:
    @task
    def square(n: int) -> int:  # a template, outside the workflow: only its copies run
        return n * n

    with workflow("fan") as wf:

        @task(inject_context=True)
        def collect(ctx: TaskExecutionContext, squares: dict[str, int]) -> dict[str, Any]:
            return {"squares": squares, "group_result": ctx.get_result("squares")}

        members = [square(task_id=f"sq_{n}", n=n) for n in (3, 1, 2)]
        parallel(*members).set_group_name("squares") >> collect

    result = run_on(wf)
    assert result.value["squares"] == {"sq_3": 9, "sq_1": 1, "sq_2": 4}
    assert list(result.value["squares"]) == ["sq_3", "sq_1", "sq_2"]  # member order
    assert result.value["group_result"] is None  # the group's own result, as upstream
    assert result.results["squares"] is None


def test_nested_groups_and_tolerated_failures(run_on: Runner) -> None:
    with workflow("nested") as wf:

        @task
        def one() -> int:
            return 1

        @task
        def two() -> int:
            return 2

        @task
        def broken() -> int:
            raise ValueError("no")

        @task
        def gather(outer: dict[str, Any]) -> dict[str, Any]:
            return outer

        inner = (one | two).set_group_name("inner")
        outer = ParallelGroup([inner, broken], name="outer")  # a group inside a group
        outer.with_execution(policy="best_effort")
        outer >> gather

    assert run_on(wf).value == {"inner": {"one": 1, "two": 2}}


def test_binding_a_group_or_tasks_as_a_value_names_the_fix() -> None:
    @task
    def part(n: int) -> int:
        return n

    with workflow("wrong") as wf:

        @task
        def total(parts: list[int]) -> int:
            return sum(parts)

        members = [part(task_id=f"p{n}", n=n) for n in range(3)]
        group = parallel(*members).set_group_name("parts")
        with pytest.raises(TypeError, match=r"name the parameter after the group \('parts'\)"):
            total(task_id="t", parts=group)
        with pytest.raises(TypeError, match=r"binds a task object, not its result"):
            total(task_id="t", parts=members)
    assert "t" not in wf.graph.nodes
