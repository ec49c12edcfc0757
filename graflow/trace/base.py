"""The tracer interface: what the scheduler tells a tracer about a run.

    scheduler (driver) ── on_workflow_start / on_task_start / on_task_end / ... ──▶ Tracer
                                                                           │ trace_start,
                                                                           │ span_start, ...
                                                     runtime graph ◀───────┤ (kept here)
                                                     _output_* hooks ◀─────┘ (subclasses)

The ``on_*`` hooks are the calls the engine makes; by default they turn into the generic
``trace_start`` / ``trace_end`` / ``span_start`` / ``span_end`` / ``event`` calls, which keep
the runtime graph (when enabled) and hand over to the ``_output_*`` methods a subclass
writes. The names and arguments are those of the upstream Graflow project, so tracers
written for it plug in unchanged.

Where the hooks run: all of them in the driver's scheduler thread, one at a time. A task's
``on_task_start`` comes when the scheduler hands the attempt to its backend and its
``on_task_end`` when the completion is back (in-process that brackets the task itself; on
worker processes or Redis nodes it also covers the hand-over). A tracer whose
``traces_attempts_where_they_run`` is True (the OpenTelemetry tracer) gets no per-task
hooks in the driver: its spans are made where each attempt runs, from the trace context
that travels inside the work item (``graflow.trace.span``).
"""

from __future__ import annotations

import datetime as _dt
import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

from graflow.trace.graph import new_runtime_graph

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable
    from graflow.trace.setup import TraceSetup
    from graflow.trace.span import AttemptSpans

__all__ = ["Tracer"]


def _now() -> _dt.datetime:
    return _dt.datetime.now()


