"""Prometheus metrics of one ``graflow run``: scraped while it runs, or left in a file for cron.

    scheduler ──on_progress──▶ RunWatch.counters ──read at scrape / write time──▶ RunMetrics
    RunMetrics ──▶ --metrics-port P: an HTTP endpoint for the length of the command
               └─▶ --metrics-file F: written every ``interval_s`` and once more at the end,
                                     atomically (node_exporter's textfile collector reads it)

A batch job is over before a scrape would find it, which is why the file exists: the last
write holds how the run ended (``graflow_run_exit_code``, ``graflow_run_finished_seconds``),
the pattern Prometheus recommends for cron jobs. Every series carries a ``workflow`` label
(the command's target, or ``--metrics-name``), never the run id (a new series per run would
grow without bound): one file per job in the textfile directory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from graflow.exceptions import ConfigError

__all__ = ["RunMetrics", "publishing"]

logger = logging.getLogger(__name__)


class RunMetrics(Collector):
    """The metric families of one run, read from its latest progress counters."""

    def __init__(self, workflow: str, counters: Any) -> None:
        self.workflow = workflow
        self._counters = counters  # a callable returning the latest on_progress counters
        self.started = time.time()
        self.finished: float | None = None
        self.exit_code: int | None = None

    def finish(self, exit_code: int) -> None:
        """Record how the command ended."""
        self.finished = time.time()
        self.exit_code = exit_code

    def collect(self) -> Iterator[Metric]:
        """The families, as of now."""
        c: dict[str, Any] = self._counters() or {}
        # No run id label: one series per cron execution would grow without bound.
        labels, values = ["workflow"], [self.workflow]
        tasks = CounterMetricFamily(
            "graflow_run_tasks",
            "Tasks of the run, by status (retried: attempts after the first).",
            labels=[*labels, "status"],
        )
        for status, key in (("succeeded", "done"), ("failed", "failed"), ("retried", "retries")):
            tasks.add_metric([*values, status], int(c.get(key, 0)))
        yield tasks
        end = self.finished if self.finished is not None else time.time()
        for name, doc, value in (
            ("graflow_run_tasks_running", "Tasks of the run in a worker now.", c.get("running")),
            ("graflow_run_tasks_queued", "Tasks of the run ready to go.", c.get("queued")),
            ("graflow_run_started_seconds", "When the run started (Unix time).", self.started),
            ("graflow_run_elapsed_seconds", "How long the run has taken.", end - self.started),
            ("graflow_run_finished_seconds", "When the run ended (Unix time).", self.finished),
            ("graflow_run_exit_code", "The command's exit code (0: succeeded).", self.exit_code),
        ):
            if value is not None:
                family = GaugeMetricFamily(name, doc, labels=labels)
                family.add_metric(values, float(value))
                yield family


@contextlib.contextmanager
def publishing(
    metrics: RunMetrics,
    *,
    port: int | None = None,
    addr: str = "0.0.0.0",
    path: str | None = None,
    interval_s: float = 15.0,
) -> Iterator[None]:
    """Serve ``metrics`` on ``port`` and/or keep writing them to ``path`` while the block runs.

    The caller records the outcome with ``metrics.finish`` inside the block; the file is
    written once more on the way out, so it ends with the run's outcome.

    Raises:
        ConfigError: the port cannot be listened on, or the file cannot be written.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server = None
    if port is not None:
        try:
            server, _thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen on {addr}: {exc}") from exc
        logger.info("run metrics served at http://%s:%d/metrics", addr, server.server_address[1])
    stop = threading.Event()
    writer = None
    if path is not None:
        _write(path, registry)  # fails early, naming the flag, when the file cannot be written
        writer = threading.Thread(
            target=_keep_writing, args=(path, registry, interval_s, stop), daemon=True
        )
        writer.start()
    try:
        yield
    finally:
        stop.set()
        if writer is not None:
            writer.join(timeout=interval_s + 5)
            with contextlib.suppress(ConfigError):
                _write(path or "", registry)
        if server is not None:
            server.shutdown()
            server.server_close()


def _keep_writing(path: str, registry: CollectorRegistry, interval_s: float, stop: Any) -> None:
    while not stop.wait(interval_s):
        try:
            _write(path, registry)
        except ConfigError as exc:  # a full disk mid-run must not stop the run
            logger.warning("%s", exc)


def _write(path: str, registry: CollectorRegistry) -> None:
    try:
        write_to_textfile(path, registry)  # a temporary file renamed over PATH: atomic
    except OSError as exc:
        raise ConfigError(f"--metrics-file {path}: cannot write it: {exc}") from exc
