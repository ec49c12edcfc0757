"""OpenTelemetryTracer: a run as one trace, each task attempt a span, across processes and hosts.

    driver                                      worker process (pool or Redis node)
    ──────                                      ───────────────────────────────────
    on_workflow_start: span "run NAME"  ──────▶ WorkItem.trace = traceparent of that span
       (root; run id, workflow, start node)     OtelAttemptSpans.start(item):
                                                  span "task ID", child of the run span
                                                  (task id, attempt, worker), current while
                                                  the task runs, so spans the task makes
                                                  nest under it
                                                OtelAttemptSpans.end: outcome, error status
    on_workflow_end: outcome, steps; end;       each process exports with its own
       flush the driver's spans                 BatchSpanProcessor over OTLP/HTTP

In-process runs make the attempt spans in the driver, with the tracer's own provider. A
worker process builds its provider from the run's TraceSetup after fork
(``graflow.trace.setup``) and shuts it down, sending what is left, before it exits.

Needs the ``graflow[otel]`` extra (opentelemetry-api, -sdk, and the OTLP/HTTP exporter).
"""

from __future__ import annotations

import copy
import os
import socket
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from graflow.core.spec import Completion, WorkItem
from graflow.trace.base import Tracer
from graflow.trace.setup import TraceSetup

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext

__all__ = ["OpenTelemetryTracer", "OtelAttemptSpans", "build_provider", "process_attempt_spans"]

_SCOPE = "graflow"
_PROPAGATOR = TraceContextTextMapPropagator()
# Spans wait at most this long in a process before they are sent (the SDK's default is 5 s;
# a short run's worker spans should reach the collector about when the run ends).
_EXPORT_DELAY_MS = 500
# A collector that is down must not hold up a run or a worker's exit for long: an export
# gives up (its spans are dropped, and the SDK logs it) after this long.
_EXPORT_TIMEOUT_S = 2.0
_FLUSH_TIMEOUT_MS = 3_000


def build_provider(setup: TraceSetup) -> TracerProvider:
    """A TracerProvider that batches spans to ``setup.endpoint`` over OTLP/HTTP."""
    resource = Resource.create(
        {
            "service.name": setup.service_name,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=setup.endpoint, timeout=_EXPORT_TIMEOUT_S)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=_EXPORT_DELAY_MS)
    )
    return provider


def traceparent_of(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span`` (None if it is not a valid, recording context)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=otel_trace.set_span_in_context(span))
    return carrier.get("traceparent")


class OtelAttemptSpans:
    """Opens one span per attempt run in this process, as a child of the item's run span."""

    def __init__(
        self, tracer: otel_trace.Tracer, worker: str, provider: TracerProvider | None = None
    ) -> None:
        self.tracer = tracer
        self.worker = worker
        self.provider = provider  # owned (a worker process's), shut down with it
        self._parent: tuple[str, otel_context.Context] | None = None

    def _parent_context(self, traceparent: str) -> otel_context.Context:
        # The items of a run all carry the same traceparent: parse it once.
        cached = self._parent
        if cached is not None and cached[0] == traceparent:
            return cached[1]
        parsed = _PROPAGATOR.extract({"traceparent": traceparent})
        self._parent = (traceparent, parsed)
        return parsed

    def start(self, item: WorkItem) -> Any:
        """Open ``item``'s span under its run's span and make it current in this thread."""
        assert item.trace is not None
        span = self.tracer.start_span(
            f"task {item.task_id}",
            context=self._parent_context(item.trace),
            kind=SpanKind.INTERNAL,
            attributes={
                "graflow.task_id": item.task_id,
                "graflow.attempt": item.attempt + 1,
                "graflow.cycle": item.cycle_count,
                "graflow.worker": self.worker,
            },
        )
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        return span, token

    def end(self, token: Any, completion: Completion | None) -> None:
        """Record the attempt's outcome on its span and close it."""
        span, context_token = token
        otel_context.detach(context_token)
        if completion is None:
            span.set_attribute("graflow.outcome", "interrupted")
            span.set_status(Status(StatusCode.ERROR, "interrupted"))
        elif completion.ok:
            span.set_attribute("graflow.outcome", "succeeded")
        else:
            span.set_attribute("graflow.outcome", "failed")
            error = completion.error
            if error is not None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def shutdown(self) -> None:
        """Send the spans still buffered (a worker process is about to exit)."""
        if self.provider is not None:
            self.provider.shutdown()


