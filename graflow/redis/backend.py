"""The producer side of a Redis run: the scheduler's items go to a Redis queue.

    scheduler ─submit─▶ RedisBackend ─XADD (signed items)─▶ graflow:{q:<queue>}:tasks
    scheduler ◀─wait─── completions ◀─XREAD BLOCK── graflow:{<run>}:done ◀── workers

``wait`` sends the items submitted since the last call and then blocks on the completion
stream in one round trip (the XADDs' replies are read before the wait, so items are never
queued twice when Redis goes away while the producer waits).

Chain lookahead (graflow.core.lookahead): a chain's next tasks travel in the stream entry of
the running one, each marked with its predecessor; the worker runs one only after its
predecessor finished cleanly (posting that completion first) and otherwise reports it void.
A conditional item whose predecessor already left cannot join it and is void at once. An
entry redelivered after a crash is split, so its conditional items run apart from their
predecessors and come back void: one the scheduler has adopted meanwhile is queued again.

Start of a run: the graph and the task handlers are stored (signed) under the run's keys;
tasks created at run time are appended to the run's node list before any item that needs
them is queued. Workers resolve a task's arguments from the run's channel in Redis and
store its result there; a completion carries the result inline only when it is small.
End of a run: the run's control keys are deleted; its channel keys stay until their TTL.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from graflow.core import codec
from graflow.core.backend import BACKEND_FACTORIES
from graflow.core.spec import Completion, OutcomeKind, WorkItem
from graflow.exceptions import (
    BackendUnavailable,
    ConfigError,
    PoisonMessage,
    RunInterrupted,
    TaskError,
    WorkflowTimeoutError,
)
from graflow.redis import keys
from graflow.redis.channel import RedisChannel
from graflow.redis.connect import OUTAGE_ERRORS, RedisClient, is_passing, refresh_after_outage
from graflow.redis.lease import ProducerLease
from graflow.redis.queue import RedisTaskQueue
from graflow.redis.signing import Signer
from graflow.redis.watch import DeadLetterWatch, NodeWatch

if TYPE_CHECKING:
    from graflow.core.task import Executable

__all__ = ["RUN_TTL_S", "Pickled", "RedisBackend", "StoredValue"]

logger = logging.getLogger(__name__)

RUN_TTL_S = 7 * 24 * 3600
_BLOCK_MS_MAX = 1000
_MAX_ENTRY_ITEMS = 64
_MIN_ENTRIES = 16  # split a burst into at least this many entries, for spreading
_TARGET_ENTRY_S = 0.002


class Pickled:
    """A result pickled on its own inside a completion record: when it cannot be rebuilt,
    only its task fails, not the records it travels with."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pickled, (self.payload,))

    def open(self, task_id: str) -> tuple[bool, Any, BaseException | None]:
        """(ok, value, error): the value, or a TaskError saying why it is unusable."""
        try:
            return True, codec.loads(self.payload), None
        except Exception as exc:  # noqa: BLE001 - this task's result is unusable
            detail = f"{type(exc).__name__}: {exc}"
            return False, None, TaskError(task_id, f"its result could not be rebuilt: {detail}")


