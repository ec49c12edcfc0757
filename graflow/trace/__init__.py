"""Tracing runs: the tracer interface, NoopTracer, and an OpenTelemetry tracer.

``Tracer`` (graflow.trace.base) is the interface the engine calls, with the names of the
upstream Graflow project; ``NoopTracer`` (graflow.trace.noop) records the runtime graph and
nothing else. The OpenTelemetry tracer lives in ``graflow.trace.otel`` and needs the
``graflow[otel]`` extra.
"""

from __future__ import annotations

from graflow.trace.base import Tracer
from graflow.trace.noop import NoopTracer

__all__ = ["NoopTracer", "Tracer"]
