"""The worker process: a WorkLoop (graflow.worker.loop) whose source is the supervisor's pipe.

    supervisor ──RUN / NODES / ITEMS / END_RUN / STOP / CHAN_REPLY──▶ feed thread
    supervisor ◀──────────── DONE / CHAN / RETIRING ────────────── any lane's thread

The feed thread reads every frame: run and graph updates it applies, channel replies it
hands to the thread (or coroutine) that asked, batches of items it dispatches to the lanes.
Frames are sent under one lock, so DONE batches and channel requests of several threads
never interleave. Before a cpu item starts, its sequence number is written to the worker's
slot in a shared array, so that if the process dies the supervisor knows which item killed
it (the others it held are redelivered without being charged a delivery). The array's
last slot is set while the driver drains: items not started by then go back unrun.

The run's channel lives in the supervisor: channel operations are request/reply messages
on the same pipe, each request numbered so that its reply finds its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psutil

from graflow.channels.base import Channel
from graflow.core import codec
from graflow.core.spec import Completion, Outcome, OutcomeKind
from graflow.core.task import CPU_LANE, Executable
from graflow.core.workflow import clear_workflow_context
from graflow.exceptions import TaskError
from graflow.mp import lifeline, mapped, pipe, shm
from graflow.mp.pipe import Msg
from graflow.mp.shared_value import FORWARD_MIN_BYTES
from graflow.trace.setup import TraceSetup, start_attempt_spans
from graflow.trace.span import AttemptSpans
from graflow.worker.loop import DEFAULT_MAX_ASYNC, DEFAULT_THREADS, Batch, Room, WorkLoop
from graflow.worker.runtime import RunState

__all__ = ["DECODING", "PipeSource", "RemoteChannel", "WorkerSettings", "worker_main"]

# Slot value while a worker decodes a message: arguments that kill whoever unpickles them
# are then blamed on the batch (the slot holds an item's seq while it runs, 0 otherwise).
DECODING = -1

_WRITES = frozenset({"set", "delete", "clear", "append", "prepend", "atomic_add"})


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to know about its pool."""

    index: int
    shm_threshold_bytes: int = 64 * 1024
    max_tasks: int | None = None
    max_rss_bytes: int | None = None
    inherited_fds: tuple[int, ...] = ()
    """The supervisor's ends of the pipes, which a forked worker must close (see worker_main)."""
    parent_pid: int = 0
    """The supervisor's pid: the worker exits when that process is gone (mp/lifeline.py)."""
    tracing: TraceSetup | None = None
    """Where this worker sends the spans of traced runs (graflow.trace.setup)."""
    threads: int = DEFAULT_THREADS
    max_async: int = DEFAULT_MAX_ASYNC


class _Call:
    """One channel request waiting for its reply."""

    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class _Link:
    """The worker's end of its pipe: one sender at a time, replies matched to requests."""

    def __init__(self, conn: Connection, threshold_bytes: int) -> None:
        self.conn = conn
        self.threshold_bytes = threshold_bytes
        self._send_lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._numbers = itertools.count(1)
        self.closed = False

    def send(self, msg: Any) -> None:
        frame = pipe.dumps(msg, self.threshold_bytes)
        with self._send_lock:
            try:
                self.conn.send_bytes(frame)
            except BaseException:
                shm.release(pipe.segments(frame))
                raise

    def call(self, run_id: str, op: str, args: tuple[Any, ...]) -> Any:
        """Send a channel request and wait for its reply (raises what the host raised)."""
        number = next(self._numbers)
        call = _Call()
        self._calls[number] = call
        try:
            self.send((Msg.CHAN, run_id, op, args, number, _caller_id()))
            while not call.done.wait(1.0):
                if self.closed:
                    raise EOFError("the supervisor went away")
        finally:
            self._calls.pop(number, None)
        if call.ok:
            return call.value
        raise call.value

    def answer(self, number: int, ok: bool, value: Any) -> None:
        """The reply to request ``number`` arrived (feed thread)."""
        call = self._calls.get(number)
        if call is not None:
            call.ok, call.value = ok, value
            call.done.set()

    def close(self) -> None:
        self.closed = True
        for call in list(self._calls.values()):
            call.ok, call.value = False, EOFError("the supervisor went away")
            call.done.set()


