"""What a Redis deployment is doing right now: queues, tasks in flight, dead letters, nodes.

Read-only, and cheap enough to run every few seconds: SCAN for queue streams and run
locks (never KEYS), SSCAN over the node index, then one pipelined round trip per queue
and per batch of nodes. Ages come from the server's clock (TIME), so a skewed client
clock does not distort them. Worker figures come from the heartbeat hash each worker
refreshes every lease/3 seconds, so they lag by up to that much.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from graflow.config import RedisTLS
from graflow.exceptions import BackendUnavailable
from graflow.redis import keys
from graflow.redis.connect import connect
from graflow.worker.meter import TaskMeter

__all__ = [
    "ClusterStatus",
    "InFlight",
    "LockStatus",
    "NodeStatus",
    "QueueStatus",
    "WorkerStatus",
    "open_client",
    "queue_names",
    "read_queue",
    "read_status",
    "read_worker_meters",
    "retire_worker",
    "server_time",
    "serving_workers",
    "unavailable_on_error",
]

_SCAN_COUNT = 500
_STALE_BEATS = 3  # a worker silent for this many heartbeat intervals is probably gone


@dataclass(frozen=True)
class InFlight:
    """A task entry claimed by a worker and not yet acknowledged."""

    entry_id: str
    consumer: str
    age_s: float
    """Since the entry was queued (its stream id is its enqueue time)."""
    idle_s: float
    """Since the worker last claimed or touched it (heartbeats reset this)."""
    deliveries: int


@dataclass(frozen=True)
class QueueStatus:
    """One queue: entries waiting, entries in flight, dead letters."""

    name: str
    waiting: int
    in_flight: int
    dead_letters: int
    oldest_in_flight: list[InFlight] = field(default_factory=list)
    in_flight_by_consumer: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerStatus:
    """One worker process, from its node's heartbeat hash."""

    consumer: str
    queue: str | None
    seen_age_s: float
    done: int
    failed: int
    rate_per_s: float | None
    stale: bool
    meter: TaskMeter | None


@dataclass(frozen=True)
class NodeStatus:
    """One live node and its workers."""

    node_id: str
    workers: list[WorkerStatus]


@dataclass(frozen=True)
class LockStatus:
    """A run lock (``graflow run --lock``) held in this Redis."""

    name: str
    holder: str
    ttl_s: float


@dataclass(frozen=True)
class ClusterStatus:
    """Everything ``graflow status`` shows."""

    queues: list[QueueStatus]
    nodes: list[NodeStatus]
    gone_nodes: int
    """Registered nodes whose heartbeat hash expired (stopped or dead)."""
    locks: list[LockStatus]

    @property
    def rate_per_s(self) -> float:
        """Tasks finished per second by live workers, over their last heartbeat interval."""
        return sum(w.rate_per_s or 0.0 for n in self.nodes for w in n.workers if not w.stale)


@contextmanager
def unavailable_on_error(what: str) -> Iterator[None]:
    """Turn a Redis error into BackendUnavailable saying what could not be done."""
    try:
        yield
    except redis.RedisError as exc:
        raise BackendUnavailable(f"{what}: {exc}", cause=exc) from exc


def open_client(url: str, tls: RedisTLS | None = None, timeout_s: float = 5.0) -> Any:
    """A non-decoding client of ``url`` whose calls give up after ``timeout_s``; pinged.

    ConfigError for a malformed URL, BackendUnavailable if Redis does not answer, the
    errors of ``graflow.redis.connect.connect`` if it refuses (none shows the password).
    """
    return connect(url, tls, timeout_s=timeout_s)


def server_time(client: Any) -> float:
    """The Redis server's clock, in seconds since the epoch."""
    secs, micros = client.time()
    return float(secs) + float(micros) / 1e6


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def queue_names(client: Any) -> list[str]:
    """The names of every queue that has a stream in this Redis (SCAN)."""
    names = set()
    for key in client.scan_iter(match=keys.queue_stream_pattern(), count=_SCAN_COUNT):
        name = keys.queue_from_stream(_text(key))
        if name is not None:
            names.add(name)
    return sorted(names)


def read_queue(client: Any, name: str, limit: int = 10) -> QueueStatus:
    """Depth, in-flight entries (the ``limit`` oldest with their ages) and dead letters."""
    stream = keys.queue_stream(name)
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xlen(keys.dead_letters(name))
    length, dead = pipe.execute()
    try:
        summary = client.xpending(stream, keys.queue_group)
        oldest = client.xpending_range(stream, keys.queue_group, "-", "+", limit) if limit else []
    except redis.ResponseError:  # no consumer group yet: no node ever served it
        summary, oldest = {"pending": 0, "consumers": []}, []
    now = server_time(client) if oldest else 0.0  # read after the idle times, never before
    pending = int(summary["pending"])
    return QueueStatus(
        name=name,
        waiting=max(0, int(length) - pending),
        in_flight=pending,
        dead_letters=int(dead),
        oldest_in_flight=[_in_flight(p, now) for p in oldest],
        in_flight_by_consumer={
            _text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or ()
        },
    )


