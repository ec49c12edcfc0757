"""``RedisTaskQueue``: the upstream-shaped TaskQueue over graflow's Redis work queue.

graflow's Redis queue (``graflow.redis.queue``) is one stream per queue name. Its entries
carry signed work items of a run whose scheduler lives in the producer
(``graflow.run(wf, redis=URL)``, or a context created with ``queue_backend="redis"``): the
producer submits items, workers run them and post completions back to it. This class is
that stream seen through the ``TaskQueue`` interface upstream scripts know::

    TaskWorker(RedisTaskQueue(...))  serves the stream exactly like a `graflow supervisor` node
    enqueue(spec)     submits one task of spec's run outside any scheduler: a worker runs it
                      and stores its result in the run's channel; its successors are not run
    dequeue()         takes one item off the stream (at most once, like upstream's LPOP); its
                      outcome goes back to the run with notify_task_completion()
    size(), is_empty()   entries waiting for a worker (an entry holds one or more items)

Upstream's ``key_prefix`` is accepted and kept, but graflow's key layout is fixed
(``graflow.redis.keys``): separate workloads with the queue name instead.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis

from graflow.core import codec
from graflow.core.handlers.direct import DirectTaskHandler
from graflow.core.spec import Outcome, OutcomeKind, WorkItem
from graflow.exceptions import BackendError, BackendUnavailable, PoisonMessage, TaskError
from graflow.queue.base import TaskQueue, TaskSpec, TaskStatus
from graflow.queue.factory import TaskQueueFactory
from graflow.redis import keys
from graflow.redis.backend import RUN_TTL_S, StoredValue
from graflow.redis.channel import RedisChannel
from graflow.redis.connect import OUTAGE_ERRORS, binary_client, from_spec
from graflow.redis.queue import QueueEntry
from graflow.redis.queue import RedisTaskQueue as StreamQueue
from graflow.redis.runs import UnloadableRun, fetch_nodes, fetch_run
from graflow.redis.signing import Signer, load_secret
from graflow.worker.runtime import RunState

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext

__all__ = ["DEFAULT_KEY_PREFIX", "RedisTaskQueue"]

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "graflow"
_RUN_CACHE = 16
_DEQUEUE_TRIES = 8  # entries to look at before reporting an empty queue (poison is skipped)


@contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    """Turn Redis client errors into graflow's backend errors."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        raise BackendUnavailable(f"Redis unreachable while {what}: {exc}", cause=exc) from exc
    except redis.RedisError as exc:
        raise BackendError(f"Redis failed while {what}: {exc}", cause=exc) from exc


def _client_for(
    context: ExecutionContext | None, redis_client: Any, host: str, port: int, db: int
) -> tuple[Any, bool]:
    """The (bytes-returning) client to use, and whether this queue made it."""
    if redis_client is not None:
        client = binary_client(redis_client)
        return client, client is not redis_client
    if context is not None and isinstance(context.channel, RedisChannel):
        return context.channel.client, False
    config = context.config if context is not None else {}
    spec = {
        "host": str(config.get("host", host)),
        "port": int(config.get("port", port)),
        "db": int(config.get("db", db)),
    }
    return from_spec(spec), True


