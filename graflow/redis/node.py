"""A graflow node: worker processes that serve a Redis queue.

    node supervisor (one per host/container)
      ├── worker 0 ─┐   XREADGROUP (blocks on Redis) → verify → run → XADD done → XACK+XDEL
      ├── worker 1 ─┤     (the writes of one batch and the next XREADGROUP: one round trip;
      │             │      a chain's conditional items run after a clean predecessor)
      │             │   heartbeat thread: XCLAIM own pending JUSTID every lease/3
      └── worker N ─┘   every few seconds: XPENDING IDLE > lease → reclaim, or dead-letter

A worker never unpickles a blob whose signature does not verify: undecodable, unsigned,
forged or version-skewed entries go to the dead-letter stream with the reason, and the
worker goes on. An entry delivered ``max_deliveries`` times (its workers keep dying) is
dead-lettered too, and the run is told with a WorkerLost completion.

Shutdown (SIGTERM or SIGINT to the node): each worker stops claiming at once, finishes
the entry in hand if it can within the grace period, and hands back the rest (re-added to
the stream, available immediately). Redis going away: back off (up to 5 s) and resume.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Protocol

import redis

from graflow.config import RedisTLS
from graflow.core import codec
from graflow.core.handler import TaskHandler
from graflow.core.spec import Completion, Outcome, OutcomeKind, WorkItem
from graflow.core.task import ASYNC_LANE, CPU_LANE
from graflow.core.workflow import clear_workflow_context
from graflow.exceptions import (
    BackendUnavailable,
    PoisonMessage,
    TaskError,
    TaskTimeoutError,
    WorkerLost,
)
from graflow.redis import keys
from graflow.redis.backend import RUN_TTL_S, Pickled, StoredValue
from graflow.redis.channel import Encoded, RedisChannel
from graflow.redis.connect import (
    OUTAGE_ERRORS,
    RedisClient,
    client,
    is_passing,
    refresh_after_outage,
)
from graflow.redis.queue import QueueEntry, RedisTaskQueue
from graflow.redis.runs import UnloadableRun, fetch_nodes, fetch_run
from graflow.redis.signing import Signer
from graflow.trace.setup import TraceSetup, start_attempt_spans
from graflow.trace.span import AttemptSpans
from graflow.worker.loop import DEFAULT_MAX_ASYNC, DEFAULT_THREADS, Batch, Room, WorkLoop
from graflow.worker.meter import TaskMeter
from graflow.worker.runtime import RunState

__all__ = ["NodeObserver", "NodeSettings", "RedisWorker", "run_node"]

logger = logging.getLogger(__name__)

_INLINE_MAX_BYTES = 64 * 1024
_RUN_CACHE = 16
_FLUSH_AFTER_S = 0.002
_CONCURRENT_FETCH = 64  # entries claimed at once while io/async work is in flight
_RATE_WINDOW_S = 60.0  # the heartbeat's tasks/s covers about this long


_PLAIN_TYPES = (type(None), bool, int, float, str, bytes)


def _inline_value(completion: Completion, encoded: Encoded | None) -> Any:
    """The value to send with a completion: itself when small and plain, pickled on its own
    when small (``Pickled``), else a StoredValue marker (the channel holds it)."""
    value = completion.value
    if type(value) in _PLAIN_TYPES:
        size = len(value) if isinstance(value, str | bytes) else 0
        return value if size <= _INLINE_MAX_BYTES else StoredValue(completion.task_id)
    if encoded is not None and encoded.nbytes > _INLINE_MAX_BYTES:
        return StoredValue(completion.task_id)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and nbytes > _INLINE_MAX_BYTES:
        return StoredValue(completion.task_id)
    payload = codec.dumps(value)
    if len(payload) > _INLINE_MAX_BYTES:
        return StoredValue(completion.task_id)
    return Pickled(payload)


def _is_stream_gone(exc: redis.ResponseError) -> bool:
    """The queue's stream or group is gone: deleted under a claim, or while one waited."""
    message = str(exc)
    return message.startswith(("NOGROUP", "UNBLOCKED"))