def _caller_id() -> Any:
    """Who holds a channel lock: this coroutine on an event loop, else this thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident() if task is None else ("task", id(task))


class RemoteChannel(Channel):
    """The run's channel, hosted by the supervisor, reached over the worker's pipe.

    It also holds the result of the task this worker ran last (``remember``): the supervisor
    stores the same value under the same key, so a successor that takes it (``b(a)`` run
    right after ``a``) reads it here without a round trip. A write of that key through this
    channel forgets it.
    """

    def __init__(self, name: str, link: _Link) -> None:
        super().__init__(name)
        self._link = link
        # One tuple, replaced whole: lanes read it while another lane replaces it.
        self._kept: tuple[str | None, Any] = (None, None)

    def remember(self, key: str | None, value: Any = None) -> None:
        """Hold ``value`` as what the supervisor stores under ``key`` (None: hold nothing)."""
        self._kept = (key, value if key is not None else None)

    def _call(self, op: str, *args: Any) -> Any:
        if op in _WRITES and (not args or args[0] == self._kept[0]):
            self.remember(None)
        return self._link.call(self.name, op, args)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._call("set", key, value, ttl)

    def get(self, key: str, default: Any = None) -> Any:
        kept_key, kept_value = self._kept
        if key == kept_key:
            return kept_value
        # The default stays here: a sentinel sent through the pipe would come back a copy.
        found, value = self._call("lookup", key)
        return value if found else default

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key))

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key))

    def keys(self) -> list[str]:
        return list(self._call("keys"))

    def clear(self) -> None:
        self._call("clear")

    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        return int(self._call("append", key, value, ttl))

    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        return int(self._call("prepend", key, value, ttl))

    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        return self._call("atomic_add", key, amount)  # type: ignore[no-any-return]

    @contextmanager
    def lock(self, key: str, timeout: float = 10.0) -> Iterator[None]:
        self._call("lock_acquire", key, timeout)
        try:
            yield
        finally:
            self._call("lock_release", key)

    def snapshot(self) -> dict[str, Any]:
        return dict(self._call("snapshot"))


class PipeSource:
    """The supervisor's pipe as a WorkLoop source: frames in, DONE batches out."""

    pushes = True  # the supervisor sends what fits each worker's lanes

    def __init__(
        self,
        conn: Connection,
        slots: Any,
        settings: WorkerSettings,
        attempt_spans: AttemptSpans | None = None,
    ) -> None:
        self.attempt_spans = attempt_spans
        self.link = _Link(conn, settings.shm_threshold_bytes)
        self.slots = slots
        self.settings = settings
        self.index = settings.index
        self.runs: dict[str, RunState] = {}
        self.tasks_done = 0
        self.retiring = False
        self._count_lock = threading.Lock()
        self._decoding = threading.Lock()  # held while a frame is decoded (see on_idle)

    # -- frames in --------------------------------------------------------------------------
    def fetch(self, room: Room) -> list[Batch] | None:
        """Read frames until a batch of items arrives; None on STOP or a closed pipe."""
        while True:
            if not room.busy and mapped.mapped_count():
                # Values mapped for the last message's tasks, unless a task kept them.
                mapped.collect()
            try:
                msg = self._next_message()
            except (EOFError, OSError):
                # The supervisor is gone: nobody will read what this worker does now.
                self.link.close()
                shm.sweep_orphans(os.getpid())
                os._exit(0)
            kind = msg[0]
            if kind == Msg.ITEMS:
                return [self._batch(msg[1], msg[2])]
            if kind == Msg.CHAN_REPLY:
                self.link.answer(msg[1], msg[2], msg[3])
            elif kind == Msg.RUN:
                self._start_run(msg[1], msg[2], msg[3])
            elif kind == Msg.NODES:
                self._add_nodes(msg[1], msg[2])
            elif kind == Msg.END_RUN:
                self._end_run(msg[1])
            elif kind == Msg.STOP:
                return None
            del msg  # it holds the batch's arguments

    def _next_message(self) -> Any:
        frame = self.link.conn.recv_bytes()
        slots, index = self.slots, self.index
        # A cpu item running keeps its slot: it is the one to blame if this process dies.
        decoding = slots[index] == 0
        if decoding:
            slots[index] = DECODING
        try:
            with self._decoding:
                return pipe.loads(frame)
        finally:
            if decoding and slots[index] == DECODING:
                slots[index] = 0

    def _batch(self, run_id: str, raw_items: list[tuple[Any, ...]]) -> Batch:
        decoded = [codec.decode_item(raw) for raw in raw_items]
        return Batch(
            self.runs.get(run_id),
            [item for item, _ in decoded],
            [after for _, after in decoded],
        )

    def _start_run(self, run_id: str, graph_blob: bytes, handlers_blob: bytes) -> None:
        graph = pickle.loads(graph_blob)
        handlers = pickle.loads(handlers_blob)
        channel = RemoteChannel(run_id, self.link)
        self.runs[run_id] = RunState(run_id, graph, handlers, channel, False, self.attempt_spans)

    def _end_run(self, run_id: str) -> None:
        state = self.runs.pop(run_id, None)
        if state is not None:
            state.close()

    def _add_nodes(self, run_id: str, nodes: list[Executable]) -> None:
        state = self.runs.get(run_id)
        if state is not None:
            state.add_nodes(nodes)

    # -- outcomes out -----------------------------------------------------------------------
    def seal(self, batch: Batch, completion: Completion, waited_on: bool) -> Outcome:
        """The outcome with its value ready for the pipe; keeps the result for a successor."""
        outcome = _outcome(completion)
        state = batch.state
        channel = state.context.channel if state is not None else None
        if isinstance(channel, RemoteChannel):
            # A large value is kept only for a successor right behind it: an idle worker
            # must not hold it, and a later reader maps it cheaply.
            keep = outcome.is_clean and (
                waited_on or not shm.is_shareable(completion.value, FORWARD_MIN_BYTES)
            )
            channel.remember(f"{completion.task_id}.__result__" if keep else None, completion.value)
        return outcome

    def post(self, batch: Batch, outcomes: list[Outcome], final: bool) -> None:
        """Send the outcomes in one DONE message (the supervisor needs no acknowledgement)."""
        if not outcomes:
            return
        entries = [codec.encode_outcome(o) for o in outcomes]
        try:
            self.link.send((Msg.DONE, entries))
            return
        except Exception:  # noqa: BLE001 - one bad value must not lose the whole batch
            pass
        for outcome, entry in zip(outcomes, entries, strict=True):
            try:
                self.link.send((Msg.DONE, [entry]))
            except Exception as exc:  # noqa: BLE001 - reported as the task's failure
                failed = _unpicklable(outcome, exc)
                self.link.send((Msg.DONE, [codec.encode_outcome(failed)]))

    def is_draining(self) -> bool:
        return bool(self.slots[-1]) or self.retiring

    def on_start(self, batch: Batch, item: Any, lane: str) -> None:
        if lane == CPU_LANE:
            self.slots[self.index] = item.seq

    def on_end(self, batch: Batch, item: Any, lane: str) -> None:
        if lane == CPU_LANE:
            self.slots[self.index] = 0

    def on_idle(self) -> None:
        """Unmap the values mapped for the tasks that ran, unless a task kept them."""
        if mapped.mapped_count() and self._decoding.acquire(blocking=False):
            # Not while a frame is decoded: its values are mapped but not referenced yet.
            try:
                mapped.collect()
            finally:
                self._decoding.release()

    def task_done(self) -> None:
        """Count the task; past max_tasks or max_rss, retire (checked after every task)."""
        with self._count_lock:
            self.tasks_done += 1
            if self.retiring:
                return
            reason = self._recycle_reason()
            if reason is None:
                return
            self.retiring = True
        self.link.send((Msg.RETIRING, reason))

    def _recycle_reason(self) -> str | None:
        max_tasks = self.settings.max_tasks
        if max_tasks is not None and self.tasks_done >= max_tasks:
            return f"served {self.tasks_done} tasks"
        if self.settings.max_rss_bytes is not None:
            rss = _rss_bytes()
            if rss > self.settings.max_rss_bytes:
                return f"RSS {rss // (1024 * 1024)} MiB above the limit"
        return None


