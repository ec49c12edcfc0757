"""Switching tracing on: Settings, TraceSetup, graflow.run(tracer=...) and the CLI flags."""

from __future__ import annotations

import pickle

import pytest

import graflow
from graflow.cli import main
from graflow.config import Settings
from graflow.core.graph import TaskGraph
from graflow.core.task import TaskWrapper
from graflow.exceptions import ConfigError
from graflow.runner import tracer_of
from graflow.trace.setup import TraceSetup, start_attempt_spans


def test_tracing_is_off_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.tracer == "off"
    assert settings.trace_setup is None
    assert start_attempt_spans(None, "w") is None


def test_the_environment_switches_tracing_on() -> None:
    settings = Settings.from_env(
        {
            "GRAFLOW_TRACER": "OTel",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "nightly",
        }
    )
    assert settings.tracer == "otel"
    assert settings.trace_setup == TraceSetup("http://collector:4318/v1/traces", "nightly")
    traces = Settings.from_env(
        {
            "GRAFLOW_TRACER": "otel",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/traces",
        }
    )
    assert traces.otlp_endpoint == "https://c/traces"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GRAFLOW_TRACER": "jaeger"}, "GRAFLOW_TRACER must be one of off, otel"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, "http:// or https://"),
    ],
)
def test_bad_tracing_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_graflow_run_refuses_an_unknown_tracer_name() -> None:
    graph = TaskGraph()
    graph.add_node(TaskWrapper("a", lambda: 1, register_to_context=False))
    with pytest.raises(ConfigError, match="tracer must be a Tracer or one of off, otel"):
        graflow.run(graph, processes=0, tracer="zipkin")
    assert tracer_of("off") is None


def test_graflow_run_follows_graflow_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from graflow.trace.otel import OpenTelemetryTracer  # noqa: PLC0415 - needs the extra

    monkeypatch.setenv("GRAFLOW_TRACER", "otel")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    tracer = tracer_of(None)
    assert isinstance(tracer, OpenTelemetryTracer)
    assert tracer.shutdown_after_run  # made for one run: it stops its exporter afterwards
    assert tracer.worker_setup() == TraceSetup("http://127.0.0.1:9/v1/traces", "graflow")
    monkeypatch.setenv("GRAFLOW_TRACER", "off")
    assert tracer_of(None) is None


def test_an_otel_tracer_pickles_as_its_setup() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from graflow.trace.otel import OpenTelemetryTracer  # noqa: PLC0415 - needs the extra

    tracer = OpenTelemetryTracer("http://127.0.0.1:9/v1/traces", "svc")
    copy = pickle.loads(pickle.dumps(tracer))
    assert isinstance(copy, OpenTelemetryTracer) and copy is not tracer
    assert copy.worker_setup() == tracer.worker_setup()
    tracer.shutdown()
    copy.shutdown()


def test_the_command_checks_the_endpoint_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["run", "tests/integration/cli_flows.py:ok", "--processes", "0", "--tracer", "otel",
         "--otlp-endpoint", "ftp://nowhere"]
    )  # fmt: skip
    assert code == 2
    assert "http:// or https://" in capsys.readouterr().err
