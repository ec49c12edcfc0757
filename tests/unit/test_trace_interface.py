"""graflow.trace: the tracer interface, NoopTracer, and the calls the scheduler makes."""

from __future__ import annotations

from typing import Any

import pytest

import graflow
from graflow import TaskExecutionContext, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.graph import TaskGraph
from graflow.core.spec import Completion, WorkItem
from graflow.core.task import TaskWrapper
from graflow.exceptions import GraflowRuntimeError
from graflow.trace import NoopTracer, Tracer
from graflow.trace import graph as runtime_graph
from graflow.trace.noop import is_idle


class Recorder(Tracer):
    """Writes down every hook the engine calls, in order."""

    def __init__(self) -> None:
        super().__init__(enable_runtime_graph=True)
        self.calls: list[tuple[Any, ...]] = []

    def on_workflow_start(self, workflow_name: str, context: ExecutionContext) -> None:
        self.calls.append(("workflow_start", workflow_name))
        super().on_workflow_start(workflow_name, context)

    def on_workflow_failed(
        self, workflow_name: str, context: ExecutionContext, error: BaseException
    ) -> None:
        self.calls.append(("workflow_failed", type(error).__name__))

    def on_workflow_end(
        self, workflow_name: str, context: ExecutionContext, result: Any = None
    ) -> None:
        self.calls.append(("workflow_end", result))
        super().on_workflow_end(workflow_name, context, result)

    def on_task_start(self, task: Any, context: ExecutionContext) -> None:
        self.calls.append(("task_start", task.task_id))
        super().on_task_start(task, context)

    def on_task_end(
        self,
        task: Any,
        context: ExecutionContext,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        self.calls.append(
            ("task_end", task.task_id, result, type(error).__name__ if error else None)
        )
        super().on_task_end(task, context, result, error)

    def on_parallel_group_start(
        self, group_id: str, member_ids: list[str], context: ExecutionContext
    ) -> None:
        self.calls.append(("group_start", group_id, tuple(member_ids)))

    def on_parallel_group_end(
        self,
        group_id: str,
        member_ids: list[str],
        context: ExecutionContext,
        results: dict[str, Any] | None = None,
    ) -> None:
        self.calls.append(("group_end", group_id))

    def on_dynamic_task_added(
        self,
        task_id: str,
        parent_task_id: str | None = None,
        is_iteration: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.calls.append(("dynamic", task_id, parent_task_id, is_iteration))

    def _output_trace_start(self, name: str, trace_id: str | None, metadata: Any) -> None:
        pass

    def _output_trace_end(self, name: str, output: Any, metadata: Any) -> None:
        pass

    def _output_span_start(self, name: str, parent_name: str | None, metadata: Any) -> None:
        pass

    def _output_span_end(self, name: str, output: Any, metadata: Any) -> None:
        pass

    def _output_event(self, name: str, parent_span: str | None, metadata: Any) -> None:
        pass

    def _output_attach_to_trace(self, trace_id: str, parent_span_id: str | None) -> None:
        pass

    def clone(self, trace_id: str) -> Recorder:
        return Recorder()


def chain_graph() -> TaskGraph:
    graph = TaskGraph()
    graph.add_node(TaskWrapper("a", lambda: 1, register_to_context=False))
    graph.add_node(TaskWrapper("b", lambda: 2, register_to_context=False))
    graph.add_edge("a", "b")
    return graph


def test_default_tracer_is_an_idle_noop_tracer() -> None:
    context = ExecutionContext.create(chain_graph(), "a")
    assert isinstance(context.tracer, NoopTracer)
    assert is_idle(context.tracer)
    assert context.tracer.get_runtime_graph() is None
    assert not is_idle(NoopTracer())  # one with a runtime graph is fed
    context.execute()
    assert context.get_result("b") == 2


def test_hooks_of_a_chain_in_order() -> None:
    tracer = Recorder()
    context = ExecutionContext.create(chain_graph(), "a", tracer=tracer)
    assert context.execute() == 2
    name = tracer.calls[0][1]
    assert tracer.calls == [
        ("workflow_start", name),
        ("task_start", "a"),
        ("task_end", "a", 1, None),
        ("task_start", "b"),
        ("task_end", "b", 2, None),
        ("workflow_end", 2),
    ]
    assert tracer.get_execution_order() == [name, "a", "b"]
    graph = tracer.get_runtime_graph()
    assert graph.nodes["a"]["status"] == "completed"
    assert graph.nodes[name]["metadata"]["session_id"] == context.session_id


def test_a_failing_run_is_reported_before_it_ends() -> None:
    def boom() -> None:
        raise ValueError("no")

    graph = TaskGraph()
    graph.add_node(TaskWrapper("bad", boom, register_to_context=False))
    tracer = Recorder()
    context = ExecutionContext.create(graph, "bad", tracer=tracer)
    with pytest.raises(GraflowRuntimeError):
        context.execute()
    assert [c[0] for c in tracer.calls] == [
        "workflow_start",
        "task_start",
        "task_end",
        "workflow_failed",
        "workflow_end",
    ]
    assert tracer.calls[2] == ("task_end", "bad", None, "ValueError")
    assert tracer.get_runtime_graph().nodes["bad"]["status"] == "failed"


def test_each_retry_is_an_attempt_of_its_own() -> None:
    attempts: list[int] = []
    tracer = Recorder()
    with workflow("retries", tracer=tracer) as wf:

        @task("flaky", max_retries=2, inject_context=True)
        def flaky(ctx: TaskExecutionContext) -> str:
            attempts.append(ctx.retry_count)
            if len(attempts) < 3:
                raise RuntimeError("not yet")
            return "ok"

        wf.execute("flaky")
    ends = [c for c in tracer.calls if c[0] == "task_end"]
    assert ends == [
        ("task_end", "flaky", None, "RuntimeError"),
        ("task_end", "flaky", None, "RuntimeError"),
        ("task_end", "flaky", "ok", None),
    ]
    assert sum(c[0] == "task_start" for c in tracer.calls) == 3


def test_groups_and_dynamic_tasks_are_reported() -> None:
    @task("later")
    def later() -> str:
        return "later"

    @task("spawner", inject_context=True)
    def spawner(ctx: TaskExecutionContext) -> None:
        ctx.next_task(later)

    @task("x")
    def x() -> int:
        return 1

    @task("y")
    def y() -> int:
        return 2

    tracer = Recorder()
    with workflow("groups", tracer=tracer) as wf:
        group = x | y
        _ = spawner >> group
        wf.execute("spawner")
    kinds = [c[0] for c in tracer.calls]
    assert ("dynamic", "later", "spawner", False) in tracer.calls
    start = next(c for c in tracer.calls if c[0] == "group_start")
    assert set(start[2]) == {"x", "y"}
    assert kinds.index("group_start") < kinds.index("group_end")
    started = {c[1] for c in tracer.calls if c[0] == "task_start"}
    assert {"spawner", "later", "x", "y"} <= started


def test_graflow_run_takes_a_tracer_in_process() -> None:
    tracer = Recorder()
    result = graflow.run(chain_graph(), processes=0, tracer=tracer)
    assert result.value == 2
    assert [c[1] for c in tracer.calls if c[0] == "task_start"] == ["a", "b"]


class Spans:
    """Attempt spans that write down what they were given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def start(self, item: WorkItem) -> Any:
        self.events.append(("start", item.task_id, item.trace))
        return item.task_id

    def end(self, token: Any, completion: Completion | None) -> None:
        assert completion is not None
        self.events.append(("end", token, completion.ok))

    def shutdown(self) -> None:
        pass


class WhereTheyRun(Recorder):
    """A tracer that makes attempt spans where attempts run, as the OpenTelemetry one does."""

    traces_attempts_where_they_run = True

    def __init__(self) -> None:
        super().__init__()
        self.spans = Spans()

    def attempt_spans(self) -> Spans:
        return self.spans

    def trace_parent(self) -> str:
        return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_attempt_spans_run_around_each_attempt_with_the_items_trace() -> None:
    tracer = WhereTheyRun()
    context = ExecutionContext.create(chain_graph(), "a", tracer=tracer)
    context.execute()
    parent = tracer.trace_parent()
    assert tracer.spans.events == [
        ("start", "a", parent),
        ("end", "a", True),
        ("start", "b", parent),
        ("end", "b", True),
    ]
    # Its task spans are made where the attempts run, not by driver hooks.
    assert not [c for c in tracer.calls if c[0] in ("task_start", "task_end")]
    assert context.attempt_spans is None  # only while the run lasts


def test_items_of_an_untraced_run_carry_no_trace_context() -> None:
    assert WorkItem(1, "a").trace is None
    item = WorkItem(1, "a", trace="00-ab-cd-01")
    assert WorkItem(*item.as_tuple()) == item


def test_runtime_graph_without_networkx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_graph, "_networkx", lambda: None)
    tracer = NoopTracer()
    tracer.trace_start("wf")
    tracer.span_start("p")
    tracer.span_start("c", parent_name="p")
    tracer.span_end("c", output=3)
    tracer.span_end("ghost")  # never started: nothing recorded
    graph = tracer.get_runtime_graph()
    assert isinstance(graph, runtime_graph.RuntimeGraph)
    assert graph.has_edge("p", "c") and ("p", "c") in graph.edges
    assert graph.edges["p", "c"]["relation"] == "parent-child"
    assert graph.nodes["c"]["status"] == "completed"
    assert "ghost" not in graph
    assert list(graph.predecessors("c")) == ["p"]
    exported = tracer.export_runtime_graph("json")
    assert exported is not None
    assert {n["id"] for n in exported["nodes"]} == {"wf", "p", "c"}
    assert isinstance(exported["nodes"][0]["start_time"], str)
    graphml = tracer.export_runtime_graph("graphml")
    assert graphml is not None and '<edge source="p" target="c">' in graphml["graphml"]
    with pytest.raises(ValueError, match="unsupported"):
        tracer.export_runtime_graph("svg")


def test_clone_keeps_no_graph() -> None:
    tracer = NoopTracer()
    branch = tracer.clone("t1")
    assert branch is not tracer and branch.get_runtime_graph() is None
    assert branch._current_trace_id == "t1"
