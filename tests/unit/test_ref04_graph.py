"""Reference §4: TaskGraph."""

from __future__ import annotations

import pytest

from graflow import workflow
from graflow.core.graph import TaskGraph
from graflow.core.task import Task
from graflow.exceptions import DuplicateTaskError


def placeholder(task_id: str) -> Task:
    return Task(task_id, register_to_context=False)


@pytest.fixture
def graph() -> TaskGraph:
    g = TaskGraph()
    for name in ("a", "b", "c"):
        g.add_node(placeholder(name))
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g


def test_add_node_takes_the_task_first() -> None:
    g = TaskGraph()
    t = placeholder("t")
    g.add_node(t)
    g.add_node(t, "alias")
    assert list(g.nodes.keys()) == ["t", "alias"]
    assert g.nodes["alias"]["task"] is t


def test_duplicate_node() -> None:
    g = TaskGraph()
    first = placeholder("t")
    g.add_node(first)
    with pytest.raises(DuplicateTaskError, match="Node 't' already exists in graph"):
        g.add_node(placeholder("t"))
    g.add_node(placeholder("t"), skip_if_exists=True)
    assert g.nodes["t"]["task"] is first


def test_node_view_surface(graph: TaskGraph) -> None:
    assert "a" in graph.nodes
    assert "z" not in graph.nodes
    assert list(graph.nodes) == ["a", "b", "c"]
    assert len(graph.nodes) == 3
    assert graph.nodes["b"]["task"].task_id == "b"


def test_edges_successors_predecessors(graph: TaskGraph) -> None:
    assert graph.edges == [("a", "b"), ("a", "c")]
    assert graph.get_edges() == graph.edges
    assert graph.successors("a") == ["b", "c"]
    assert graph.predecessors("c") == ["a"]
    assert graph.successors("c") == []
    assert isinstance(graph.successors("a"), list)


def test_cycles_are_allowed_and_detected(graph: TaskGraph) -> None:
    assert graph.detect_cycles() == []
    graph.add_edge("c", "a")
    cycles = graph.detect_cycles()
    assert len(cycles) == 1
    assert sorted(cycles[0]) == ["a", "c"]
    graph.add_edge("b", "b")
    assert ["b"] in graph.detect_cycles()


def test_start_nodes(graph: TaskGraph) -> None:
    assert graph.get_start_nodes() == ["a"]
    graph.add_node(placeholder("lonely"))
    assert graph.get_start_nodes() == ["a", "lonely"]


def test_start_nodes_drop_members_of_a_root_group() -> None:
    with workflow("wf") as wf:
        group = Task("m1") | Task("m2")
        group >> Task("after")
    assert wf.graph.get_start_nodes() == ["ParallelGroup_1"]


def test_members_are_found_through_their_group() -> None:
    with workflow("wf") as wf:
        group = Task("m1") | Task("m2")
    g = wf.graph
    assert group.task_id in g.nodes
    assert "m1" in g.nodes  # registered in the block
    g.remove_node("m1")
    assert "m1" not in g.nodes
    assert g.has_node("m1")
    assert g.get_node("m1") is group.tasks[0]
    assert g.get_parallel_group_members("ParallelGroup_1") == ["m1", "m2"]
    assert not g.has_node("ghost")
    with pytest.raises(KeyError):
        g.get_node("ghost")


def test_rename_node_keeps_edges(graph: TaskGraph) -> None:
    graph.rename_node("a", "root")
    assert graph.edges == [("root", "b"), ("root", "c")]
    assert graph.predecessors("b") == ["root"]
    with pytest.raises(KeyError):
        graph.rename_node("a", "again")
    with pytest.raises(ValueError):
        graph.rename_node("b", "c")


def test_clear(graph: TaskGraph) -> None:
    graph.clear()
    assert len(graph.nodes) == 0
    assert graph.edges == []
    assert str(graph) == "Empty graph"


def test_str_draws_the_nodes(graph: TaskGraph) -> None:
    text = str(graph)
    for name in ("a", "b", "c"):
        assert name in text


def test_nx_graph_copy(graph: TaskGraph) -> None:
    nx = pytest.importorskip("networkx")
    copy = graph.nx_graph()
    assert isinstance(copy, nx.DiGraph)
    assert sorted(copy.edges) == [("a", "b"), ("a", "c")]
    assert copy.nodes["a"]["task"] is graph.nodes["a"]["task"]
    copy.add_edge("b", "c")
    assert ("b", "c") not in graph.edges
