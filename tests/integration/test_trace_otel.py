"""OpenTelemetry traces of real runs, exported over OTLP/HTTP to a receiver on loopback.

One workflow (tests/integration/trace_flows.py) runs in-process, on a process pool, on a
Redis node, and through the ``graflow`` command with GRAFLOW_TRACER=otel; each time the
receiver must get one trace whose root is the run and whose task spans (one per attempt)
are children of it, with task id, attempt, worker and outcome.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs graflow[otel]")
pytest.importorskip("opentelemetry.proto", reason="needs graflow[otel]")

import graflow
from graflow.trace.otel import OpenTelemetryTracer
from tests.conftest import RedisNode, RedisServer
from tests.integration import trace_flows
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

REPO = Path(__file__).resolve().parents[2]
START = "prepare"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def check_trace(spans: list[ReceivedSpan], *, inner_span: bool) -> dict[str, list[ReceivedSpan]]:
    """Assert the shape every traced run of trace_flows has; return the task spans by id."""
    assert len({s.trace_id for s in spans}) == 1, "every span belongs to the run's trace"
    roots = [s for s in spans if not s.parent_span_id]
    assert [r.name for r in roots] == ["run traced"]
    root = roots[0]
    assert root.attributes["graflow.workflow"] == "traced"
    assert root.attributes["graflow.outcome"] == "succeeded"
    assert root.status_code != 2
    tasks: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        if span.name.startswith("task "):
            assert span.parent_span_id == root.span_id, f"{span.name} hangs under the run"
            tasks.setdefault(span.attributes["graflow.task_id"], []).append(span)
    assert sorted(tasks) == ["finish", "flaky", "left", "prepare", "right"]
    for task_id, attempts in tasks.items():
        assert all(s.name == f"task {task_id}" and s.attributes["graflow.worker"] for s in attempts)
    flaky = sorted(tasks["flaky"], key=lambda s: s.attributes["graflow.attempt"])
    assert [s.attributes["graflow.attempt"] for s in flaky] == [1, 2]
    assert [s.attributes["graflow.outcome"] for s in flaky] == ["failed", "succeeded"]
    assert flaky[0].status_code == 2 and "exception" in flaky[0].events
    for task_id in ("prepare", "left", "right", "finish"):
        assert [s.attributes["graflow.outcome"] for s in tasks[task_id]] == ["succeeded"]
    inner = [s for s in spans if s.name == trace_flows.INNER_SPAN]
    if inner_span:
        # The task's span is current while it runs: spans the task makes nest under it.
        assert len(inner) == 1 and inner[0].parent_span_id == tasks["left"][0].span_id
    expected = 1 + trace_flows.TASK_SPANS + len(inner)
    assert len(spans) == expected, Counter(s.name for s in spans)
    return tasks


def test_in_process_run_is_one_trace(receiver: OtlpReceiver) -> None:
    tracer = OpenTelemetryTracer(endpoint=receiver.url)
    try:
        result = graflow.run(trace_flows.build(), start=START, processes=0, tracer=tracer)
    finally:
        tracer.shutdown()
    assert result.value == "done"
    spans = receiver.wait_for(1 + trace_flows.TASK_SPANS)
    tasks = check_trace(spans, inner_span=False)
    assert {s.resource["process.pid"] for t in tasks.values() for s in t} == {os.getpid()}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_pool_run_joins_the_workers_spans_to_the_run(
    receiver: OtlpReceiver, start_method: str
) -> None:
    tracer = OpenTelemetryTracer(endpoint=receiver.url, service_name="graflow-tests")
    try:
        result = graflow.run(
            trace_flows.build(),
            start=START,
            processes=2,
            start_method=start_method,
            tracer=tracer,
        )
    finally:
        tracer.shutdown()
    assert result.value == "done"
    spans = receiver.wait_for(2 + trace_flows.TASK_SPANS)
    tasks = check_trace(spans, inner_span=True)
    pids = {s.resource["process.pid"] for t in tasks.values() for s in t}
    assert os.getpid() not in pids, "the attempts ran (and were traced) in worker processes"
    assert {s.resource["service.name"] for s in spans} == {"graflow-tests"}


def test_redis_node_spans_join_the_producers_trace(
    receiver: OtlpReceiver, redis_server: RedisServer
) -> None:
    if not redis_server.is_running():
        redis_server.start()
    extra = ("--tracer", "otel", "--otlp-endpoint", receiver.url)
    node = RedisNode(redis_server.url, f"q-{uuid.uuid4().hex[:12]}", extra_args=extra).start()
    tracer = OpenTelemetryTracer(endpoint=receiver.url)
    try:
        result = graflow.run(
            trace_flows.build(),
            start=START,
            redis=redis_server.url,
            queue=node.queue,
            tracer=tracer,
        )
        assert result.value == "done"
        spans = receiver.wait_for(2 + trace_flows.TASK_SPANS)
        node_pids = set(node.worker_pids())
    finally:
        tracer.shutdown()
        node.stop()
    tasks = check_trace(spans, inner_span=True)
    for attempts in tasks.values():
        for span in attempts:
            assert span.resource["process.pid"] in node_pids
            assert ":" in span.attributes["graflow.worker"]  # the node's consumer name


def test_the_command_traces_a_run_when_the_environment_says_so(receiver: OtlpReceiver) -> None:
    env = {
        **os.environ,
        "GRAFLOW_TRACER": "otel",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "graflow",
            "run",
            "tests/integration/trace_flows.py:traced",
            "--processes",
            "2",
            "--start",
            START,
            "--quiet",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    check_trace(receiver.wait_for(2 + trace_flows.TASK_SPANS), inner_span=True)


def test_a_reused_pool_traces_with_the_setup_it_was_started_with(
    receiver: OtlpReceiver,
) -> None:
    tracer = OpenTelemetryTracer(endpoint=receiver.url)
    try:
        with graflow.Supervisor(2, tracing=tracer.worker_setup()) as pool:
            for _ in range(2):
                assert pool.run(trace_flows.build(), start=START, tracer=tracer).value == "done"
    finally:
        tracer.shutdown()
    spans = receiver.wait_for(2 * (2 + trace_flows.TASK_SPANS))
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    assert len(by_trace) == 2, "one trace per run"
    for run_spans in by_trace.values():
        check_trace(run_spans, inner_span=True)


def test_tracer_off_sends_nothing(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFLOW_TRACER", "otel")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    result = graflow.run(trace_flows.build(), start=START, processes=0, tracer="off")
    assert result.value == "done"
    # The same run traced by the environment: its spans arrive, and they are all there is.
    graflow.run(trace_flows.build(), start=START, processes=0)
    spans = receiver.wait_for(1 + trace_flows.TASK_SPANS)
    check_trace(spans, inner_span=False)


def test_a_collector_that_is_down_loses_spans_not_the_run() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1/traces"
    tracer = OpenTelemetryTracer(endpoint=url)
    try:
        result = graflow.run(trace_flows.build(), start=START, processes=2, tracer=tracer)
    finally:
        tracer.shutdown()
    assert result.value == "done"
    assert result.stats.worker_deaths == 0
