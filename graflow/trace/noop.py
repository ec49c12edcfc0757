"""NoopTracer: keeps the runtime graph (when enabled) and emits nothing."""

from __future__ import annotations

from typing import Any

from graflow.trace.base import Tracer

__all__ = ["NoopTracer", "is_idle"]


class NoopTracer(Tracer):
    """A tracer without output: the runtime graph and execution order only.

    A run's context gets ``NoopTracer(enable_runtime_graph=False)`` when none is given; the
    scheduler recognises that one (``is_idle``) and makes no tracer calls at all, so a run
    that is not traced pays nothing for it. Pass ``NoopTracer()`` to keep the runtime graph.
    """

    def _output_trace_start(
        self, name: str, trace_id: str | None, metadata: dict[str, Any] | None
    ) -> None:
        pass

    def _output_trace_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        pass

    def _output_span_start(
        self, name: str, parent_name: str | None, metadata: dict[str, Any] | None
    ) -> None:
        pass

    def _output_span_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        pass

    def _output_event(
        self, name: str, parent_span: str | None, metadata: dict[str, Any] | None
    ) -> None:
        pass

    def _output_attach_to_trace(self, trace_id: str, parent_span_id: str | None) -> None:
        pass

    def clone(self, trace_id: str) -> NoopTracer:
        """A branch's tracer: no runtime graph of its own (the run's tracer keeps it)."""
        branch = NoopTracer(enable_runtime_graph=False)
        branch._current_trace_id = trace_id
        return branch


def is_idle(tracer: Any) -> bool:
    """True if ``tracer`` would record nothing: None, or a NoopTracer without a graph."""
    return tracer is None or (type(tracer) is NoopTracer and tracer._runtime_graph is None)