class Tracer(ABC):
    """Base class of tracers: runtime-graph bookkeeping plus output hooks for subclasses.

    Subclasses implement the ``_output_*`` methods and ``clone``; they may override any
    ``on_*`` hook. A tracer serves one run at a time.
    """

    traces_attempts_where_they_run: ClassVar[bool] = False
    """True for tracers that make each attempt's span where it runs (see the module doc)."""

    def __init__(self, enable_runtime_graph: bool = True) -> None:
        self.enable_runtime_graph = enable_runtime_graph
        self._runtime_graph: Any = new_runtime_graph() if enable_runtime_graph else None
        self._execution_order: list[str] = []
        self._current_trace_id: str | None = None
        self._span_stack: list[str] = []

    # -- generic lifecycle: graph bookkeeping, then the subclass's output ---------------
    def trace_start(
        self, name: str, trace_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Open the trace of a run (its root), named ``name``."""
        self._current_trace_id = trace_id
        if self._runtime_graph is not None:
            attrs = {"type": "trace", "trace_id": trace_id, **(metadata or {})}
            self._graph_add(name, attrs)
        self._output_trace_start(name, trace_id, metadata)

    def trace_end(
        self, name: str, output: Any = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Close the trace opened by ``trace_start(name)``."""
        if self._runtime_graph is not None:
            self._graph_close(name, "completed", output, metadata)
        self._output_trace_end(name, output, metadata)

    def span_start(
        self, name: str, parent_name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Open a span ``name`` (a task), under ``parent_name`` when given."""
        if self._runtime_graph is not None:
            self._graph_add(name, {"type": "span", **(metadata or {})})
            if parent_name is not None:
                self._graph_link(parent_name, name, "parent-child")
        self._output_span_start(name, parent_name, metadata)

    def span_end(
        self, name: str, output: Any = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Close span ``name``; a metadata ``error`` marks it failed."""
        if self._runtime_graph is not None:
            failed = bool(metadata and metadata.get("error"))
            self._graph_close(name, "failed" if failed else "completed", output, metadata)
        self._output_span_end(name, output, metadata)

    def event(
        self, name: str, parent_span: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Record a point-in-time event (not part of the runtime graph)."""
        self._output_event(name, parent_span, metadata)

    def attach_to_trace(self, trace_id: str, parent_span_id: str | None = None) -> None:
        """Continue an existing trace (a worker joining the run's trace)."""
        self._current_trace_id = trace_id
        self._output_attach_to_trace(trace_id, parent_span_id)

    # -- what subclasses write ----------------------------------------------------------
    @abstractmethod
    def _output_trace_start(
        self, name: str, trace_id: str | None, metadata: dict[str, Any] | None
    ) -> None:
        """Emit the start of a trace."""

    @abstractmethod
    def _output_trace_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        """Emit the end of a trace."""

    @abstractmethod
    def _output_span_start(
        self, name: str, parent_name: str | None, metadata: dict[str, Any] | None
    ) -> None:
        """Emit the start of a span."""

    @abstractmethod
    def _output_span_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        """Emit the end of a span."""

    @abstractmethod
    def _output_event(
        self, name: str, parent_span: str | None, metadata: dict[str, Any] | None
    ) -> None:
        """Emit an event."""

    @abstractmethod
    def _output_attach_to_trace(self, trace_id: str, parent_span_id: str | None) -> None:
        """Emit (or prepare) the continuation of trace ``trace_id``."""

    @abstractmethod
    def clone(self, trace_id: str) -> Tracer:
        """A tracer for one branch of a run: same outputs, own mutable state, no graph."""

    # -- the engine's hooks -------------------------------------------------------------
    def on_workflow_start(self, workflow_name: str, context: ExecutionContext) -> None:
        """A run starts: open its trace."""
        metadata = {
            "start_node": context.start_node,
            "max_steps": context.max_steps,
            "session_id": context.session_id,
        }
        self.trace_start(workflow_name, trace_id=context.trace_id, metadata=metadata)

    def on_workflow_end(
        self, workflow_name: str, context: ExecutionContext, result: Any = None
    ) -> None:
        """A run ended (``result``: the last root task's value): close its trace."""
        self.trace_end(workflow_name, output=result, metadata={"steps": context.steps})

    def on_workflow_failed(
        self, workflow_name: str, context: ExecutionContext, error: BaseException
    ) -> None:
        """The run is failing with ``error`` (``on_workflow_end`` follows; nothing by default)."""
        return

    def on_task_queued(self, task: Executable, context: ExecutionContext) -> None:
        """A task was put in a queue of the run (nothing by default)."""
        return

    def on_task_start(self, task: Executable, context: ExecutionContext) -> None:
        """An attempt of ``task`` starts: open its span."""
        parent = getattr(context, "current_task_id", None)
        metadata = {
            "task_type": type(task).__name__,
            "handler_type": getattr(task, "handler_type", "direct"),
        }
        self.span_start(task.task_id, parent_name=parent or None, metadata=metadata)

    def on_task_end(
        self,
        task: Executable,
        context: ExecutionContext,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """An attempt of ``task`` ended with ``result`` or ``error``: close its span."""
        metadata: dict[str, Any] = {}
        if error is not None:
            metadata["error"] = str(error)
            metadata["error_type"] = type(error).__name__
        self.span_end(task.task_id, output=result, metadata=metadata)

    def on_parallel_group_start(
        self, group_id: str, member_ids: list[str], context: ExecutionContext
    ) -> None:
        """A parallel group starts: link it to members already in the runtime graph."""
        graph = self._runtime_graph
        if graph is None or group_id not in graph:
            return
        for member_id in member_ids:
            if member_id in graph:
                self._graph_link(group_id, member_id, "parallel-member")

    def on_parallel_group_end(
        self,
        group_id: str,
        member_ids: list[str],
        context: ExecutionContext,
        results: dict[str, Any] | None = None,
    ) -> None:
        """A parallel group finished (nothing by default)."""
        return

    def on_dynamic_task_added(
        self,
        task_id: str,
        parent_task_id: str | None = None,
        is_iteration: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A task created at run time (``next_task``, ``next_iteration``) joined the run."""
        return

    # -- where attempts run (graflow.trace.span) ----------------------------------------
    def attempt_spans(self) -> AttemptSpans | None:
        """What makes attempt spans in this process for in-process runs (None: nothing)."""
        return None

    def trace_parent(self) -> str | None:
        """The trace context work items carry to workers (None: they carry none)."""
        return None

    def worker_setup(self) -> TraceSetup | None:
        """How worker processes export the attempt spans (None: they make none)."""
        return None

    # -- resources ----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what is buffered (nothing by default)."""
        return

    def shutdown(self) -> None:
        """Send what is buffered and release connections (nothing by default)."""
        return

    # -- reading the runtime graph ------------------------------------------------------
    def get_runtime_graph(self) -> Any:
        """The runtime graph (a networkx.DiGraph when installed), or None if disabled."""
        return self._runtime_graph

    def get_execution_order(self) -> list[str]:
        """The trace and span names in the order they started."""
        return list(self._execution_order)

    def get_current_span_id(self) -> str | None:
        """The id of the span open now, if the tracer has such a notion."""
        return None

    def export_runtime_graph(self, format: str = "dict") -> dict[str, Any] | None:
        """The runtime graph as ``"dict"``, ``"json"`` (JSON-safe dict) or ``"graphml"``."""
        graph = self._runtime_graph
        if graph is None:
            return None
        if format == "dict":
            return {
                "nodes": [{"id": n, **graph.nodes[n]} for n in graph.nodes],
                "edges": [{"source": u, "target": v, **graph.edges[u, v]} for u, v in graph.edges],
                "execution_order": list(self._execution_order),
            }
        if format == "json":
            data = self.export_runtime_graph("dict")
            return dict(json.loads(json.dumps(data, default=_json_default)))
        if format == "graphml":
            return {"graphml": _graphml(graph)}
        raise ValueError(f"unsupported runtime graph format {format!r} (dict, json, graphml)")

    # -- bookkeeping ----------------------------------------------------------------------
    def _graph_add(self, node_id: str, metadata: dict[str, Any]) -> None:
        self._runtime_graph.add_node(
            node_id, status="running", start_time=_now(), metadata=dict(metadata)
        )
        self._execution_order.append(node_id)

    def _graph_close(
        self, node_id: str, status: str, output: Any, metadata: dict[str, Any] | None
    ) -> None:
        graph = self._runtime_graph
        if node_id not in graph:
            return  # closing what never opened: nothing to record
        data = graph.nodes[node_id]
        data["status"] = status
        data["end_time"] = _now()
        data.setdefault("metadata", {}).update(
            {"output": str(output) if output else None, **(metadata or {})}
        )

    def _graph_link(self, parent: str, child: str, relation: str) -> None:
        graph = self._runtime_graph
        if parent in graph and child in graph:
            graph.add_edge(parent, child, relation=relation)


def _json_default(value: Any) -> str:
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _graphml(graph: Any) -> str:
    """GraphML text of ``graph`` (attributes flattened to strings)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
        '  <key id="status" for="node" attr.name="status" attr.type="string"/>',
        '  <key id="relation" for="edge" attr.name="relation" attr.type="string"/>',
        '  <graph edgedefault="directed">',
    ]
    for node_id in graph.nodes:
        status = str(graph.nodes[node_id].get("status", ""))
        node = quoteattr(str(node_id))
        lines.append(f'    <node id={node}><data key="status">{escape(status)}</data></node>')
    for u, v in graph.edges:
        relation = str(graph.edges[u, v].get("relation", ""))
        lines.append(
            f"    <edge source={quoteattr(str(u))} target={quoteattr(str(v))}>"
            f'<data key="relation">{escape(relation)}</data></edge>'
        )
    lines += ["  </graph>", "</graphml>"]
    return "\n".join(lines)