def _portable_records(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``records``, each failed with a TaskError that says why if it does not pickle."""
    portable = []
    for record in records:
        try:
            codec.dumps(record)
            portable.append(record)
        except Exception as exc:  # noqa: BLE001 - reported as this task's failure
            seq, task_id = record[0], record[1]
            err = TaskError(task_id, f"its outcome could not be pickled: {exc}")
            portable.append(codec.encode_outcome(Outcome.failure(seq, task_id, err)))
    return portable


@dataclass(frozen=True)
class NodeSettings:
    """How a node serves its queue."""

    url: str
    queue: str = "default"
    tls: RedisTLS | None = None
    processes: int = 1
    node_id: str = ""
    batch: int = 16
    lease_ms: int = 30_000
    max_deliveries: int = 3
    grace_s: float = 10.0
    block_ms: int = 1000
    max_tasks: int | None = None
    tracing: TraceSetup | None = None  # where workers send the spans of traced runs
    threads: int = DEFAULT_THREADS
    max_async: int = DEFAULT_MAX_ASYNC


class RedisWorker:
    """One worker of a Redis queue: a WorkLoop whose source is the queue's stream.

    As a source it claims entries (XREADGROUP, or XCLAIM of expired leases), verifies and
    decodes them into batches, and writes each batch's outcomes: results, then completions,
    then (with its last ones) the acknowledgement, in one round trip.
    """

    pushes = False  # entries are claimed when a lane has room

    def __init__(
        self,
        settings: NodeSettings,
        signer: Signer,
        consumer: str,
        *,
        client: RedisClient | None = None,
        handlers: Mapping[str, TaskHandler] | None = None,
        on_completion: Callable[[Completion], None] | None = None,
        host_link: Connection | None = None,
    ) -> None:
        """A worker of ``settings.queue``; the keyword hooks serve an in-process TaskWorker.

        ``host_link``: the write end of a pipe to the node's host process, told which entries
        this worker holds and which timed task it runs (the host keeps their leases and
        enforces ``timeout_s`` from outside this process).

        ``client`` (bytes replies) replaces one made from ``settings.url``, ``handlers`` take
        precedence over a run's own, and ``on_completion`` is called in the lane's thread
        with every completion, before it is posted.
        """
        self.settings = settings
        self.signer = signer
        self.consumer = consumer
        self.client: Any = client or _client(settings)
        self.handler_overrides = dict(handlers or {})
        self.on_completion = on_completion
        self.host_link = host_link
        self._link_lock = threading.Lock()
        self.queue = RedisTaskQueue(
            self.client,
            settings.queue,
            max_deliveries=settings.max_deliveries,
            lease_ms=settings.lease_ms,
        )
        self.runs: OrderedDict[str, RunState] = OrderedDict()
        self.nodes_loaded: dict[str, int] = {}
        self.in_hand: dict[bytes, QueueEntry] = {}
        self.stopping = threading.Event()
        self.tasks_done = 0
        self.tasks_failed = 0
        self.dead_lettered = 0
        self.meter = TaskMeter()  # published in the heartbeat (graflow status, metrics)
        self._rate_marks: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self.avg_task_s: float | None = None
        self._lock = threading.Lock()
        self.attempt_spans: AttemptSpans | None = None  # set by the worker process's entry
        self._runs_lock = threading.Lock()
        self._group_ready = False
        self._next_reclaim = 0.0
        self._delay = 0.1
        self._started_at: dict[int, float] = {}
        self._broken: set[bytes] = set()  # finished entries an outage kept from posting
        self.loop = WorkLoop(
            self,
            threads=settings.threads,
            max_async=settings.max_async,
            name=f"graflow-{consumer}",
        )

    # -- lifecycle ----------------------------------------------------------------------
    def serve(self) -> None:
        """Claim and run entries until ``stop()``; survive Redis outages."""
        self._beat(self.settings.lease_ms / 3000)
        heartbeat = threading.Thread(target=self._heartbeat, name="graflow-lease", daemon=True)
        heartbeat.start()
        try:
            self.loop.serve()
        finally:
            self._hand_back_all()

    def stop(self) -> None:
        """Stop claiming; the loop ends once the items started are done."""
        self.stopping.set()
        self.loop.stop()

    # -- WorkSource: fetch ----------------------------------------------------------------
    def fetch(self, room: Room) -> list[Batch] | None:
        """Claimed entries as batches (maybe none); None once stopping."""
        while not self.stopping.is_set():
            try:
                return self._claim(room)
            except OUTAGE_ERRORS as exc:  # before ResponseError: a cluster's are ones too
                self._group_ready = False
                logger.warning("worker %s: Redis unavailable (%s)", self.consumer, exc)
                refresh_after_outage(self.client)
            except redis.ResponseError as exc:
                self._group_ready = False
                if _is_stream_gone(exc):  # deleted (or Redis restarted empty): make it again
                    continue
                if not is_passing(exc):
                    raise
                logger.warning(
                    "worker %s: Redis refuses for now (%s); retrying", self.consumer, exc
                )
            self.stopping.wait(self._delay)
            self._delay = min(self._delay * 2, 5.0)
        return None

    def _claim(self, room: Room) -> list[Batch]:
        if not self._group_ready:
            self.queue.ensure_group()
            self._group_ready = True
        if self._broken:
            # Entries an outage cut short go back to the queue as soon as Redis takes writes
            # again (their heartbeat keeps extending their lease, so none would expire).
            self._hand_back_broken()
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.settings.lease_ms / 3000
            entries = self.queue.reclaim(self.consumer)
        else:
            entries = self.queue.fetch(self.consumer, self._fetch_count(room), self._block_ms())
        self._delay = 0.1
        self._hold(entries)
        batches: list[Batch] = []
        for entry in entries:
            batch = self._batch(entry)
            if batch is not None:
                batches.append(batch)
        return batches

    def _block_ms(self) -> int:
        return self.settings.block_ms

    def _fetch_count(self, room: Room) -> int:
        if not room.cpu_idle:
            return 1  # more for the io/async lanes while a cpu task runs
        if room.busy:
            # io/async work in flight: entries of it are likely next, and its lanes have
            # room for many (a cpu entry fetched with them waits only for the cpu lane).
            return max(1, min(_CONCURRENT_FETCH, max(room.io, room.aio)))
        # Do not hoard slow tasks that idle workers elsewhere could take.
        avg = self.avg_task_s
        if avg is None:
            return 1
        return max(1, min(self.settings.batch, int(_FLUSH_AFTER_S / max(avg, 1e-6))))

    def _batch(self, entry: QueueEntry) -> Batch | None:
        """The entry's items as a batch, or None when it was dealt with here."""
        if entry.deliveries > self.settings.max_deliveries:
            self._give_up(entry)
            return None
        try:
            raws = self.signer.loads(entry.blob)
            decoded = [codec.decode_item(raw) for raw in raws]
        except (PoisonMessage, TypeError, ValueError, IndexError) as exc:
            self._dead_letter(entry, f"undecodable work items: {exc}")
            return None
        items = [item for item, _ in decoded]
        if entry.deliveries > 1 and len(items) > 1:
            # Redelivered after a crash: run each item on its own, so the one that kills
            # its worker is found and the others are not charged for it.
            self._split(entry, raws)
            return None
        try:
            state = self._run_state(entry.run_id, items)
        except UnloadableRun as exc:
            self._fail_items(entry, items, f"the worker could not load the run's code: {exc}")
            return None
        if state is None:
            self._fail_items(entry, items, f"run {entry.run_id} is unknown or expired")
            return None
        afters = [after for _, after in decoded]
        return Batch(state, items, afters, token=entry, extra={"stored": {}})

    # -- WorkSource: running ----------------------------------------------------------------
    def is_draining(self) -> bool:
        return self.stopping.is_set()

    def on_start(self, batch: Batch, item: WorkItem, lane: str) -> None:
        self.meter.start(item.attempt)
        self._started_at[item.seq] = time.perf_counter()
        if item.timeout_s is not None and lane != ASYNC_LANE:
            # An async task cancels itself at its timeout; any other is stopped by the host,
            # which kills this process (graflow.redis.host).
            deadline = time.monotonic() + item.timeout_s
            entry_id = batch.token.entry_id
            self._tell(("timed", entry_id, item.seq, item.task_id, item.timeout_s, deadline))

    def on_end(self, batch: Batch, item: WorkItem, lane: str) -> None:
        if item.timeout_s is not None and lane != ASYNC_LANE:
            self._tell(("untimed", batch.token.entry_id, item.seq))
        started = self._started_at.pop(item.seq, None)
        if started is None or lane != CPU_LANE:
            return  # the batch sizes follow the cpu lane: io and async tasks mostly wait
        elapsed = time.perf_counter() - started
        avg = self.avg_task_s
        self.avg_task_s = elapsed if avg is None else 0.8 * avg + 0.2 * elapsed

    def on_idle(self) -> None:
        """Nothing to do when idle."""

    def task_done(self) -> None:
        max_tasks = self.settings.max_tasks
        if max_tasks and self.meter.finished >= max_tasks:
            self.stop()

    def seal(self, batch: Batch, completion: Completion, waited_on: bool) -> Outcome:
        """The completion as it travels; a result that cannot be stored fails its task.

        The result is encoded for the channel now, not when the batch is written: a value
        that will not pickle fails its own task instead of the write of the whole batch.
        """
        state = batch.state
        assert state is not None
        if _is_outage(completion.error):
            # Redis went away under the task: not its failure. The entry goes back to the
            # queue once Redis is back, to run again, with nothing of what it stored.
            batch.extra["broken"] = True
            state.context.stored.pop(f"{completion.task_id}.__result__", None)
            return Outcome.of(completion)
        if self.on_completion is not None:
            self.on_completion(completion)
        self.meter.finish(completion.ok, completion.duration_s)
        outcome = self._outcome(batch, state, completion)
        channel = state.context.channel
        if isinstance(channel, RedisChannel):  # what a conditional successor reads first
            key = f"{completion.task_id}.__result__" if outcome.is_clean else None
            channel.remember(key, completion.value)
        return outcome

    def _outcome(self, batch: Batch, state: RunState, completion: Completion) -> Outcome:
        key = f"{completion.task_id}.__result__"
        stored = state.context.stored
        has_stored = key in stored
        value = stored.pop(key, None)
        if not completion.ok:
            if has_stored:
                batch.extra["stored"][key] = value
            return Outcome.of(completion)
        try:
            encoded = self._encode_result(state, value)
            if has_stored:
                batch.extra["stored"][key] = encoded if encoded is not None else value
            return Outcome.of(completion, _inline_value(completion, encoded))
        except Exception as exc:  # noqa: BLE001 - reported as this task's failure
            batch.extra["stored"].pop(key, None)
            detail = f"{type(exc).__name__}: {exc}"
            message = f"its result could not be sent back from the worker process ({detail})"
            error = TaskError(completion.task_id, message)
            return Outcome.failure(completion.seq, completion.task_id, error)

    def _encode_result(self, state: RunState, value: Any) -> Encoded | None:
        """The stored result encoded for a Redis channel (None: nothing to encode here)."""
        channel = state.context.channel
        if type(value) in _PLAIN_TYPES or not isinstance(channel, RedisChannel):
            return None
        return channel.encode(value)

    # -- WorkSource: posting ----------------------------------------------------------------
    def post(self, batch: Batch, outcomes: list[Outcome], final: bool) -> None:
        """Store results, then post completions, then (final) acknowledge: one round trip."""
        entry: QueueEntry = batch.token
        if batch.extra.get("broken"):
            if final:
                self._hand_back_broken_entry(entry)
            return
        ran = [o for o in outcomes if o.kind is not OutcomeKind.UNSTARTED]
        pipe = self.client.pipeline(transaction=False)
        self._queue_results(pipe, batch)
        if ran:
            pipe.xadd(keys.done(entry.run_id), {b"b": self._seal_records(ran), b"w": self.consumer})
            pipe.expire(keys.done(entry.run_id), RUN_TTL_S)
        self._queue_unstarted(pipe, batch, outcomes)
        if final:
            self.queue.queue_ack(pipe, [entry.entry_id])
        try:
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except (*OUTAGE_ERRORS, redis.ResponseError) as exc:
            logger.warning("worker %s: could not post outcomes (%s)", self.consumer, exc)
            batch.extra["broken"] = True
            if final:
                self._hand_back_broken_entry(entry)
            return
        self.tasks_failed += sum(1 for o in ran if o.kind is OutcomeKind.FAILED)
        if final:
            self._drop([entry.entry_id])
            self.tasks_done += 1

    def _queue_unstarted(self, pipe: Any, batch: Batch, outcomes: list[Outcome]) -> None:
        """Items handed back unstarted (this worker stops) go back to the queue as an entry
        of their own, for any worker to take at once."""
        unstarted = {o.seq for o in outcomes if o.kind is OutcomeKind.UNSTARTED}
        if not unstarted:
            return
        entry: QueueEntry = batch.token
        items = [i for i in batch.items if i.seq in unstarted]
        blob = self.signer.dumps([codec.encode_item(i) for i in items])
        pipe.xadd(self.queue.stream, {b"r": entry.run_id.encode(), b"b": blob})

    def _queue_results(self, pipe: Any, batch: Batch) -> None:
        stored = batch.extra["stored"]
        if not stored:
            return
        results = {}
        while stored:
            key, value = stored.popitem()
            results[key] = value
        state = batch.state
        assert state is not None
        channel = state.context.channel
        if isinstance(channel, RedisChannel):
            channel.queue_update(pipe, results)
        else:
            channel.update(results)

    def _seal_records(self, outcomes: list[Outcome]) -> bytes:
        records = [codec.encode_outcome(o) for o in outcomes]
        try:
            return self.signer.dumps(records)
        except Exception:  # noqa: BLE001 - find the records that will not pickle
            return self.signer.dumps(_portable_records(records))

    def _post(self, run_id: str, blob: bytes) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(keys.done(run_id), {b"b": blob, b"w": self.consumer})
        pipe.expire(keys.done(run_id), RUN_TTL_S)
        pipe.execute()

    def _split(self, entry: QueueEntry, raws: list[tuple[Any, ...]]) -> None:
        blobs = [self.signer.dumps([raw]) for raw in raws]
        self.queue.submit(entry.run_id, blobs)
        self.queue.ack([entry.entry_id])
        self._drop([entry.entry_id])

    # -- runs -------------------------------------------------------------------------
    def _run_state(self, run_id: str, items: list[WorkItem]) -> RunState | None:
        with self._runs_lock:
            state = self.runs.get(run_id)
            if state is None:
                state = self._load_run(run_id)
                if state is None:
                    return None
            self.runs.move_to_end(run_id)
            nodes = state.context.graph.nodes
            if any(item.task_id not in nodes for item in items):
                self._load_nodes(state)
            return state

    def _load_run(self, run_id: str) -> RunState | None:
        loaded = fetch_run(self.client, self.signer, run_id)
        if loaded is None:
            return None
        graph, handlers = loaded
        channel = RedisChannel(run_id, redis_client=self.client, signer=self.signer)
        handlers = {**handlers, **self.handler_overrides}
        state = RunState(run_id, graph, handlers, channel, True, self.attempt_spans)
        state.context.defer_stores = True
        self.runs[run_id] = state
        self.nodes_loaded[run_id] = 0
        while len(self.runs) > _RUN_CACHE:
            old, old_state = self.runs.popitem(last=False)
            self.nodes_loaded.pop(old, None)
            old_state.close()
        return state

    def _load_nodes(self, state: RunState) -> None:
        start = self.nodes_loaded.get(state.run_id, 0)
        nodes = fetch_nodes(self.client, self.signer, state.run_id, start)
        state.add_nodes([n for n in nodes if n is not None])
        self.nodes_loaded[state.run_id] = start + len(nodes)

    def _give_up(self, entry: QueueEntry) -> None:
        deliveries = entry.deliveries - 1
        reason = f"delivered {deliveries} times; its workers kept dying"
        try:
            items = [codec.decode_item(raw)[0] for raw in self.signer.loads(entry.blob)]
        except (PoisonMessage, TypeError, ValueError):
            self._dead_letter(entry, reason)
            return
        outcomes = [
            Outcome.failure(i.seq, i.task_id, WorkerLost(i.task_id, deliveries)) for i in items
        ]
        self._post(entry.run_id, self._seal_records(outcomes))
        self._dead_letter(entry, reason)

    def _fail_items(self, entry: QueueEntry, items: list[WorkItem], reason: str) -> None:
        """Tell the run its items failed (so it does not wait for them), then dead-letter."""
        outcomes = [Outcome.failure(i.seq, i.task_id, TaskError(i.task_id, reason)) for i in items]
        with contextlib.suppress(redis.RedisError):
            self._post(entry.run_id, self._seal_records(outcomes))
        self._dead_letter(entry, reason)

    def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        self.queue.dead_letter(entry, reason)
        self.dead_lettered += 1
        self._drop([entry.entry_id])

    def _hand_back(self, entries: list[QueueEntry]) -> None:
        with contextlib.suppress(redis.RedisError):
            self.queue.hand_back(entries)
        self._drop([e.entry_id for e in entries])

    def _hold(self, entries: list[QueueEntry]) -> None:
        """Claimed: in hand until acknowledged, handed back or dead-lettered."""
        if not entries:
            return
        with self._lock:
            for entry in entries:
                self.in_hand[entry.entry_id] = entry
        self._tell(("hold", [(e.entry_id, e.run_id) for e in entries]))

    def _drop(self, entry_ids: list[bytes]) -> None:
        with self._lock:
            for entry_id in entry_ids:
                self.in_hand.pop(entry_id, None)
        self._tell(("drop", entry_ids))

    def _tell(self, msg: tuple[Any, ...]) -> None:
        """Tell the node's host (graflow.redis.host) what this worker holds and runs."""
        link = self.host_link
        if link is None:
            return
        with self._link_lock, contextlib.suppress(OSError, ValueError):
            link.send(msg)

    def _hand_back_all(self) -> None:
        with self._lock:
            entries = list(self.in_hand.values())
        self._hand_back(entries)

    def _hand_back_broken_entry(self, entry: QueueEntry) -> None:
        """An entry an outage cut short goes back now, or once Redis is back."""
        try:
            self.queue.hand_back([entry])
        except redis.RedisError:
            with self._lock:
                self._broken.add(entry.entry_id)
            return
        self._drop([entry.entry_id])

    def _hand_back_broken(self) -> None:
        with self._lock:
            entries = [self.in_hand[i] for i in self._broken if i in self.in_hand]
        self.queue.hand_back(entries)  # raises while Redis still refuses: tried again later
        self._drop([e.entry_id for e in entries])
        with self._lock:
            for entry in entries:
                self._broken.discard(entry.entry_id)

    # -- leases -----------------------------------------------------------------------
    def _heartbeat(self) -> None:
        interval = self.settings.lease_ms / 3000
        while not self.stopping.wait(interval):
            self._beat(interval)

    def _beat(self, interval: float) -> None:
        """Keep the leases of entries in hand, and say this worker is alive."""
        node_key = keys.node(self.settings.node_id or self.consumer)
        with self._lock:
            ids = list(self.in_hand)
        try:
            self.queue.extend_lease(self.consumer, ids)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(
                node_key,
                mapping={
                    f"{self.consumer}:seen": str(time.time()),
                    f"{self.consumer}:done": str(self.tasks_done),
                    f"{self.consumer}:failed": str(self.tasks_failed),
                    f"{self.consumer}:stats": self._stats_json(interval),
                },
            )
            pipe.expire(node_key, max(5, int(interval * 3) + 1))
            pipe.sadd(keys.nodes_index(), self.settings.node_id or self.consumer)
            pipe.execute()
        except redis.RedisError as exc:
            logger.debug("worker %s: heartbeat failed: %s", self.consumer, exc)

    def _stats_json(self, interval: float) -> str:
        """The meter, with the tasks finished per second over about the last minute."""
        now = time.monotonic()
        marks = self._rate_marks
        marks.append((now, self.meter.finished))
        while len(marks) > 2 and marks[1][0] <= now - _RATE_WINDOW_S:
            marks.popleft()
        (since, before), finished = marks[0], marks[-1][1]
        rate = (finished - before) / (now - since) if now > since else 0.0
        self.meter.dead_lettered = self.dead_lettered
        return self.meter.to_json(
            rate_per_s=round(rate, 3), beat_s=interval, queue=self.settings.queue
        )


class NodeObserver(Protocol):
    """Told about a node's life, in its supervisor's main thread (e.g. a metrics exporter)."""

    def node_started(self, node_id: str) -> None:
        """The node got its id; its workers start next."""

    def worker_died(self, consumer: str, exitcode: int | None) -> None:
        """Worker ``consumer`` exited; another starts with the same name right after."""


def _is_outage(error: BaseException | None) -> bool:
    """True if ``error`` (or what it wraps) says Redis was unreachable."""
    while error is not None and not isinstance(error, BackendUnavailable):
        error = getattr(error, "cause", None) or error.__cause__
    return error is not None


def _client(settings: NodeSettings) -> RedisClient:
    """A worker's client of ``settings.url``."""
    return client(settings.url, settings.tls)


def _worker_process(
    settings: NodeSettings, secret: bytes, index: int, link: Connection | None = None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    clear_workflow_context()
    consumer = f"{settings.node_id}:{index}"
    worker = RedisWorker(settings, Signer(secret), consumer, host_link=link)
    # Built after fork: an exporter's threads and connections do not survive one.
    spans = start_attempt_spans(settings.tracing, worker.consumer)
    worker.attempt_spans = spans

    def on_term(signum: int, frame: FrameType | None) -> None:
        # Ignore further SIGTERMs first: the node's terminate() often follows a SIGTERM to
        # the whole process group, and this handler re-entered inside Event.set() (same
        # thread, lock held) would deadlock the worker until the node kills it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        worker.stop()

    def hand_back_at_deadline() -> None:
        # A task still running shortly before the node's grace period ends goes back to the
        # queue, for another node to take at once, instead of waiting out its lease.
        worker.stopping.wait()
        time.sleep(settings.grace_s * 0.8)
        worker._hand_back_all()
        if spans is not None:
            spans.shutdown()
        os._exit(0)

    threading.Thread(target=hand_back_at_deadline, name="graflow-drain", daemon=True).start()
    signal.signal(signal.SIGTERM, on_term)
    try:
        worker.serve()
    finally:
        if spans is not None:
            spans.shutdown()


class _Watch:
    """What the host knows of one worker process: the entries it holds, its timed tasks."""

    def __init__(self, proc: Any, link: Connection, consumer: str) -> None:
        self.proc = proc
        self.link = link
        self.consumer = consumer
        self.held: dict[bytes, str] = {}  # entry id -> run id
        # (entry id, seq) -> (task id, timeout_s, deadline on the monotonic clock)
        self.timed: dict[tuple[bytes, int], tuple[str, float, float]] = {}

    def read(self) -> None:
        """Apply what the worker said since the last read."""
        try:
            while self.link.poll():
                self._apply(self.link.recv())
        except (EOFError, OSError):
            return

    def _apply(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "hold":
            self.held.update(msg[1])
        elif kind == "drop":
            for entry_id in msg[1]:
                self.held.pop(entry_id, None)
        elif kind == "timed":
            _, entry_id, seq, task_id, timeout_s, deadline = msg
            self.timed[(entry_id, seq)] = (task_id, timeout_s, deadline)
        elif kind == "untimed":
            self.timed.pop((msg[1], msg[2]), None)


class _Node:
    """The node host: keeps ``processes`` worker processes alive until told to stop.

    It also keeps the leases of the entries its workers hold (a task holding the GIL in a
    long C call starves the worker's own heartbeat thread; the host's is another process),
    and stops a task past its ``timeout_s`` by killing its worker: the task fails with
    TaskTimeoutError, the other entries the worker held go back to the queue uncharged.
    """

    def __init__(
        self, settings: NodeSettings, secret: bytes, observer: NodeObserver | None = None
    ) -> None:
        self.settings = settings
        self.secret = secret
        self.signer = Signer(secret)
        self.observer = observer
        self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.procs: dict[int, Any] = {}
        self.watches: dict[int, _Watch] = {}
        self.client: Any = None
        self.queue: RedisTaskQueue | None = None
        self._next_beat = 0.0
        # A plain flag, not an Event: a signal handler must not take a lock that the
        # interrupted code (an Event.wait) may be holding.
        self.stopping = False

    def start(self, index: int) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(  # type: ignore[attr-defined]
            target=_worker_process,
            args=(self.settings, self.secret, index, writer),
            name=f"graflow-redis-worker-{index}",
            daemon=False,
        )
        proc.start()
        writer.close()
        self.procs[index] = proc
        self.watches[index] = _Watch(proc, reader, f"{self.settings.node_id}:{index}")

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping and signum == signal.SIGINT:
            for proc in self.procs.values():
                proc.kill()  # a second Ctrl-C: stop now
        self.stopping = True

    def supervise(self) -> None:
        self.client = _client(self.settings)
        self.queue = RedisTaskQueue(
            self.client,
            self.settings.queue,
            max_deliveries=self.settings.max_deliveries,
            lease_ms=self.settings.lease_ms,
        )
        tick = min(0.2, self.settings.lease_ms / 6000)
        while not self.stopping:
            time.sleep(tick)
            if self.stopping:
                return
            for watch in self.watches.values():
                watch.read()
            self._keep_leases()
            self._enforce_timeouts()
            self._restart_dead()

    def _restart_dead(self) -> None:
        for index, proc in list(self.procs.items()):
            if not proc.is_alive():
                logger.warning(
                    "worker %d died (exit code %s); starting another", index, proc.exitcode
                )
                # Its entries are not extended any more: their leases expire and another
                # worker reclaims them, each charged a delivery.
                self.watches[index].link.close()
                if self.observer is not None:
                    consumer = f"{self.settings.node_id}:{index}"
                    self.observer.worker_died(consumer, proc.exitcode)
                self.start(index)

    def _keep_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_beat or self.queue is None:
            return
        self._next_beat = now + self.settings.lease_ms / 3000
        for watch in self.watches.values():
            if watch.held and watch.proc.is_alive():
                try:
                    self.queue.extend_lease(watch.consumer, list(watch.held))
                except redis.RedisError as exc:
                    logger.debug("node: could not extend leases of %s: %s", watch.consumer, exc)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for index, watch in list(self.watches.items()):
            late = [key for key, (_, _, deadline) in watch.timed.items() if deadline <= now]
            if late and watch.proc.is_alive():
                self._time_out(index, watch, late)

    def _time_out(self, index: int, watch: _Watch, late: list[tuple[bytes, int]]) -> None:
        """Kill the worker; fail the late tasks; the rest of what it held goes back."""
        names = ", ".join(watch.timed[key][0] for key in late)
        logger.warning("task(s) %s timed out: killing worker %d", names, index)
        watch.proc.kill()
        watch.proc.join(5.0)
        watch.read()
        try:
            self._settle(watch, late)
        except redis.RedisError as exc:  # the leases expire: reclaimed as after a death
            logger.warning("node: could not settle worker %d's entries: %s", index, exc)
        watch.held.clear()
        watch.link.close()
        self.start(index)

    def _settle(self, watch: _Watch, late: list[tuple[bytes, int]]) -> None:
        assert self.queue is not None
        late_seqs: dict[bytes, set[int]] = {}
        for entry_id, seq in late:
            task_id, timeout_s, _ = watch.timed[(entry_id, seq)]
            run_id = watch.held.get(entry_id)
            if run_id is None:
                continue
            error = TaskTimeoutError(task_id, timeout_s)
            blob = self.signer.dumps([codec.encode_outcome(Outcome.failure(seq, task_id, error))])
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(keys.done(run_id), {b"b": blob})
            pipe.expire(keys.done(run_id), RUN_TTL_S)
            pipe.execute()
            late_seqs.setdefault(entry_id, set()).add(seq)
        for entry_id, run_id in watch.held.items():
            self._give_back(entry_id, run_id, late_seqs.get(entry_id, set()))

    def _give_back(self, entry_id: bytes, run_id: str, late: set[int]) -> None:
        """Put a killed worker's entry back, fresh (uncharged), without its late items."""
        assert self.queue is not None
        found = self.client.xrange(self.queue.stream, entry_id, entry_id)
        if not found:
            return
        blob = found[0][1].get(b"b", b"")
        raws = [raw for raw in self.signer.loads(blob) if codec.decode_item(raw)[0].seq not in late]
        if raws:
            self.queue.submit(run_id, [self.signer.dumps(raws)])
        self.queue.ack([entry_id])

    def drain(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker stops claiming and hands back
        deadline = time.monotonic() + self.settings.grace_s
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


def run_node(settings: NodeSettings, secret: bytes, observer: NodeObserver | None = None) -> int:
    """Run a node in the foreground until SIGTERM/SIGINT; returns the exit code."""
    node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    node = _Node(NodeSettings(**{**settings.__dict__, "node_id": node_id}), secret, observer)
    if observer is not None:
        observer.node_started(node_id)
    signal.signal(signal.SIGTERM, node.on_signal)
    signal.signal(signal.SIGINT, node.on_signal)
    for index in range(settings.processes):
        node.start(index)
    logger.info(
        "node %s serving queue %r with %d worker process(es)",
        node_id,
        settings.queue,
        settings.processes,
    )
    node.supervise()
    # Logged here, not in the signal handler: logging takes locks the handler may interrupt.
    logger.info(
        "node %s draining: no new tasks; up to %.0f s for %d worker(s) to finish or hand back "
        "their tasks",
        node_id,
        settings.grace_s,
        len(node.procs),
    )
    node.drain()
    logger.info("node %s stopped", node_id)
    return 0
