"""How a process exports its spans (TraceSetup), and starting that in a worker process.

A TraceSetup is plain data: it travels from the edge (``graflow.run(tracer=...)``, the CLI's
``--tracer otel``, ``GRAFLOW_TRACER=otel``) to every worker process, which builds its own
exporter from it after fork (an exporter's threads and connections do not survive a fork)
and shuts it down, sending what is left, before it exits::

    edge ── TraceSetup ──▶ Supervisor / node ──▶ worker process:
                                                   spans = start_attempt_spans(setup, name)
                                                   ... run_item(...) opens a span per attempt
                                                   spans.shutdown()   (flush, then exit)

Nothing here imports OpenTelemetry: that happens in ``graflow.trace.otel``, loaded only
when a setup is given, so an untraced worker never pays for it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from graflow.exceptions import ConfigError

if TYPE_CHECKING:
    from graflow.trace.base import Tracer
    from graflow.trace.span import AttemptSpans

__all__ = [
    "TRACERS",
    "TraceSetup",
    "check_otel_installed",
    "open_tracer",
    "start_attempt_spans",
]

TRACERS = ("off", "otel")
"""The values of ``--tracer`` / ``GRAFLOW_TRACER``."""


@dataclass(frozen=True)
class TraceSetup:
    """Where a process sends its spans over OTLP/HTTP.

    ``endpoint`` is the traces URL (e.g. ``http://collector:4318/v1/traces``); None takes
    the exporter's default, ``http://localhost:4318/v1/traces``.
    """

    endpoint: str | None = None
    service_name: str = "graflow"

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"OTLP endpoint {self.endpoint!r} must be an http:// or https:// URL "
                "(--otlp-endpoint / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
            )
        if not self.service_name:
            raise ConfigError("the service name of traces must not be empty (OTEL_SERVICE_NAME)")


def check_otel_installed() -> None:
    """Raise ConfigError unless the ``graflow[otel]`` extra is installed."""
    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(
                f"tracing with OpenTelemetry needs {module}: pip install 'graflow[otel]'"
            )


def open_tracer(setup: TraceSetup) -> Tracer:
    """An OpenTelemetryTracer sending to ``setup`` that stops its exporter after each run."""
    check_otel_installed()
    otel = importlib.import_module("graflow.trace.otel")
    tracer: Tracer = otel.OpenTelemetryTracer(
        setup.endpoint, setup.service_name, shutdown_after_run=True
    )
    return tracer


def start_attempt_spans(setup: TraceSetup | None, worker: str) -> AttemptSpans | None:
    """This process's attempt spans for ``setup`` (None: not traced); call after fork.

    ``worker`` names this process in every span (``graflow.worker``).
    """
    if setup is None:
        return None
    otel = importlib.import_module("graflow.trace.otel")
    spans: AttemptSpans = otel.process_attempt_spans(setup, worker)
    return spans