def _outcome(completion: Completion) -> Outcome:
    """The completion as an Outcome whose value travels well through the pipe."""
    if not completion.ok:
        return Outcome.of(completion)
    value = completion.value
    if shm.is_shareable(value, FORWARD_MIN_BYTES):
        # Forwarded from its segment (graflow.mp.shared_value); when /dev/shm is full, the
        # value travels in the message as any other.
        with contextlib.suppress(OSError):
            value = shm.share(value)
    try:
        value = pipe.seal(value)
    except Exception as exc:  # noqa: BLE001 - reported as this task's failure
        return _unpicklable(Outcome.of(completion), exc)
    return Outcome.of(completion, value)


def _unpicklable(outcome: Outcome, exc: BaseException) -> Outcome:
    what = "result" if outcome.ok else "exception"
    detail = f"{type(exc).__name__}: {exc}"
    err = TaskError(
        outcome.task_id,
        f"its {what} could not be sent back from the worker process ({detail})",
        remote_traceback=outcome.traceback if not outcome.ok else None,
    )
    if not outcome.ok and outcome.error is not None:
        err.message += f"; original error: {type(outcome.error).__name__}: {outcome.error}"
    return Outcome(
        outcome.seq,
        outcome.task_id,
        OutcomeKind.FAILED,
        None,
        err,
        None,
        outcome.duration_s,
        outcome.traceback,
    )


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def worker_main(conn: Connection, slots: Any, settings: WorkerSettings) -> None:
    """Entry point of a worker process."""
    # Ctrl-C goes to the whole foreground process group; the supervisor decides what an
    # interrupt means (drain, then stop), so workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if settings.parent_pid:
        lifeline.die_with_parent(settings.parent_pid)
    # A forked worker starts in the forking thread's context: forget any workflow block
    # the driver was in (items that need one say so and get the run's own).
    clear_workflow_context()
    # A forked worker holds copies of the supervisor's pipe ends, its own among them: were
    # they left open, its pipe would never reach EOF when the driver dies, and it would wait
    # forever for the next message.
    for fd in settings.inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    # Built here, after fork: an exporter's threads and connections do not survive one.
    spans = start_attempt_spans(settings.tracing, f"{socket.gethostname()}:{os.getpid()}")
    source = PipeSource(conn, slots, settings, spans)
    loop = WorkLoop(
        source,
        threads=settings.threads,
        max_async=settings.max_async,
        name=f"graflow-worker-{settings.index}",
    )
    try:
        loop.serve()
    finally:
        if spans is not None:
            spans.shutdown()  # os._exit below skips every exit hook: send the spans now
        with contextlib.suppress(OSError):
            conn.close()
        # Nobody reads this worker's frames once it stops (STOP) or the driver is gone (EOF):
        # their segments would outlive everyone.
        shm.sweep_orphans(os.getpid())
        os._exit(0)
