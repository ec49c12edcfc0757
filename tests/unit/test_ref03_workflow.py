"""Reference §3: workflow contexts, registration, start nodes and ``WorkflowContext.execute``."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from graflow import TaskExecutionContext, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.task import ParallelGroup, Task, TaskWrapper
from graflow.core.workflow import (
    WorkflowContext,
    clear_workflow_context,
    current_workflow_context,
    get_current_workflow_context,
    require_workflow_context,
    set_current_workflow_context,
)
from graflow.exceptions import (
    DuplicateTaskError,
    GraflowRuntimeError,
    GraphCompilationError,
    UnknownTaskError,
)


def returning(task_id: str, value: Any) -> TaskWrapper:
    return TaskWrapper(task_id, lambda: value)


# -- the context manager ----------------------------------------------------------------------


def test_with_block_makes_the_workflow_current_and_restores_it() -> None:
    wf = workflow("orders")
    assert isinstance(wf, WorkflowContext)
    assert wf.name == "orders"
    assert len(wf.graph) == 0
    assert get_current_workflow_context() is None
    with wf as entered:
        assert entered is wf
        assert get_current_workflow_context() is wf
    assert get_current_workflow_context() is None


def test_nested_blocks_have_their_own_graphs() -> None:
    with workflow("outer") as outer:
        Task("a")
        with workflow("inner") as inner:
            Task("a")
            assert current_workflow_context() is inner
        assert current_workflow_context() is outer
        Task("b")
    assert set(outer.graph.nodes) == {"a", "b"}
    assert set(inner.graph.nodes) == {"a"}


def test_inner_workflow_inside_a_task_body() -> None:
    seen: list[Any] = []
    with workflow("outer") as outer:

        @task
        def driver() -> int:
            with workflow("inner") as inner:
                x = returning("x", 20)
                y = TaskWrapper("y", lambda x: x + 1)
                x >> y
            seen.append(get_current_workflow_context())
            return int(inner.execute("x"))

        driver >> Task("done")
        result, ctx = outer.execute("driver", ret_context=True)
    assert ctx.get_result("driver") == 21
    assert result is None
    assert seen == [outer]
    assert set(outer.graph.nodes) == {"driver", "done"}


def test_current_workflow_is_not_inherited_by_threads() -> None:
    seen: list[Any] = []
    with workflow("main"):
        thread = threading.Thread(target=lambda: seen.append(get_current_workflow_context()))
        thread.start()
        thread.join()
    assert seen == [None]


# -- registration -----------------------------------------------------------------------------


def test_in_block_registration_and_duplicate_message() -> None:
    with workflow("wf") as wf:
        Task("x")
        with pytest.raises(DuplicateTaskError) as info:
            Task("x")
    assert "x" in wf.graph.nodes
    assert str(info.value) == "Duplicate task ID: Node 'x' already exists in graph"
    assert isinstance(info.value, GraphCompilationError)


def test_pending_task_joins_the_first_workflow_it_meets() -> None:
    a = returning("a", 1)
    b = returning("b", 2)
    assert a._pending_registration and b._pending_registration
    with workflow("first") as first:
        a >> b
    with workflow("second") as second:
        Task("other") >> a
    assert set(first.graph.nodes) == {"a", "b"}
    # a was registered by the first workflow already; the second only gets the edge.
    assert second.graph.edges == [("other", "a")]


def test_implicit_global_workflow() -> None:
    assert get_current_workflow_context() is None
    implicit = current_workflow_context()
    assert re.fullmatch(r"\w+", implicit.name)
    assert get_current_workflow_context() is implicit
    assert current_workflow_context() is implicit
    a = returning("a", 1)
    b = TaskWrapper("b", lambda a: a + 1)
    a >> b
    assert current_workflow_context().execute() == 2


def test_get_current_can_create_one() -> None:
    created = get_current_workflow_context(create_if_not_exist=True)
    assert isinstance(created, WorkflowContext)
    assert get_current_workflow_context() is created


def test_require_set_and_clear() -> None:
    with pytest.raises(GraflowRuntimeError):
        require_workflow_context()
    wf = workflow("manual")
    set_current_workflow_context(wf)
    assert require_workflow_context() is wf
    clear_workflow_context()
    assert get_current_workflow_context() is None


# -- graph editing helpers --------------------------------------------------------------------


def test_add_node_edge_rename_and_clear() -> None:
    wf = workflow("manual")
    a = Task("a", register_to_context=False)
    b = Task("b", register_to_context=False)
    wf.add_node("a", a)
    wf.add_node("b", b)
    wf.add_node("a", a, skip_if_exists=True)
    with pytest.raises(DuplicateTaskError):
        wf.add_node("a", a)
    wf.add_edge("a", "b")
    wf.rename_node("b", "bee")
    assert wf.graph.edges == [("a", "bee")]
    assert wf.get_next_group_name() == "ParallelGroup_1"
    assert wf.get_next_group_name() == "ParallelGroup_2"
    wf.clear()
    assert len(wf.graph) == 0
    assert wf.get_next_group_name() == "ParallelGroup_1"


def test_redis_client_is_only_stored() -> None:
    wf = workflow("wf")
    client = object()
    assert wf.get_redis_client() is None
    wf.set_redis_client(client)
    assert wf.get_redis_client() is client


# -- start nodes ------------------------------------------------------------------------------


def test_single_root_is_detected() -> None:
    with workflow("wf") as wf:
        returning("a", 1) >> returning("b", 2)
    assert wf.execute() == 2


def test_several_roots_need_a_start_node() -> None:
    with workflow("wf") as wf:
        returning("a", 1) >> returning("c", 3)
        returning("b", 2) >> Task("d")
    with pytest.raises(GraphCompilationError, match="Multiple start nodes found, please specify"):
        wf.execute()
    assert wf.execute("a") == 3


def test_no_root_is_an_error() -> None:
    with workflow("wf") as wf:
        a = returning("a", 1)
        b = returning("b", 2)
        a >> b >> a
    with pytest.raises(
        GraphCompilationError,
        match=r"^No start node specified and no nodes with no predecessors found\.$",
    ):
        wf.execute()


def test_empty_workflow_has_no_start_node() -> None:
    with workflow("wf") as wf:
        pass
    with pytest.raises(GraphCompilationError, match="No start node specified"):
        wf.execute()


def test_root_group_hides_its_members() -> None:
    with workflow("wf") as wf:
        group = returning("a", 1) | returning("b", 2)
        group >> returning("c", 3)
    assert wf.execute() == 3


def test_members_of_a_group_with_a_predecessor_are_start_candidates() -> None:
    """Quirk: in a >> (b | c) >> d the members b and c are roots too."""
    with workflow("wf") as wf:
        returning("a", 1) >> (returning("b", 2) | returning("c", 3)) >> returning("d", 4)
    with pytest.raises(GraphCompilationError, match="Multiple start nodes"):
        wf.execute()
    assert wf.execute("a") == 4


def test_unknown_start_node() -> None:
    """Deviation (5): an unknown start node raises UnknownTaskError up front."""
    with workflow("wf") as wf:
        returning("a", 1)
    with pytest.raises(UnknownTaskError) as info:
        wf.execute("nope")
    err = info.value
    assert isinstance(err, GraphCompilationError)
    assert isinstance(err, GraflowRuntimeError)
    assert isinstance(err, KeyError)
    assert err.task_id == "nope"
    assert "Node 'nope' not found in graph" in str(err)


# -- execute ----------------------------------------------------------------------------------


def test_execute_twice_reruns_with_a_fresh_context() -> None:
    runs: list[str] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def count(ctx: TaskExecutionContext) -> int:
            runs.append(ctx.session_id)
            return ctx.cycle_count

    first, ctx1 = wf.execute(ret_context=True)
    second, ctx2 = wf.execute(ret_context=True)
    assert first == second == 1
    assert len(runs) == 2
    assert runs[0] != runs[1]
    assert ctx1 is not ctx2


def test_ret_context_returns_result_and_context() -> None:
    with workflow("wf") as wf:
        returning("a", "A") >> returning("b", "B")
    plain = wf.execute("a")
    result, ctx = wf.execute("a", ret_context=True)
    assert plain == result == "B"
    assert isinstance(ctx, ExecutionContext)
    assert ctx.completed_tasks == ["a", "b"]
    assert ctx.get_result("a") == "A"
    assert ctx.max_steps == 10000
    assert ctx.cycle_controller.default_max_cycles == 10
    assert ctx.default_max_retries == 0
    assert ctx.channel_backend == "memory"


def test_max_steps_is_passed_to_the_context() -> None:
    with workflow("wf") as wf:
        returning("a", 1) >> returning("b", 2) >> returning("c", 3)
    result, ctx = wf.execute("a", max_steps=2, ret_context=True)
    assert ctx.max_steps == 2
    assert result == 2
    assert ctx.completed_tasks == ["a", "b"]


def test_initial_channel_feeds_parameters() -> None:
    with workflow("wf") as wf:

        @task
        def greet(name: str, punctuation: str = "!") -> str:
            return f"hello {name}{punctuation}"

    result, ctx = wf.execute(initial_channel={"name": "ada"}, ret_context=True)
    assert result == "hello ada!"
    assert ctx.get_channel().get("name") == "ada"


# -- printing ---------------------------------------------------------------------------------


def test_show_info(capsys: pytest.CaptureFixture[str]) -> None:
    with workflow("demo") as wf:
        Task("fetch") >> Task("store")
    wf.show_info()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "=== Workflow 'demo' Information ==="
    assert out[-1] == "No cycles detected"
    body = "\n".join(out[1:-1])
    assert "fetch" in body and "store" in body


def test_show_info_reports_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    with workflow("loop") as wf:
        agent = Task("agent")
        agent >> Task("tool") >> agent
    wf.show_info()
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("Cycles detected: ")
    assert "agent" in last and "tool" in last


def test_show_info_of_an_empty_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    with workflow("empty") as wf:
        pass
    wf.show_info()
    assert capsys.readouterr().out.splitlines() == [
        "=== Workflow 'empty' Information ===",
        "Empty graph",
        "No cycles detected",
    ]


def test_visualize_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    with workflow("deps") as wf:
        a, b, c = Task("a"), Task("b"), Task("c")
        a >> b
        a >> c
    wf.visualize_dependencies()
    assert capsys.readouterr().out.splitlines() == [
        "=== Workflow 'deps' Dependencies ===",
        "a >> b >> c",
        "b (no dependencies)",
        "c (no dependencies)",
    ]


def test_str_of_graph_mentions_groups() -> None:
    with workflow("wf") as wf:
        group = Task("a") | Task("b")
    assert isinstance(group, ParallelGroup)
    text = str(wf.graph)
    assert "ParallelGroup_1" in text
