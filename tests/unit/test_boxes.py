"""print(graph): boxed nodes, ``*`` edges, one rank under another, groups as fork and join."""

from __future__ import annotations

import pytest

from graflow import task, workflow
from graflow.core.boxes import draw_boxes
from graflow.core.export import snapshot
from graflow.core.graph import TaskGraph
from graflow.core.task import Task
from graflow.utils.graph import draw_ascii


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_a_chain_is_a_column_of_boxes() -> None:
    with workflow("chain") as wf:
        first, middle, end = Task("start"), Task("middle"), Task("end")
        first >> middle >> end
    assert lines(str(wf.graph)) == [
        "+-------+",
        "| start |",
        "+-------+",
        "     *",
        "     *",
        "     *",
        "+--------+",
        "| middle |",
        "+--------+",
        "     *",
        "     *",
        "     *",
        "  +-----+",
        "  | end |",
        "  +-----+",
    ]


def test_a_group_is_a_fork_and_a_join_in_double_lines() -> None:
    with workflow("group") as wf:

        @task
        def fetch() -> None: ...

        @task
        def transform_a() -> None: ...

        @task
        def transform_b() -> None: ...

        @task
        def store() -> None: ...

        fetch >> (transform_a | transform_b) >> store
    drawing = lines(str(wf.graph))
    assert drawing[6:9] == [
        "          ╔═════════════════╗",
        "          ║ ParallelGroup_1 ║",
        "          ╚═════════════════╝",
    ]
    assert drawing[12:15] == [
        "+-------------+         +-------------+",
        "| transform_a |         | transform_b |",
        "+-------------+         +-------------+",
    ]
    assert drawing[19] == "         ║ ↣ ParallelGroup_1 ║"
    assert drawing[-2] == "               | store |"


def test_fan_out_places_children_side_by_side() -> None:
    graph = TaskGraph()
    for name in ("source", "process_a", "process_b", "process_c"):
        graph.add_node(Task(name, register_to_context=False))
    for child in ("process_a", "process_b", "process_c"):
        graph.add_edge("source", child)
    drawing = lines(draw_boxes(snapshot(graph)))
    assert drawing[1] == "                        | source |**"
    assert drawing[-2] == "| process_a |          | process_b |          | process_c |"
    assert len(drawing) == 9


def test_loops_long_edges_and_crossings_still_draw() -> None:
    graph = TaskGraph()
    edges = [("a", "d"), ("b", "c"), ("a", "c"), ("b", "e"), ("c", "f"), ("d", "f"), ("e", "f")]
    edges += [("f", "a"), ("a", "f")]
    for src, dst in edges:
        graph.add_edge(src, dst)
    text = str(graph)
    for name in "abcdef":
        assert f"| {name} |" in text
    assert "*" in text


def test_graphs_without_edges_and_empty_graphs() -> None:
    graph = TaskGraph()
    assert str(graph) == "Empty graph"
    graph.add_node(Task("one", register_to_context=False))
    graph.add_node(Task("three", register_to_context=False))
    assert str(graph) == "+-------+\n|  one  |\n+-------+\n| three |\n+-------+\n"
    graph.add_edge("one", "one")  # a self-loop alone draws as no edge
    assert str(graph).startswith("+-------+\n|  one  |")


def test_draw_ascii_takes_networkx_graphs_too() -> None:
    nx = pytest.importorskip("networkx")
    with workflow("nx") as wf:
        a, b = Task("a"), Task("b")
        a >> b
    assert draw_ascii(wf.graph.nx_graph()) == str(wf.graph)
    assert draw_ascii(nx.DiGraph()) == "Empty graph"


def test_show_info_prints_the_drawing(capsys: pytest.CaptureFixture[str]) -> None:
    with workflow("info") as wf:
        a, b = Task("a"), Task("b")
        a >> b
    wf.show_info()
    out = capsys.readouterr().out
    assert out.startswith("=== Workflow 'info' Information ===\n")
    assert "| a |" in out and "No cycles detected" in out