def process_attempt_spans(setup: TraceSetup, worker: str) -> OtelAttemptSpans:
    """Attempt spans of a worker process, with an exporter of its own (after fork).

    The provider also becomes the process's global one unless something set one already, so
    spans that tasks (or the libraries they call) make with the OpenTelemetry API are sent
    too, nested under their attempt's span.
    """
    provider = build_provider(setup)
    if isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
        otel_trace.set_tracer_provider(provider)
    return OtelAttemptSpans(provider.get_tracer(_SCOPE), worker, provider)


class OpenTelemetryTracer(Tracer):
    """Traces runs with OpenTelemetry: a root span per run, a child span per task attempt.

    Spans go over OTLP/HTTP to ``endpoint`` (default ``http://localhost:4318/v1/traces``)
    from the driver and from every worker process; ``service_name`` is the resource's
    ``service.name``. With ``provider`` the driver's spans go to that TracerProvider instead
    (worker processes still export to ``endpoint``). A run started inside a span of the
    caller becomes its child.

    The driver's exporter starts with the first run; ``shutdown()`` stops it (a later run
    starts another), and ``shutdown_after_run`` does so at the end of every run.
    """

    traces_attempts_where_they_run = True

    def __init__(
        self,
        endpoint: str | None = None,
        service_name: str = "graflow",
        *,
        provider: TracerProvider | None = None,
        enable_runtime_graph: bool = False,
        shutdown_after_run: bool = False,
    ) -> None:
        super().__init__(enable_runtime_graph=enable_runtime_graph)
        self.setup = TraceSetup(endpoint, service_name)
        self._given_provider = provider
        self._provider: TracerProvider | None = provider
        self.shutdown_after_run = shutdown_after_run
        self._root: Span | None = None
        self._traceparent: str | None = None
        self._spans: dict[str, Span] = {}  # spans opened by name (span_start)

    def __reduce__(self) -> Any:
        # A provider holds threads and connections: a pickled tracer (a saved context)
        # comes back as a new one sending to the same place.
        return (_rebuild, (self.setup.endpoint, self.setup.service_name))

    @property
    def provider(self) -> TracerProvider:
        """The driver's TracerProvider (made on first use unless one was given)."""
        if self._provider is None:
            self._provider = build_provider(self.setup)
        return self._provider

    @property
    def _tracer(self) -> otel_trace.Tracer:
        return self.provider.get_tracer(_SCOPE)

    # -- the run's root span ------------------------------------------------------------
    def on_workflow_start(self, workflow_name: str, context: ExecutionContext) -> None:
        """Open the run's root span (a child of the caller's current span, if any)."""
        self.trace_start(
            workflow_name,
            trace_id=context.trace_id,
            metadata={
                "graflow.run_id": context.session_id,
                "graflow.workflow": workflow_name,
                "graflow.start_node": str(context.start_node),
            },
        )

    def on_workflow_failed(
        self, workflow_name: str, context: ExecutionContext, error: BaseException
    ) -> None:
        """Mark the run's span failed with ``error``."""
        root = self._root
        if root is not None:
            root.record_exception(error)
            root.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            root.set_attribute("graflow.outcome", "failed")

    def on_workflow_end(
        self, workflow_name: str, context: ExecutionContext, result: Any = None
    ) -> None:
        """Close the run's span and send the driver's spans."""
        root = self._root
        if root is not None:
            root.set_attribute("graflow.steps", context.steps)
            if root.is_recording() and not _has_error(root):
                root.set_attribute("graflow.outcome", "succeeded")
        super().on_workflow_end(workflow_name, context, result)
        if self.shutdown_after_run:
            self.shutdown()
        else:
            self.flush()

    def on_dynamic_task_added(
        self,
        task_id: str,
        parent_task_id: str | None = None,
        is_iteration: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """An event on the run's span."""
        if self._root is not None:
            attributes: dict[str, str | bool] = {
                "graflow.task_id": task_id,
                "graflow.iteration": is_iteration,
            }
            if parent_task_id is not None:
                attributes["graflow.parent_task_id"] = parent_task_id
            self._root.add_event("dynamic task added", attributes)

    # -- where attempts run -----------------------------------------------------------
    def trace_parent(self) -> str | None:
        """The run span's traceparent, for work items."""
        return self._traceparent

    def attempt_spans(self) -> OtelAttemptSpans:
        """Attempt spans for tasks run in this process (in-process runs)."""
        return OtelAttemptSpans(self._tracer, f"{socket.gethostname()}:{os.getpid()}")

    def worker_setup(self) -> TraceSetup:
        """What worker processes build their exporter from."""
        return self.setup

    def get_current_span_id(self) -> str | None:
        """The run span's id, in hex."""
        if self._root is None:
            return None
        return format(self._root.get_span_context().span_id, "016x")

    # -- output of the generic lifecycle --------------------------------------------------
    def _output_trace_start(
        self, name: str, trace_id: str | None, metadata: dict[str, Any] | None
    ) -> None:
        attributes = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
        self._root = self._tracer.start_span(
            f"run {name}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self._traceparent = traceparent_of(self._root)

    def _output_trace_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        if self._root is not None:
            self._root.end()
        self._root = None
        self._traceparent = None

    def _output_span_start(
        self, name: str, parent_name: str | None, metadata: dict[str, Any] | None
    ) -> None:
        parent = self._spans.get(parent_name or "") or self._root
        context = otel_trace.set_span_in_context(parent) if parent is not None else None
        attributes = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
        self._spans[name] = self._tracer.start_span(name, context=context, attributes=attributes)

    def _output_span_end(self, name: str, output: Any, metadata: dict[str, Any] | None) -> None:
        span = self._spans.pop(name, None)
        if span is None:
            return
        error = (metadata or {}).get("error")
        if error:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    def _output_event(
        self, name: str, parent_span: str | None, metadata: dict[str, Any] | None
    ) -> None:
        span = self._spans.get(parent_span or "") or self._root
        if span is not None:
            attributes = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
            span.add_event(name, attributes)

    def _output_attach_to_trace(self, trace_id: str, parent_span_id: str | None) -> None:
        pass  # workers join a trace through the work item's traceparent instead

    def clone(self, trace_id: str) -> OpenTelemetryTracer:
        """A branch's tracer: the same provider and run span, its own named spans."""
        branch = copy.copy(self)
        branch._spans = {}
        branch._runtime_graph = None
        branch.enable_runtime_graph = False
        branch._execution_order = []
        branch.shutdown_after_run = False
        branch._given_provider = self.provider  # the branch never stops it
        branch._provider = self.provider
        return branch

    # -- resources ----------------------------------------------------------------------
    def flush(self) -> None:
        """Send the driver's buffered spans now."""
        if self._provider is not None:
            self._provider.force_flush(_FLUSH_TIMEOUT_MS)

    def shutdown(self) -> None:
        """Send what is buffered and stop the exporter this tracer made (a given provider
        is only flushed)."""
        provider = self._provider
        if provider is None:
            return
        if provider is self._given_provider:
            provider.force_flush(_FLUSH_TIMEOUT_MS)
            return
        provider.shutdown()
        self._provider = None


def _rebuild(endpoint: str | None, service_name: str) -> OpenTelemetryTracer:
    return OpenTelemetryTracer(endpoint, service_name)


def _has_error(span: Span) -> bool:
    status = getattr(span, "status", None)
    return status is not None and status.status_code is StatusCode.ERROR
