"""Prometheus metrics of a node, served by its supervisor (``graflow supervisor --metrics-port``).

    worker i ──heartbeat (every lease/3): HSET node:<id> <consumer>:stats <TaskMeter JSON>
    supervisor ──scrape──▶ NodeMetrics.collect: HGETALL node:<id>, XLEN/XPENDING of the queue
               └─ worker died ─▶ fold its last meter into ``retired``, HDEL it, count the death

No prometheus_client multiprocess mode (and no PROMETHEUS_MULTIPROC_DIR): worker processes
never touch prometheus_client; they publish plain counters in the heartbeat they write
anyway, and the one process that serves HTTP adds them up at scrape time. Counters stay
monotonic across worker restarts: a dead worker's last meter joins ``retired`` before its
replacement starts under the same name. The price: figures lag by up to one heartbeat,
and what a worker counted after its last heartbeat and before dying is lost.

The HTTP server runs on a thread of the supervisor, which forks workers later: each child
closes its copy of the listening socket at once (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from graflow.exceptions import BackendUnavailable
from graflow.redis.status import (
    read_queue,
    read_worker_meters,
    retire_worker,
    unavailable_on_error,
)
from graflow.worker.meter import DURATION_BUCKETS_S, TaskMeter

__all__ = ["NodeMetrics", "serve_metrics"]

logger = logging.getLogger(__name__)

_STATUSES = ("started", "succeeded", "failed", "retried")


class NodeMetrics(Collector):
    """Collects one node's metrics at scrape time; also its supervisor's NodeObserver."""

    def __init__(self, client: Any, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.node_id = ""
        self.deaths = 0
        self.retired = TaskMeter()
        self._last: dict[str, TaskMeter] = {}
        self._lock = threading.Lock()

    # -- NodeObserver -----------------------------------------------------------------
    def node_started(self, node_id: str) -> None:
        """Learn the node's id (the key of its heartbeat hash)."""
        self.node_id = node_id

    def worker_died(self, consumer: str, exitcode: int | None) -> None:
        """Keep the dead worker's counts; a non-zero exit counts as a death."""
        with self._lock:
            if exitcode != 0:
                self.deaths += 1
            try:
                meter = retire_worker(self.client, self.node_id, consumer)
            except BackendUnavailable as exc:  # keep what the last scrape saw
                logger.warning("metrics: %s", exc)
                meter = self._last.get(consumer)
            if meter is not None:
                self.retired.add(meter)
            self._last.pop(consumer, None)

    # -- Collector --------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """The metric families, read from Redis now."""
        with self._lock:
            up, total, depth = self._read()
            deaths = self.deaths
        yield from self._task_families(total)
        yield CounterMetricFamily(
            "graflow_worker_deaths",
            "Worker processes of this node that exited with an error.",
            value=deaths,
        )
        labels = ["queue"]
        yield _gauge("graflow_redis_up", "1 if Redis answered this scrape.", [], [([], up)])
        for name, doc, key in (
            ("graflow_queue_depth", "Entries waiting in the queue stream.", "waiting"),
            ("graflow_tasks_in_flight", "Entries claimed by a worker, not yet done.", "in_flight"),
            ("graflow_dead_letters", "Entries in the queue's dead-letter stream.", "dead_letters"),
        ):
            if key in depth:
                yield _gauge(name, doc, labels, [([self.queue], depth[key])])

    def _read(self) -> tuple[int, TaskMeter, dict[str, int]]:
        total = TaskMeter()
        total.add(self.retired)
        try:
            with unavailable_on_error("cannot read the node's counters"):
                meters = read_worker_meters(self.client, self.node_id)
                queue = read_queue(self.client, self.queue, limit=0)
        except BackendUnavailable as exc:  # serve what is known
            logger.debug("metrics: %s", exc)
            for meter in self._last.values():
                total.add(meter)
            return 0, total, {}
        for consumer, meter in meters.items():
            last = self._last.get(consumer)
            if last is not None and meter.is_behind(last):
                self.retired.add(last)  # restarted without us seeing it die
                total.add(last)
            self._last[consumer] = meter
            total.add(meter)
        depth = {
            "waiting": queue.waiting,
            "in_flight": queue.in_flight,
            "dead_letters": queue.dead_letters,
        }
        return 1, total, depth

    def _task_families(self, total: TaskMeter) -> Iterator[Metric]:
        tasks = CounterMetricFamily(
            "graflow_tasks",
            "Tasks run by this node's workers, by status (retried: attempts after the first).",
            labels=["queue", "status"],
        )
        for status in _STATUSES:
            tasks.add_metric([self.queue, status], getattr(total, status))
        yield tasks
        histogram = HistogramMetricFamily(
            "graflow_task_duration_seconds",
            "How long tasks ran in a worker.",
            labels=["queue"],
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*DURATION_BUCKETS_S, float("inf")), total.buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        histogram.add_metric([self.queue], buckets, sum_value=total.duration_sum_s)
        yield histogram


def _gauge(
    name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def serve_metrics(collector: NodeMetrics, addr: str, port: int) -> int:
    """Serve ``collector`` at ``http://addr:port/metrics`` on a daemon thread; the bound port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    sock = server.socket

    def close_in_child() -> None:
        with contextlib.suppress(OSError):
            sock.close()

    os.register_at_fork(after_in_child=close_in_child)
    bound: int = server.server_address[1]
    return bound
