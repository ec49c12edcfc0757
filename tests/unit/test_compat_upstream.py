"""Behaviour and names that scripts written for upstream Graflow rely on (issue 15)."""

from __future__ import annotations

import contextvars
from typing import Any, TypedDict

import networkx as nx
import pytest

import graflow.core.workflow as workflow_module
from graflow import task, workflow
from graflow.channels.memory import MemoryChannel
from graflow.channels.typed import _is_typed_dict, _validate_typed_dict
from graflow.core.handler import TaskResult
from graflow.core.policy import (
    AtLeastNGroupPolicy,
    BestEffortGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
    resolve_group_policy,
)
from graflow.core.task import Executable, ParallelGroup, Task
from graflow.core.workflow import WorkflowContext, current_workflow_context
from graflow.exceptions import ConfigError, ParallelGroupError
from graflow.utils.graph import build_graph


class RecordingPolicy(GroupExecutionPolicy):
    """Keeps what the engine hands it."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []

    def on_group_finished(
        self, group_id: str, tasks: Any, results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        self.tasks = list(tasks)


def test_policies_receive_member_task_objects() -> None:
    policy = RecordingPolicy()
    with workflow("objects") as wf:

        @task
        def left() -> int:
            return 1

        @task
        def right() -> int:
            return 2

        group = (left | right).with_execution(policy=policy)
    wf.execute(group.task_id)
    assert all(isinstance(t, Executable) for t in policy.tasks)
    assert [t.task_id for t in policy.tasks] == ["left", "right"]


@pytest.mark.parametrize("policy", [BestEffortGroupPolicy(), CriticalGroupPolicy(["fine"])])
def test_failed_member_has_no_result_after_a_tolerant_group(policy: GroupExecutionPolicy) -> None:
    with workflow("tolerant") as wf:

        @task
        def fine() -> str:
            return "ok"

        @task
        def broken() -> None:
            raise RuntimeError("no luck")

        @task(inject_context=True)
        def after(ctx: Any) -> tuple[Any, Any]:
            return ctx.get_result("fine"), ctx.get_result("broken", "missing")

        group = (fine | broken).with_execution(policy=policy)
        group >> after
    result, context = wf.execute(group.task_id, ret_context=True)
    assert result == ("ok", "missing")
    assert context.get_result("broken") is None


def test_at_least_n_message_names_the_required_count() -> None:
    policy = AtLeastNGroupPolicy(3)
    results = {
        "a": TaskResult("a", True),
        "b": TaskResult("b", False, error_message="x"),
        "c": TaskResult("c", False, error_message="y"),
        "d": TaskResult("d", True),
    }
    members = [Task(t, register_to_context=False) for t in "abcd"]
    with pytest.raises(ParallelGroupError) as info:
        policy.on_group_finished("g", members, results, None)
    assert str(info.value) == "Only 2/3 tasks succeeded in group g"


def test_unknown_policy_names_are_value_errors_too() -> None:
    for bad in ("unknown_policy", {"type": "unknown"}):
        with pytest.raises(ValueError, match="policy"):
            resolve_group_policy(bad)
        with pytest.raises(ConfigError):
            resolve_group_policy(bad)


def test_workflow_context_var_can_be_swapped_by_name() -> None:
    replacement: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar("swap")
    mine = WorkflowContext("mine")
    replacement.set(mine)
    original = workflow_module._current_context
    workflow_module._current_context = replacement
    try:

        @task
        def joined() -> str:
            return "here"

        assert "joined" in mine.graph.nodes
        assert current_workflow_context() is mine
        assert joined() == "here"
    finally:
        workflow_module._current_context = original


def test_a_context_var_without_default_reads_as_no_workflow() -> None:
    original = workflow_module._current_context
    workflow_module._current_context = contextvars.ContextVar("empty")
    try:
        assert workflow_module.get_current_workflow_context() is None
    finally:
        workflow_module._current_context = original


def test_implicit_workflow_is_named_by_a_full_hex_uuid() -> None:
    workflow_module.clear_workflow_context()
    name = current_workflow_context().name
    workflow_module.clear_workflow_context()
    assert len(name) == 32
    int(name, 16)


class Point(TypedDict):
    x: int
    label: str


class NotTyped:
    x: int


def test_typed_dict_helpers() -> None:
    assert _is_typed_dict(Point) is True
    assert _is_typed_dict(NotTyped) is False
    assert _is_typed_dict(dict) is False
    assert _validate_typed_dict({"x": 1, "label": "p"}, Point) is True
    assert _validate_typed_dict({"x": 1}, Point) is False
    assert _validate_typed_dict({"x": 1, "label": "p", "extra": 0}, Point) is False
    assert _validate_typed_dict({"x": "1", "label": "p"}, Point) is False
    assert _validate_typed_dict("not a dict", Point) is False
    assert _validate_typed_dict({"x": 1}, NotTyped) is False


def test_atomic_add_on_a_non_number_says_what_it_expected() -> None:
    channel = MemoryChannel("n")
    channel.set("data", "hello")
    with pytest.raises(TypeError, match="Key 'data' holds str, expected int or float"):
        channel.atomic_add("data")
    assert channel.get("data") == "hello"


def test_build_graph_collects_what_is_connected() -> None:
    workflow_module.clear_workflow_context()
    try:
        a, b, c, lone = Task("A"), Task("B"), Task("C"), Task("lone")
        chain = a >> b >> c >> a
        lone >> Task("other")
        graph = build_graph(chain)
        assert sorted(graph.nodes) == ["A", "B", "C"]
        assert sorted(graph.edges) == [("A", "B"), ("B", "C"), ("C", "A")]
        assert graph.nodes["A"]["task"] is a
        assert len(list(nx.simple_cycles(graph.nx_graph()))) == 1

        x, y = Task("X"), Task("Y")
        group = ParallelGroup([x, y])
        grouped = build_graph(group)
        assert set(grouped.edges) == {(group.task_id, "X"), (group.task_id, "Y")}
        # the workflow's own graph is untouched
        assert current_workflow_context().graph.get_parallel_group_members(group.task_id) == [
            "X",
            "Y",
        ]
        assert (group.task_id, "X") not in current_workflow_context().graph.edges
    finally:
        workflow_module.clear_workflow_context()


def test_task_graph_offers_a_networkx_view() -> None:
    with workflow("nx") as wf:
        first, second = Task("first"), Task("second")
        first >> second
    view = wf.graph._graph
    assert isinstance(view, nx.DiGraph)
    assert list(view.successors("first")) == ["second"]
    assert ("first", "second") in view.edges()