class StoredValue:
    """Stands for a result too large to travel inline: it is in the run's channel."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredValue, (self.task_id,))

    def __repr__(self) -> str:
        return f"StoredValue({self.task_id!r})"


class RedisBackend:
    """ExecutorBackend that queues a scheduler's items on Redis for remote workers."""

    prepares_kwargs = False
    chain_lookahead = 8  # conditional successors sent with a chain's running task

    def __init__(
        self,
        client: RedisClient,
        signer: Signer,
        *,
        queue: str = "default",
        timeout_s: float | None = None,
        max_deliveries: int = 3,
        where: str = "this Redis",
    ) -> None:
        self.client: Any = client
        self.queue_name = queue
        self.where = where
        """The Redis server, for messages (a URL without its password)."""
        self.signer = signer
        self.queue = RedisTaskQueue(client, queue, max_deliveries=max_deliveries)
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.pending: list[WorkItem] = []
        # Conditional items (graflow.core.lookahead): seq -> (the item, its predecessor's seq),
        # until their completion is in.
        self.conditional: dict[int, tuple[WorkItem, int]] = {}
        # Conditional items whose predecessor had already left: predecessor seq -> item.
        self.held: dict[int, WorkItem] = {}
        self.outstanding: set[int] = set()
        self.nodes_sent = 0
        self.last_id = b"0-0"
        self.run_id = ""
        self.scheduler: Any = None
        self.draining: tuple[str, float] | None = None
        self.avg_task_s: float | None = None
        self.lease: ProducerLease | None = None
        self.dead_letters: DeadLetterWatch | None = None
        self.node_watch: NodeWatch | None = None

    # -- ExecutorBackend --------------------------------------------------------------
    def start_run(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        context = scheduler.context
        self.run_id = context.session_id
        graph_raw, handlers_raw = codec.dumps_run(
            context.graph, scheduler.engine.handlers, "Redis workers"
        )
        graph_blob = self.signer.sign(graph_raw)
        handlers_blob = self.signer.sign(handlers_raw)
        self._call(self.queue.ensure_group)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.graph(self.run_id), graph_blob, ex=RUN_TTL_S)
        pipe.set(keys.handlers(self.run_id), handlers_blob, ex=RUN_TTL_S)
        pipe.delete(keys.done(self.run_id), keys.nodes(self.run_id), keys.canceled(self.run_id))
        self._call(pipe.execute)
        # Before any item is queued: nodes skip the items of a run that has no lease.
        self.lease = ProducerLease(self.client, self.run_id)
        self._call(self.lease.start)
        self.dead_letters = DeadLetterWatch(self.client, self.queue_name, self.run_id)
        self._call(self.dead_letters.start)
        self.node_watch = NodeWatch(self.client, self.queue_name, self.run_id, self.where)

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        self.pending.append(item)
        return None

    def submit_after(self, item: WorkItem, exe: Executable, parent: int) -> None:
        """Hand over ``item``, to run only if item ``parent`` finishes cleanly.

        It travels in its predecessor's stream entry, so one worker runs both in order. A
        predecessor already sent cannot take it: it waits here for the predecessor's
        completion, then goes out plainly if that was clean, else comes back void.
        """
        if not any(queued.seq == parent for queued in self.pending):
            self.held[parent] = item
            return
        self.conditional[item.seq] = (item, parent)
        self.pending.append(item)

    def wait(self, timeout_s: float | None) -> list[Completion]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._check_run_limits()
            dead: list[Completion] = self._retrying(self._watch)
            if dead:
                return dead
            block_ms = _BLOCK_MS_MAX
            if deadline is not None:
                block_ms = max(1, min(block_ms, int((deadline - time.monotonic()) * 1000)))
            completions: list[Completion] = self._retrying(self._exchange, block_ms)
            if completions:
                if self.node_watch is not None:
                    self.node_watch.progressed()
                return completions
            if deadline is not None and time.monotonic() >= deadline:
                return []

    @property
    def waited_for_node_s(self) -> float:
        """Seconds the run waited with no node serving its queue."""
        return self.node_watch.total_s() if self.node_watch is not None else 0.0

    def _watch(self) -> list[Completion]:
        """Between waits: dead letters of this run's entries, and whether a node serves."""
        if self.node_watch is not None:
            self.node_watch.check(bool(self.outstanding) and not self.pending)
        if self.dead_letters is None:
            return []
        failed = self.dead_letters.poll(self.outstanding)
        for completion in failed:
            self.outstanding.discard(completion.seq)
        return failed

    def end_run(self, scheduler: Any) -> None:
        run = self.run_id
        if self.lease is not None:
            self.lease.stop()
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.graph(run), keys.handlers(run), keys.nodes(run), keys.done(run))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("run %s: could not delete its control keys: %s", run, exc)

    # -- internals --------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OUTAGE_ERRORS as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}", cause=exc) from exc

    def _exchange(self, block_ms: int) -> list[Completion]:
        """Queue the pending items (unless draining) and read completions: one round trip."""
        if self.draining is not None or not self.pending:
            return self._read(block_ms)
        self._append_nodes()
        pending = self.pending

        entries = self._entries(pending)
        blobs = [self.signer.dumps(entry) for entry in entries]

        def submitted() -> None:
            self.outstanding.update(i.seq for i in pending)
            self.pending = []
            if self.dead_letters is not None:
                self.dead_letters.note_sent(zip(blobs, entries, strict=True))
                self.dead_letters.forget_finished(self.outstanding)

        reply = self.queue.submit_and_read(
            self.run_id, blobs, keys.done(self.run_id), self.last_id, block_ms, submitted
        )
        return self._completions(reply)

    def _append_nodes(self) -> None:
        """Tasks created at run time go to the run's node list before any item needs them."""
        dynamic = self.scheduler.dynamic_nodes
        if self.nodes_sent >= len(dynamic):
            return
        nodes = [self.signer.sign(codec.dumps(exe)) for exe in dynamic[self.nodes_sent :]]
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(keys.nodes(self.run_id), *nodes)
        pipe.expire(keys.nodes(self.run_id), RUN_TTL_S)
        pipe.execute()
        self.nodes_sent = len(dynamic)

    def _entries(self, items: list[WorkItem]) -> list[list[tuple[Any, ...]]]:
        """Items in stream entries (wire form); a conditional one shares its predecessor's.

        A conditional item's tuple ends with its predecessor's seq.
        """
        units: list[list[tuple[Any, ...]]] = []
        unit_of: dict[int, list[tuple[Any, ...]]] = {}
        for item in items:
            cond = self.conditional.get(item.seq)
            parent = unit_of.get(cond[1]) if cond is not None else None
            if parent is None:
                unit: list[tuple[Any, ...]] = [codec.encode_item(item)]
                units.append(unit)
            else:
                unit = parent
                unit.append(codec.encode_item(item, cond[1]))  # type: ignore[index]
            unit_of[item.seq] = unit
        size = self._entry_size(len(units))
        entries: list[list[tuple[Any, ...]]] = []
        for start in range(0, len(units), size):
            entries.append([raw for unit in units[start : start + size] for raw in unit])
        return entries

    def _entry_size(self, count: int) -> int:
        """Items per stream entry: many short tasks share one, long ones travel alone."""
        spread = max(1, -(-count // _MIN_ENTRIES))  # keep enough entries for every worker
        avg = self.avg_task_s
        if avg is None:
            return min(_MAX_ENTRY_ITEMS, spread)
        return max(1, min(_MAX_ENTRY_ITEMS, spread, int(_TARGET_ENTRY_S / max(avg, 1e-6))))

    def _read(self, block_ms: int) -> list[Completion]:
        reply = self.client.xread({keys.done(self.run_id): self.last_id}, 1000, block_ms)
        return self._completions(reply)

    def _completions(self, reply: Any) -> list[Completion]:
        """The first completion of each outstanding item in an XREAD reply."""
        completions: list[Completion] = []
        clean: set[int] = set()  # items of this reply that finished cleanly
        for _stream, messages in reply or ():
            for entry_id, fields in messages:
                self.last_id = entry_id
                for completion in self._parse(fields):
                    if completion.seq not in self.outstanding:
                        continue
                    cond = self.conditional.pop(completion.seq, None)
                    if cond is not None:
                        accepted = self._conditional_outcome(completion, *cond, clean)
                        if accepted is None:
                            continue
                        completion = accepted
                    is_clean = completion.ok and not completion.commands and not completion.void
                    if is_clean:
                        clean.add(completion.seq)
                    self.outstanding.discard(completion.seq)
                    completions.append(completion)
                    self._release(completion.seq, is_clean, completions)
        if completions:
            total = sum(c.duration_s for c in completions) / len(completions)
            avg = self.avg_task_s
            self.avg_task_s = total if avg is None else 0.7 * avg + 0.3 * total
        return completions

    def _is_adopted(self, item: WorkItem, parent: int, clean: set[int]) -> bool:
        """True if the scheduler took (or is about to take) ``item`` as a plain task: its
        predecessor finished cleanly, applied already or earlier in this reply."""
        if parent in clean:
            return True
        lookahead = getattr(self.scheduler, "lookahead", None)
        return lookahead is None or not lookahead.is_unresolved(item.seq)

    def _conditional_outcome(
        self, completion: Completion, item: WorkItem, parent: int, clean: set[int]
    ) -> Completion | None:
        """What the scheduler gets of a conditional item's completion (None: not now).

        Adopted (its predecessor finished cleanly): the completion, or, void (it ran apart
        from its predecessor after a redelivery), the item is queued again. Not adopted: a
        void for the scheduler once the predecessor's completion is in; until then the item
        is held on it, as if it had been submitted after the predecessor left.
        """
        if self._is_adopted(item, parent, clean):
            if completion.void:
                self._queue_again(item.seq)
                return None
            return completion
        if parent in self.outstanding:
            self.held[parent] = item
            return None
        return Completion(item.seq, item.task_id, False, void=True)

    def _release(self, parent: int, clean: bool, completions: list[Completion]) -> None:
        """Item ``parent`` finished: send the item held on it, or report it (and the items
        held on it in turn) void."""
        child = self.held.pop(parent, None)
        if child is None:
            return
        if not clean:
            self.outstanding.discard(child.seq)
            completions.append(Completion(child.seq, child.task_id, False, void=True))
            self._release(child.seq, False, completions)
            return
        self.pending.append(child)
        grandchild = self.held.pop(child.seq, None)
        while grandchild is not None:  # its own successors go with it, conditionally
            self.conditional[grandchild.seq] = (grandchild, child.seq)
            self.pending.append(grandchild)
            child, grandchild = grandchild, self.held.pop(grandchild.seq, None)

    def _queue_again(self, seq: int) -> None:
        """A conditional item the scheduler has adopted came back unrun: queue it plainly.

        That happens when its entry was redelivered and split (its worker died), so it ran
        apart from its predecessor.
        """
        entry = self.scheduler.inflight.get(seq)
        if entry is not None:
            self.pending.append(entry[1])

    def _parse(self, fields: Any) -> list[Completion]:
        try:
            records = self.signer.loads(fields[b"b"])
            worker = fields.get(b"w", b"").decode(errors="replace")
            completions = []
            for record in records:
                outcome = codec.decode_outcome(record)
                seq, task_id, value = outcome.seq, outcome.task_id, outcome.value
                error = outcome.error
                commands, duration, tb = outcome.commands, outcome.duration_s, outcome.traceback
                if outcome.kind in (OutcomeKind.VOID, OutcomeKind.UNSTARTED):
                    completions.append(Completion(seq, task_id, False, void=True))
                    continue
                ok = outcome.ok
                if type(value) is Pickled:
                    ok, value, unusable = value.open(task_id)
                    error = error if unusable is None else unusable
                completions.append(
                    Completion(
                        seq, task_id, ok, value, error, commands, duration, tb, True, worker=worker
                    )
                )
            return completions
        except (PoisonMessage, KeyError, TypeError, ValueError) as exc:
            logger.error("run %s: dropped an unreadable completion: %s", self.run_id, exc)
            return []

    def _retrying(self, fn: Any, *args: Any) -> Any:
        # Redis going away mid-run: back off and retry until it is back (or the run's own
        # timeout fires); workers do the same, so the run resumes where it was.
        delay = 0.05
        while True:
            try:
                return fn(*args)
            except (*OUTAGE_ERRORS, redis.ResponseError) as exc:
                if isinstance(exc, redis.ResponseError) and not is_passing(exc):
                    raise
                self._check_run_limits()
                logger.warning("run %s: Redis unavailable (%s); retrying", self.run_id, exc)
                refresh_after_outage(self.client)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _check_run_limits(self) -> None:
        if self.lease is not None:
            self.lease.check()  # canceled, lost by Redis, or Redis refusing writes
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            error = WorkflowTimeoutError(self.timeout_s or 0.0)
            waited = self.waited_for_node_s
            if waited:
                error.message += (
                    f"; for {waited:.0f} s of it no graflow node served queue "
                    f"{self.queue_name!r} on {self.where}"
                )
            raise error
        if self.draining is not None:
            name, grace_end = self.draining
            if not self.outstanding:
                raise RunInterrupted(name, drained=True)
            if now >= grace_end:
                raise RunInterrupted(name, drained=False)


def _backend_for_context(context: Any, options: dict[str, Any]) -> RedisBackend:
    """A RedisBackend for a run created with ``channel_backend="redis"`` (upstream style)."""
    channel = context.channel
    if not isinstance(channel, RedisChannel):
        raise ConfigError(
            "tasks that run on Redis store their results in Redis: create the run with "
            "channel_backend='redis' (and config={'redis_client': client} or host/port/db)"
        )
    return RedisBackend(
        channel.client,
        channel.signer,
        queue=str(options.get("queue", "default")),
        max_deliveries=int(options.get("max_deliveries", 3)),
    )


BACKEND_FACTORIES["redis"] = _backend_for_context
