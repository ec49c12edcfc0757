"""Module-level tasks wired into several workflows of one process, on every backend (#18)."""

from __future__ import annotations

import pytest

from graflow import workflow
from graflow.exceptions import UnknownTaskError
from tests import module_tasks as mt
from tests.conftest import Runner


def test_module_level_tasks_serve_several_workflows(run_on: Runner) -> None:
    with workflow("first") as first:
        mt.extract >> mt.double >> mt.total
    with workflow("second") as second:
        mt.extract >> mt.double
    with workflow("third") as third:
        mt.extract >> mt.double >> mt.total

    assert run_on(first).value == 12
    assert run_on(second).value == [2, 4, 6]
    assert run_on(third).value == 12
    assert run_on(first).value == 12  # the first workflow is unchanged by the others
    assert sorted(first.graph.nodes) == ["double", "extract", "total"]
    assert sorted(second.graph.nodes) == ["double", "extract"]


def test_an_agent_workflow_runs_twice(run_on: Runner) -> None:
    for _ in range(2):
        with workflow("agent") as wf:
            mt.agent >> mt.tool  # wired once; goto jumps back and forth
        result = run_on(wf, start="agent", max_steps=50)
        assert result.channel["answer"] == "done after 3"
        assert result.channel["seen"] == 3


def test_wf_execute_runs_the_second_workflow_too() -> None:
    with workflow("a") as wf_a:
        mt.extract >> mt.double
    with workflow("b") as wf_b:
        mt.extract >> mt.double >> mt.total
    assert wf_a.execute() == [2, 4, 6]
    assert wf_b.execute() == 12


def test_a_node_known_only_from_an_edge_is_named_as_such() -> None:
    with workflow("edges") as wf:
        wf.add_edge("ghost", "phantom")
    with pytest.raises(UnknownTaskError) as caught:
        wf.execute("ghost")
    message = str(caught.value)
    assert "'ghost'" in message
    assert "no task" in message
    assert message.endswith("Available nodes: none")
