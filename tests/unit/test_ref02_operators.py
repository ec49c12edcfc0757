"""Reference §2: the ``>>``, ``<<`` and ``|`` operators, row by row."""

from __future__ import annotations

import threading

import pytest

from graflow import workflow
from graflow.core.task import ParallelGroup, SequentialTask, Task, TaskWrapper
from graflow.core.workflow import current_workflow_context


class Recorder:
    """Builds tasks that append their id to a shared, thread-safe log when they run."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self._lock = threading.Lock()

    def task(self, task_id: str) -> TaskWrapper:
        def body() -> str:
            with self._lock:
                self.log.append(task_id)
            return task_id

        return TaskWrapper(task_id, body)

    def tasks(self, ids: str) -> list[TaskWrapper]:
        return [self.task(i) for i in ids.split()]


def ids(seq: SequentialTask) -> list[str]:
    return [t.task_id for t in seq.tasks]


def members(group: ParallelGroup) -> list[str]:
    return [t.task_id for t in group.tasks]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


# -- >> and << --------------------------------------------------------------------------------


def test_task_rshift_task(rec: Recorder) -> None:
    with workflow("wf") as wf:
        x, y = rec.tasks("x y")
        seq = x >> y
    assert isinstance(seq, SequentialTask)
    assert seq.tasks == [x, y]
    assert wf.graph.edges == [("x", "y")]


def test_task_rshift_chain(rec: Recorder) -> None:
    with workflow("wf") as wf:
        x, a, b = rec.tasks("x a b")
        inner = a >> b
        seq = x >> inner
    assert ids(seq) == ["x", "a", "b"]
    assert set(wf.graph.edges) == {("a", "b"), ("x", "a")}


def test_chain_rshift_task(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, y = rec.tasks("a b y")
        seq = (a >> b) >> y
    assert ids(seq) == ["a", "b", "y"]
    assert set(wf.graph.edges) == {("a", "b"), ("b", "y")}


def test_chain_rshift_chain(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d = rec.tasks("a b c d")
        seq = (a >> b) >> (c >> d)
    assert ids(seq) == ["a", "b", "c", "d"]
    assert set(wf.graph.edges) == {("a", "b"), ("c", "d"), ("b", "c")}


def test_task_lshift_task(rec: Recorder) -> None:
    with workflow("wf") as wf:
        x, y = rec.tasks("x y")
        seq = x << y
    assert ids(seq) == ["y", "x"]
    assert wf.graph.edges == [("y", "x")]


def test_task_lshift_chain(rec: Recorder) -> None:
    with workflow("wf") as wf:
        x, a, b = rec.tasks("x a b")
        seq = x << (a >> b)
    assert ids(seq) == ["a", "b", "x"]
    assert set(wf.graph.edges) == {("a", "b"), ("b", "x")}


def test_chain_lshift_task(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, y = rec.tasks("a b y")
        seq = (a >> b) << y
    assert ids(seq) == ["y", "a", "b"]
    assert set(wf.graph.edges) == {("a", "b"), ("y", "a")}


def test_chain_lshift_chain(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d = rec.tasks("a b c d")
        seq = (c >> d) << (a >> b)
    assert ids(seq) == ["a", "b", "c", "d"]
    assert set(wf.graph.edges) == {("a", "b"), ("c", "d"), ("b", "c")}


def test_operators_register_pending_operands(rec: Recorder) -> None:
    x, y, z = rec.tasks("x y z")
    assert x._pending_registration
    with workflow("wf") as wf:
        x >> y << z
    assert {"x", "y", "z"} <= set(wf.graph.nodes)
    # (x >> y) << z: z points at the chain's entry.
    assert set(wf.graph.edges) == {("x", "y"), ("z", "x")}


def test_operators_outside_a_block_use_the_implicit_workflow(rec: Recorder) -> None:
    a, b = rec.tasks("a b")
    a >> b
    implicit = current_workflow_context()
    assert implicit.graph.edges == [("a", "b")]
    assert implicit.execute() == "b"
    assert rec.log == ["a", "b"]


# -- | ----------------------------------------------------------------------------------------


def test_task_or_task_makes_a_registered_group(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b = rec.tasks("a b")
        group = a | b
    assert isinstance(group, ParallelGroup)
    assert members(group) == ["a", "b"]
    assert wf.graph.nodes["ParallelGroup_1"]["task"] is group
    assert wf.graph.edges == []


def test_group_or_task_appends_to_the_same_group(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c = rec.tasks("a b c")
        group = a | b
        same = group | c
    assert same is group
    assert members(group) == ["a", "b", "c"]
    assert [n for n in wf.graph.nodes if n.startswith("ParallelGroup")] == ["ParallelGroup_1"]


def test_group_or_chain_appends_the_chain_entry(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d = rec.tasks("a b c d")
        group = a | b
        same = group | (c >> d)
    assert same is group
    assert members(group) == ["a", "b", "c"]
    assert ("c", "d") in wf.graph.edges
    wf.execute("ParallelGroup_1")
    assert sorted(rec.log) == ["a", "b", "c", "d"]
    assert rec.log.index("d") > rec.log.index("c")


def test_chain_or_task_groups_only_the_chain_entry(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, x = rec.tasks("a b x")
        group = (a >> b) | x
    assert members(group) == ["a", "x"]
    assert wf.graph.edges == [("a", "b")]
    result, ctx = wf.execute("ParallelGroup_1", ret_context=True)
    assert result is None
    assert sorted(rec.log) == ["a", "b", "x"]
    assert rec.log.index("b") > rec.log.index("a")
    assert ctx.completed_tasks[-1] == "ParallelGroup_1"


def test_task_or_group_inserts_first_and_runs_once(rec: Recorder) -> None:
    """Deviation (2): `t | group` adds no edge, so t runs once (upstream runs it twice)."""
    with workflow("wf") as wf:
        a, b, c = rec.tasks("a b c")
        group = b | c
        same = a | group
    assert same is group
    assert members(group) == ["a", "b", "c"]
    assert wf.graph.edges == []
    wf.execute("ParallelGroup_1")
    assert sorted(rec.log) == ["a", "b", "c"]


def test_group_or_group_without_successors_merges(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d = rec.tasks("a b c d")
        g1 = a | b
        g2 = c | d
        merged = g1 | g2
    assert merged is g1
    assert members(g1) == ["a", "b", "c", "d"]
    assert "ParallelGroup_2" not in wf.graph.nodes
    wf.execute("ParallelGroup_1")
    assert sorted(rec.log) == ["a", "b", "c", "d"]


def test_group_or_group_with_a_successor_nests(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d, after = rec.tasks("a b c d after")
        g1 = a | b
        g1 >> after
        g2 = c | d
        outer = g1 | g2
    assert outer is not g1
    assert outer.task_id == "ParallelGroup_3"
    assert outer.tasks == [g1, g2]
    assert members(g1) == ["a", "b"]
    assert members(g2) == ["c", "d"]
    wf.execute("ParallelGroup_3")
    # Inside its branch g1 is followed by its successor.
    assert sorted(rec.log) == ["a", "after", "b", "c", "d"]
    assert rec.log.index("after") > max(rec.log.index("a"), rec.log.index("b"))


def test_group_rshift_and_rshift_group_use_the_group_node(rec: Recorder) -> None:
    with workflow("wf") as wf:
        fetch, a, b, store = rec.tasks("fetch a b store")
        seq = fetch >> (a | b) >> store
    assert isinstance(seq, SequentialTask)
    assert ids(seq) == ["fetch", "ParallelGroup_1", "store"]
    assert set(wf.graph.nodes) == {"fetch", "a", "b", "ParallelGroup_1", "store"}
    assert set(wf.graph.edges) == {("fetch", "ParallelGroup_1"), ("ParallelGroup_1", "store")}
    result = wf.execute("fetch")
    assert result == "store"
    assert rec.log[0] == "fetch"
    assert sorted(rec.log[1:3]) == ["a", "b"]
    assert rec.log[3:] == ["store"]


def test_group_lshift_task(rec: Recorder) -> None:
    with workflow("wf") as wf:
        x, a, b = rec.tasks("x a b")
        group = a | b
        seq = group << x
    assert ids(seq) == ["x", "ParallelGroup_1"]
    assert wf.graph.edges == [("x", "ParallelGroup_1")]


# -- precedence -------------------------------------------------------------------------------


def test_rshift_binds_tighter_than_or(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c = rec.tasks("a b c")
        value = a >> b | c
    assert isinstance(value, ParallelGroup)
    assert members(value) == ["a", "c"]
    assert wf.graph.edges == [("a", "b")]
    wf.execute("ParallelGroup_1")
    assert sorted(rec.log) == ["a", "b", "c"]


def test_parenthesised_group_in_a_chain(rec: Recorder) -> None:
    with workflow("wf") as wf:
        a, b, c, d = rec.tasks("a b c d")
        value = a >> (b | c) >> d
    assert isinstance(value, SequentialTask)
    assert ids(value) == ["a", "ParallelGroup_1", "d"]
    assert wf.execute("a") == "d"
    assert rec.log.count("d") == 1


# -- no reflected operators -------------------------------------------------------------------


def test_lists_cannot_appear_on_the_left(rec: Recorder) -> None:
    with workflow("wf"):
        a, b, c = rec.tasks("a b c")
        with pytest.raises(TypeError):
            [a, b] >> c  # type: ignore[operator]
        with pytest.raises(TypeError):
            [a, b] | c  # type: ignore[operator]


def test_placeholder_tasks_work_with_operators() -> None:
    with workflow("wf") as wf:
        seq = Task("start") >> Task("end")
    assert ids(seq) == ["start", "end"]
    assert wf.execute() is None