class RedisTaskQueue(TaskQueue):
    """A Redis queue of work items, shared by producers and TaskWorkers.

    ``enqueue``, ``size`` and the TaskWorkers serving it are thread safe; ``dequeue`` and
    ``notify_task_completion`` keep the taken tasks in this object: one consumer thread each.
    """

    def __init__(
        self,
        context: ExecutionContext | None = None,
        redis_client: Any = None,
        *,
        queue: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        signer: Signer | None = None,
        start_node: str | None = None,
        max_deliveries: int = 3,
        lease_ms: int = 30_000,
    ) -> None:
        """Serve ``queue`` (default: the context's ``config["queue"]``, else ``"default"``).

        The client is ``redis_client`` (a decoding client is cloned into a bytes one), else
        the client of the context's Redis channel, else one for ``host``/``port``/``db``
        (or those of the context's config). Blobs are signed with ``signer``, else the
        context channel's signer, else the default secret (``load_secret()``).
        ``start_node`` is accepted for ``TaskQueueFactory``: a run's scheduler keeps its
        own FIFO, this queue only carries what goes to workers.
        """
        super().__init__(context)
        config = context.config if context is not None else {}
        self.queue_name = queue or str(config.get("queue", "default"))
        self.key_prefix = key_prefix
        if key_prefix != DEFAULT_KEY_PREFIX:
            logger.debug(
                "key_prefix %r ignored: graflow's Redis keys have a fixed layout", key_prefix
            )
        self.client, self._owns_client = _client_for(context, redis_client, host, port, db)
        channel = context.channel if context is not None else None
        if signer is None:
            signer = channel.signer if isinstance(channel, RedisChannel) else Signer(load_secret())
        self.signer = signer
        self.stream = StreamQueue(
            self.client, self.queue_name, max_deliveries=max_deliveries, lease_ms=lease_ms
        )
        self.queue_key = self.stream.stream
        self.consumer = f"queue-{uuid.uuid4().hex[:12]}"
        self._seq = itertools.count(-1, -1)  # never the seq of an item a scheduler waits for
        self._runs: dict[str, RunState] = {}
        self._taken: dict[str, tuple[str, WorkItem, RunState]] = {}
        self._group_ready = False

    # -- TaskQueue ----------------------------------------------------------------------
    def enqueue(self, task_spec: TaskSpec) -> bool:
        """Submit ``task_spec``'s task for a worker; its result lands in its run's channel."""
        context = task_spec.execution_context
        exe = task_spec.executable
        run_id = context.session_id
        with _redis_errors(f"enqueuing task {exe.task_id!r}"):
            self._ensure_group()
            # The run's graph and handlers, unless the run (a live producer) stored its own.
            pipe = self.client.pipeline(transaction=True)
            pipe.set(keys.graph(run_id), self.signer.dumps(context.graph), ex=RUN_TTL_S, nx=True)
            handlers = {"direct": DirectTaskHandler()}
            pipe.set(keys.handlers(run_id), self.signer.dumps(handlers), ex=RUN_TTL_S, nx=True)
            graph_stored = pipe.execute()[0]
            if not (graph_stored and context.graph.has_node(exe.task_id)):
                pipe.rpush(keys.nodes(run_id), self.signer.dumps(exe))
                pipe.expire(keys.nodes(run_id), RUN_TTL_S)
                pipe.execute()
            item = WorkItem(
                next(self._seq),
                exe.task_id,
                attempt=task_spec.retry_count,
                max_cycles=context.cycle_controller.get_max_cycles_for_node(exe.task_id),
            )
            self.stream.submit(run_id, [self.signer.dumps([codec.encode_item(item)])])
        self.metrics["enqueued"] += 1
        return True

    def dequeue(self) -> TaskSpec | None:
        """Take one task off the queue, or None when nothing is waiting (never blocks long).

        The task is the caller's from now on: nobody else runs it, and its run waits until
        ``notify_task_completion`` reports it. Control calls it makes (``next_task``,
        ``terminate_workflow``) are not reported; successors follow the graph's edges.
        """
        with _redis_errors("dequeuing"):
            self._ensure_group()
            for _ in range(_DEQUEUE_TRIES):
                entries = self.stream.fetch(self.consumer, 1, 1)
                if not entries:
                    return None
                spec = self._take(entries[0])
                if spec is not None:
                    self.metrics["dequeued"] += 1
                    return spec
        return None

    def notify_task_completion(
        self,
        task_id: str,
        success: bool,
        group_id: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Report the outcome of a task taken with ``dequeue`` to its run's producer."""
        taken = self._taken.pop(task_id, None)
        if taken is None:
            return
        run_id, item, state = taken
        # A handler's set_result wrote the value to the run's channel already.
        stored = state.context.results.pop(task_id, _MISSING) is not _MISSING
        record: tuple[Any, ...]
        if success:
            value = StoredValue(task_id) if stored else None
            record = (item.seq, task_id, True, value, None, None, 0.0, None)
        else:
            error = TaskError(task_id, error_message or "reported failed by its worker")
            record = (item.seq, task_id, False, None, error, None, 0.0, None)
        with _redis_errors(f"reporting task {task_id!r}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(keys.done(run_id), {b"b": self.signer.dumps([record])})
            pipe.expire(keys.done(run_id), RUN_TTL_S)
            pipe.execute()

    def is_empty(self) -> bool:
        """True when no entry waits for a worker."""
        return self.size() == 0

    def size(self) -> int:
        """Entries waiting for a worker (each holds one or more work items of one run)."""
        with _redis_errors("reading the queue size"):
            return max(0, self.stream.depth() - self.stream.pending_count())

    def get_metrics(self) -> dict[str, int]:
        """This object's counters, plus the stream's waiting, in-flight and dead entries."""
        with _redis_errors("reading queue metrics"):
            in_flight = self.stream.pending_count()
            depth = self.stream.depth()
            dead = int(self.client.xlen(self.stream.dead))
        return {
            **self.metrics,
            "waiting": max(0, depth - in_flight),
            "in_flight": in_flight,
            "dead_letters": dead,
        }

    def cleanup(self) -> None:
        """Put back dequeued tasks nobody reported, and close the client this queue made.

        The stream itself stays: other producers and workers share it.
        """
        taken, self._taken = self._taken, {}
        with _redis_errors("handing back dequeued tasks"):
            for run_id, item, _state in taken.values():
                self.stream.submit(run_id, [self.signer.dumps([codec.encode_item(item)])])
        if self._owns_client:
            self.client.close()

    # -- internals ----------------------------------------------------------------------
    def _ensure_group(self) -> None:
        if not self._group_ready:
            self.stream.ensure_group()
            self._group_ready = True

    def _take(self, entry: QueueEntry) -> TaskSpec | None:
        """The first plain item of ``entry`` as a TaskSpec; other plain ones go back to the
        queue. Conditional items (chain lookahead: "run only after item P finished cleanly")
        are reported void: the producer sends them again, plainly, once P is done."""
        try:
            decoded = [codec.decode_item(raw) for raw in self.signer.loads(entry.blob)]
            items = [item for item, _ in decoded]
            conditional = [bool(after) for _, after in decoded]
        except (PoisonMessage, TypeError, ValueError, IndexError) as exc:
            self.stream.dead_letter(entry, f"undecodable work items: {exc}")
            return None
        state = self._run_state(entry.run_id)
        if state is None:
            self.stream.dead_letter(entry, f"run {entry.run_id} is unknown or expired")
            return None
        plain = [i for i, cond in zip(items, conditional, strict=True) if not cond]
        voids = [i for i, cond in zip(items, conditional, strict=True) if cond]
        with self.client.pipeline(transaction=True) as pipe:
            if voids:
                records = [
                    codec.encode_outcome(Outcome.skipped(i, OutcomeKind.VOID)) for i in voids
                ]
                pipe.xadd(keys.done(entry.run_id), {b"b": self.signer.dumps(records)})
                pipe.expire(keys.done(entry.run_id), RUN_TTL_S)
            pipe.execute()
        if len(plain) > 1:
            blob = self.signer.dumps([codec.encode_item(i) for i in plain[1:]])
            self.stream.submit(entry.run_id, [blob])
        self.stream.ack([entry.entry_id])
        if not plain:
            return None
        item = plain[0]
        graph = state.context.graph
        if not graph.has_node(item.task_id):
            self._load_nodes(state)
        if not graph.has_node(item.task_id):
            self._taken[item.task_id] = (entry.run_id, item, state)
            self.notify_task_completion(item.task_id, False, error_message="not in the graph")
            return None
        exe = graph.get_node(item.task_id)
        exe.set_execution_context(state.context)
        self._taken[item.task_id] = (entry.run_id, item, state)
        return TaskSpec(
            exe,
            state.context,
            status=TaskStatus.RUNNING,
            retry_count=item.attempt,
            max_retries=item.max_retries,
            trace_id=entry.run_id,
        )

    def _run_state(self, run_id: str) -> RunState | None:
        """The run as a worker sees it (graph, handlers, channel), or None if it is gone."""
        state = self._runs.get(run_id)
        if state is not None:
            return state
        try:
            loaded = fetch_run(self.client, self.signer, run_id)
        except UnloadableRun as exc:
            logger.error("run %s: this worker cannot load its code (%s)", run_id, exc)
            return None
        if loaded is None:
            return None
        graph, handlers = loaded
        channel = RedisChannel(run_id, redis_client=self.client, signer=self.signer)
        state = RunState(run_id, graph, handlers, channel, store_results=True)
        if len(self._runs) >= _RUN_CACHE:
            self._runs.pop(next(iter(self._runs))).close()
        self._runs[run_id] = state
        return state

    def _load_nodes(self, state: RunState) -> None:
        """Add the tasks created while the run runs (dynamic tasks) to its graph."""
        nodes = fetch_nodes(self.client, self.signer, state.run_id)
        state.add_nodes([n for n in nodes if n is not None])


_MISSING = object()

TaskQueueFactory.register_backend("redis", RedisTaskQueue)
