"""The worker process: receives batches of work items over its pipe, runs them, answers.

    supervisor ──RUN / NODES / ITEMS / END_RUN / STOP──▶ worker
    supervisor ◀──────── DONE / CHAN / RETIRING ──────── worker

A worker runs one item at a time, in the order received, and answers each batch with one
DONE message. Before an item starts, its sequence number is written to the worker's slot
in a shared array, so that if the process dies the supervisor knows which item killed it
(the others of the batch are redelivered without being charged a delivery). The array's
last slot is set while the driver drains: items of a batch not started by then go back
unrun (a DONE entry whose ``ok`` is None).

The run's channel lives in the supervisor: channel operations are request/reply messages
on the same pipe; messages that arrive while a reply is awaited are kept for later.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psutil

from graflow.channels.base import Channel
from graflow.core.spec import Completion, WorkItem
from graflow.core.task import Executable
from graflow.core.workflow import clear_workflow_context
from graflow.exceptions import TaskError
from graflow.mp import lifeline, mapped, pipe, shm
from graflow.mp.pipe import Msg
from graflow.mp.shared_value import FORWARD_MIN_BYTES
from graflow.trace.setup import TraceSetup, start_attempt_spans
from graflow.trace.span import AttemptSpans
from graflow.worker.runtime import RunState

__all__ = ["DECODING", "WorkerSettings", "worker_main"]

# Slot value while a worker decodes a message: arguments that kill whoever unpickles them
# are then blamed on the batch (the slot holds an item's seq while it runs, 0 otherwise).
DECODING = -1

# In a DONE entry whose ``ok`` is None, this value means "a conditional item, skipped because
# its predecessor did not finish cleanly" (None: "handed back unstarted").
VOID = "void"
_MAX_OUTCOMES = 4096
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


class _Link:
    """The worker's end of its pipe, with a backlog for messages read out of turn."""

    def __init__(self, conn: Connection, threshold_bytes: int, slots: Any, index: int) -> None:
        self.conn = conn
        self.threshold_bytes = threshold_bytes
        self.backlog: deque[Any] = deque()
        self.slots = slots
        self.index = index

    def next_message(self) -> Any:
        if self.backlog:
            return self.backlog.popleft()
        frame = self.conn.recv_bytes()
        self.slots[self.index] = DECODING
        msg = pipe.loads(frame)
        self.slots[self.index] = 0
        return msg

    def send(self, msg: Any) -> None:
        pipe.send(self.conn, msg, self.threshold_bytes)

    def call(self, msg: Any) -> Any:
        """Send a request and wait for its CHAN_REPLY, keeping other messages for later."""
        self.send(msg)
        while True:
            reply = pipe.recv(self.conn)
            if reply[0] == Msg.CHAN_REPLY:
                ok, value = reply[1], reply[2]
                if ok:
                    return value
                raise value
            self.backlog.append(reply)


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
        self._kept_key: str | None = None
        self._kept_value: Any = None

    def remember(self, key: str | None, value: Any = None) -> None:
        """Hold ``value`` as what the supervisor stores under ``key`` (None: hold nothing)."""
        self._kept_key = key
        self._kept_value = value if key is not None else None

    def _call(self, op: str, *args: Any) -> Any:
        if op in _WRITES and (not args or args[0] == self._kept_key):
            self.remember(None)
        return self._link.call((Msg.CHAN, self.name, op, args))

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._call("set", key, value, ttl)

    def get(self, key: str, default: Any = None) -> Any:
        if key == self._kept_key:
            return self._kept_value
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


def _item_from_tuple(raw: tuple[Any, ...]) -> WorkItem:
    return WorkItem(*raw)


def _completion_tuple(c: Completion) -> tuple[Any, ...]:
    entry = (c.seq, c.task_id, c.ok, None, c.error, c.commands, c.duration_s, c.traceback)
    if not c.ok:
        return entry
    value = c.value
    if shm.is_shareable(value, FORWARD_MIN_BYTES):
        # Forwarded from its segment (graflow.mp.shared_value); when /dev/shm is full, the
        # value travels in the message as any other.
        with contextlib.suppress(OSError):
            value = shm.share(value)
    try:
        value = pipe.seal(value)
    except Exception as exc:  # noqa: BLE001 - reported as this task's failure
        return _unpicklable(entry, exc)
    return (c.seq, c.task_id, True, value, None, c.commands, c.duration_s, c.traceback)