def _in_flight(entry: dict[str, Any], now: float) -> InFlight:
    entry_id = _text(entry["message_id"])
    queued_ms = int(entry_id.split("-", 1)[0])
    return InFlight(
        entry_id=entry_id,
        consumer=_text(entry["consumer"]),
        age_s=max(0.0, now - queued_ms / 1000),
        idle_s=int(entry["time_since_delivered"]) / 1000,
        deliveries=int(entry["times_delivered"]),
    )


def _read_nodes(client: Any, now: float) -> tuple[list[NodeStatus], int]:
    ids = sorted(_text(m) for m in client.sscan_iter(keys.nodes_index(), count=_SCAN_COUNT))
    if not ids:
        return [], 0
    pipe = client.pipeline(transaction=False)
    for node_id in ids:
        pipe.hgetall(keys.node(node_id))
    nodes = []
    for node_id, fields in zip(ids, pipe.execute(), strict=True):
        if fields:
            nodes.append(NodeStatus(node_id, _workers(fields, now)))
    return nodes, len(ids) - len(nodes)


def _workers(fields: dict[Any, Any], now: float) -> list[WorkerStatus]:
    by_consumer: dict[str, dict[str, str]] = {}
    for raw_key, raw_value in fields.items():
        consumer, _, what = _text(raw_key).rpartition(":")
        by_consumer.setdefault(consumer, {})[what] = _text(raw_value)
    return [_worker(consumer, f, now) for consumer, f in sorted(by_consumer.items()) if consumer]


def _worker(consumer: str, fields: dict[str, str], now: float) -> WorkerStatus:
    meter: TaskMeter | None = None
    extra: dict[str, Any] = {}
    if "stats" in fields:
        try:
            meter = TaskMeter.from_json(fields["stats"])
            extra = json.loads(fields["stats"])
        except ValueError:
            meter = None
    age = max(0.0, now - float(fields.get("seen") or 0.0))
    beat_s = float(extra.get("beat_s") or 10.0)
    rate = extra.get("rate_per_s")
    return WorkerStatus(
        consumer=consumer,
        queue=extra.get("queue"),
        seen_age_s=age,
        done=meter.finished if meter else int(fields.get("done") or 0),
        failed=meter.failed if meter else int(fields.get("failed") or 0),
        rate_per_s=float(rate) if rate is not None else None,
        stale=age > _STALE_BEATS * beat_s,
        meter=meter,
    )


def read_worker_meters(client: Any, node_id: str) -> dict[str, TaskMeter]:
    """The task meter each worker of ``node_id`` last published, by consumer name."""
    meters = {}
    for raw_key, raw_value in (client.hgetall(keys.node(node_id)) or {}).items():
        consumer, _, what = _text(raw_key).rpartition(":")
        if what == "stats":
            try:
                meters[consumer] = TaskMeter.from_json(raw_value)
            except ValueError:
                continue
    return meters


def retire_worker(client: Any, node_id: str, consumer: str) -> TaskMeter | None:
    """Remove the meter a worker that died published, and return it (None if it had none)."""
    with unavailable_on_error(f"cannot read worker {consumer}'s counters"):
        meter = read_worker_meters(client, node_id).get(consumer)
        client.hdel(keys.node(node_id), f"{consumer}:stats")
    return meter


def _read_locks(client: Any) -> list[LockStatus]:
    found = sorted(_text(k) for k in client.scan_iter(match=keys.run_lock_pattern()))
    if not found:
        return []
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    locks = []
    for index, key in enumerate(found):
        holder, ttl_ms = replies[2 * index], replies[2 * index + 1]
        if holder is not None:
            name = key[key.index("{lock:") + 6 : -1]
            locks.append(LockStatus(name, _text(holder), max(0, int(ttl_ms)) / 1000))
    return locks


def serving_workers(client: Any, queue: str) -> int:
    """How many workers with a fresh heartbeat serve ``queue`` (or do not say which queue)."""
    nodes, _gone = _read_nodes(client, server_time(client))
    return sum(1 for n in nodes for w in n.workers if not w.stale and w.queue in (queue, None))


def read_status(client: Any, queue: str | None = None) -> ClusterStatus:
    """A snapshot of every queue (or just ``queue``), live node and run lock."""
    with unavailable_on_error("cannot read the status from Redis"):
        return _read_status(client, queue)


def _read_status(client: Any, queue: str | None) -> ClusterStatus:
    now = server_time(client)
    names = [queue] if queue is not None else queue_names(client)
    nodes, gone = _read_nodes(client, now)
    if queue is not None:  # the nodes serving it (and those too old to say what they serve)
        nodes = [n for n in nodes if any(w.queue in (queue, None) for w in n.workers)]
    return ClusterStatus(
        queues=[read_queue(client, name) for name in names],
        nodes=nodes,
        gone_nodes=gone,
        locks=_read_locks(client),
    )