class Worker:
    """The loop of one worker process."""

    def __init__(
        self,
        conn: Connection,
        slots: Any,
        settings: WorkerSettings,
        attempt_spans: AttemptSpans | None = None,
    ) -> None:
        self.attempt_spans = attempt_spans
        self.link = _Link(conn, settings.shm_threshold_bytes, slots, settings.index)
        self.slots = slots
        self.settings = settings
        self.runs: dict[str, RunState] = {}
        self.tasks_done = 0
        self.retiring = False
        # Recent items and whether each finished cleanly (ok, no command): a conditional item
        # runs only after a clean predecessor (graflow.core.lookahead).
        self.outcomes: dict[int, bool] = {}

    def serve(self) -> None:
        """Handle messages until STOP or until the supervisor goes away."""
        while True:
            if mapped.mapped_count():
                # Values mapped for the last message's tasks, unless a task kept them.
                mapped.collect()
            try:
                msg = self.link.next_message()
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == Msg.ITEMS:
                self._run_items(msg[1], msg[2], msg[3])
            elif kind == Msg.RUN:
                self._start_run(msg[1], msg[2], msg[3])
            elif kind == Msg.NODES:
                self._add_nodes(msg[1], msg[2])
            elif kind == Msg.END_RUN:
                self._end_run(msg[1])
            elif kind == Msg.STOP:
                return
            del msg  # it holds the batch's arguments

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

    def _run_items(
        self, run_id: str, raw_items: list[tuple[Any, ...]], afters: list[int] | None
    ) -> None:
        state = self.runs.get(run_id)
        completions: list[tuple[Any, ...]] = []
        slots = self.slots
        index = self.settings.index
        outcomes = self.outcomes
        for n, raw in enumerate(raw_items):
            if slots[-1]:  # the driver drains: hand back, unstarted, what is left
                completions += [
                    (r[0], r[1], None, None, None, None, 0.0, None) for r in raw_items[n:]
                ]
                break
            after = afters[n] if afters else 0
            if after:
                if not outcomes.get(after, False):
                    outcomes[raw[0]] = False
                    completions.append((raw[0], raw[1], None, VOID, None, None, 0.0, None))
                    continue
                if completions:
                    # The predecessor's completion goes out before this item starts: the
                    # driver stores its result before this item can read the channel, and a
                    # crash of this item is charged to this item.
                    self._send_done(completions)
                    completions = []
            item = _item_from_tuple(raw)
            slots[index] = item.seq
            if state is None:
                err = TaskError(item.task_id, f"worker has no graph for run {run_id}")
                completions.append((item.seq, item.task_id, False, None, err, None, 0.0, None))
                outcomes[item.seq] = False
                continue
            completion = state.run(item)
            entry = _completion_tuple(completion)
            # Clean as the driver will see it: a result that could not be sent is a failure.
            clean = entry[2] is True and not completion.commands
            outcomes[item.seq] = clean
            channel = state.context.channel
            if isinstance(channel, RemoteChannel):
                # A large value is kept only for a successor right behind it in this batch:
                # an idle worker must not hold it, and a later reader maps it cheaply.
                waits = n + 1 < len(raw_items) and afters is not None and afters[n + 1] == item.seq
                keep = clean and (
                    waits or not shm.is_shareable(completion.value, FORWARD_MIN_BYTES)
                )
                channel.remember(f"{item.task_id}.__result__" if keep else None, completion.value)
            completions.append(entry)
        slots[index] = 0
        self.tasks_done += len(raw_items)
        if len(outcomes) > _MAX_OUTCOMES:
            for seq in list(outcomes)[: _MAX_OUTCOMES // 2]:
                del outcomes[seq]
        self._send_done(completions)
        self._check_recycle()

    def _send_done(self, completions: list[tuple[Any, ...]]) -> None:
        try:
            self.link.send((Msg.DONE, completions))
            return
        except Exception:  # noqa: BLE001 - one bad value must not lose the whole batch
            pass
        for entry in completions:
            try:
                self.link.send((Msg.DONE, [entry]))
            except Exception as exc:  # noqa: BLE001 - reported as the task's failure
                self.link.send((Msg.DONE, [_unpicklable(entry, exc)]))

    def _check_recycle(self) -> None:
        if self.retiring:
            return
        reason = None
        max_tasks = self.settings.max_tasks
        if max_tasks is not None and self.tasks_done >= max_tasks:
            reason = f"served {self.tasks_done} tasks"
        elif self.settings.max_rss_bytes is not None:
            rss = _rss_bytes()
            if rss > self.settings.max_rss_bytes:
                reason = f"RSS {rss // (1024 * 1024)} MiB above the limit"
        if reason is not None:
            self.retiring = True
            self.link.send((Msg.RETIRING, reason))


def _unpicklable(entry: tuple[Any, ...], exc: BaseException) -> tuple[Any, ...]:
    seq, task_id, ok, _value, error, _commands, duration, tb = entry
    what = "result" if ok else "exception"
    detail = f"{type(exc).__name__}: {exc}"
    err = TaskError(
        task_id,
        f"its {what} could not be sent back from the worker process ({detail})",
        remote_traceback=tb if not ok else None,
    )
    if not ok and error is not None:
        err.message += f"; original error: {type(error).__name__}: {error}"
    return (seq, task_id, False, None, err, None, duration, tb)


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
    try:
        Worker(conn, slots, settings, spans).serve()
    finally:
        if spans is not None:
            spans.shutdown()  # os._exit below skips every exit hook: send the spans now
        with contextlib.suppress(OSError):
            conn.close()
        # Nobody reads this worker's frames once it stops (STOP) or the driver is gone (EOF):
        # their segments would outlive everyone.
        shm.sweep_orphans(os.getpid())
        os._exit(0)
