"""The supervisor: a persistent pool of worker processes serving one run at a time.

    scheduler ─submit─▶ ProcessBackend.pending ─flush─▶ ITEMS batch ─pipe─▶ worker i
    scheduler ◀─wait─── completions ◀──── DONE batch / sentinel (death) ◀── worker i

* Each worker has its own duplex pipe, so the supervisor always knows which items a worker
  holds (``outstanding``). Items are sent in batches sized from the measured task duration
  (many tiny tasks per message, one long task at a time) and spread over idle workers.
* A worker's death shows up on its process sentinel. Its unfinished items are resent to
  the others; the item it was running (read from the shared slot array) is charged one
  delivery, and after ``max_deliveries`` fails with WorkerLost. The worker is replaced.
* An item with ``timeout_s`` is only sent to an idle worker, alone, so the send time is its
  start time; past the timeout the worker is killed and the item fails with a timeout.
* Shutdown order: STOP to every worker, join with a deadline, kill stragglers, then sweep
  shared-memory segments left by any of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import cloudpickle

from graflow.core import codec
from graflow.core.interrupt import drain_on_signals
from graflow.core.spec import Completion, WorkItem
from graflow.exceptions import (
    BackendUnavailable,
    ConfigError,
    GraphCompilationError,
    RunInterrupted,
    TaskError,
    TaskTimeoutError,
    WorkerLost,
    WorkflowTimeoutError,
)
from graflow.mp import pipe, shm
from graflow.mp.channel_host import ChannelHost
from graflow.mp.pipe import Msg
from graflow.mp.worker import DECODING, WorkerSettings, worker_main

if TYPE_CHECKING:
    from graflow.core.graph import TaskGraph
    from graflow.core.task import Executable

__all__ = ["ProcessBackend", "Supervisor"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 512
_TARGET_BATCH_S = 0.002  # aim for about this much work per message per worker


class _Poller:
    """A persistent level-triggered poller over the workers' pipes and sentinels.

    ``multiprocessing.connection.wait`` builds a new selector on every call, which costs
    more than a pipe round trip; this one is built once per supervisor.
    """

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int) -> None:
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError):
            self._poll.unregister(fd)

    def poll(self, timeout_s: float | None) -> list[tuple[int, int]]:
        timeout_ms = None if timeout_s is None else max(0, math.ceil(timeout_s * 1000))
        return self._poll.poll(timeout_ms)


class _Handle:
    """The supervisor's side of one worker process."""

    __slots__ = (
        "conn",
        "index",
        "nodes_sent",
        "outstanding",
        "proc",
        "retiring",
        "run_id",
        "timeout_at",
        "unread",
    )

    def __init__(self, index: int, proc: Any, conn: Connection) -> None:
        self.index = index
        self.proc = proc
        self.conn = conn
        self.outstanding: dict[int, WorkItem] = {}
        self.run_id: str | None = None
        self.nodes_sent = 0
        self.retiring = False
        self.timeout_at: float | None = None
        # Segments of frames sent to the worker that it may not have decoded yet: if it dies
        # with them in its pipe, nobody else will unlink them.
        self.unread: list[shm.SegmentRef] = []


def _serialize_graph(graph: TaskGraph) -> bytes:
    try:
        return codec.dumps(graph)
    except Exception as exc:
        culprit = _find_unpicklable(graph)
        raise GraphCompilationError(
            f"the workflow cannot be sent to worker processes: {culprit}: "
            f"{type(exc).__name__}: {exc}. Make the task and what it captures picklable, "
            "or run in-process with processes=0",
            cause=exc,
        ) from exc


def _find_unpicklable(graph: TaskGraph) -> str:
    for node_id, data in graph.nodes.items():
        try:
            cloudpickle.dumps(data.get("task"))
        except Exception:  # noqa: BLE001 - we only look for the first culprit
            return f"task '{node_id}'"
    return "the graph"


class Supervisor:
    """A pool of worker processes that runs workflows; reuse it for many runs.

    ``with Supervisor(processes=8) as sup: sup.run(wf_a); sup.run(wf_b)`` forks once.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        start_method: str | None = None,
        max_deliveries: int = 3,
        max_tasks_per_worker: int | None = None,
        max_rss_mb: float | None = None,
        shm_threshold_bytes: int = 64 * 1024,
        grace_s: float = 30.0,
    ) -> None:
        count = (os.cpu_count() or 1) if processes is None else processes
        if count < 1:
            raise ConfigError(f"processes must be >= 1 for a Supervisor, got {processes}")
        if max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, got {max_deliveries}")
        if shm_threshold_bytes < 1024:
            raise ConfigError(f"shm_threshold_bytes must be >= 1024, got {shm_threshold_bytes}")
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        if method not in mp.get_all_start_methods():
            raise ConfigError(
                f"start_method {start_method!r} is not available here; "
                f"choose one of {mp.get_all_start_methods()}"
            )
        self.processes = count
        self.start_method = method
        self.max_deliveries = max_deliveries
        self.grace_s = grace_s
        self.shm_threshold_bytes = shm_threshold_bytes
        self._max_tasks = max_tasks_per_worker
        self._max_rss = None if max_rss_mb is None else int(max_rss_mb * 1024 * 1024)
        self._ctx = mp.get_context(method)
        self._slots = self._ctx.RawArray("q", count + 1)  # a slot per worker, then DRAINING
        self._handles: list[_Handle] = []
        self._poller = _Poller()
        self._fds: dict[int, tuple[_Handle, bool]] = {}  # fd -> (worker, is its sentinel)
        self._dead_pids: list[int] = []
        self._closed = False
        self._lock = threading.Lock()
        self.worker_deaths = 0
        # Segments of supervisors or workers that were killed before they could clean up.
        shm.sweep_orphans()
        for index in range(count):
            self._handles.append(self._spawn(index))

    # -- lifecycle --------------------------------------------------------------------
    def _spawn(self, index: int) -> _Handle:
        parent, child = self._ctx.Pipe(duplex=True)
        settings = WorkerSettings(
            index=index,
            shm_threshold_bytes=self.shm_threshold_bytes,
            max_tasks=self._max_tasks,
            max_rss_bytes=self._max_rss,
            inherited_fds=self._parent_fds(parent) if self.start_method == "fork" else (),
        )
        proc = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child, self._slots, settings),
            name=f"graflow-worker-{index}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._slots[index] = 0
        handle = _Handle(index, proc, parent)
        for fd, is_sentinel in ((parent.fileno(), False), (proc.sentinel, True)):
            self._fds[fd] = (handle, is_sentinel)
            self._poller.register(fd)
        return handle

    def _parent_fds(self, parent: Connection) -> tuple[int, ...]:
        return (parent.fileno(), *(h.conn.fileno() for h in self._handles if not h.conn.closed))

    def _forget(self, handle: _Handle) -> None:
        for fd in (handle.conn.fileno(), handle.proc.sentinel):
            if self._fds.get(fd, (None,))[0] is handle:
                del self._fds[fd]
                self._poller.unregister(fd)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [h.proc.pid for h in self._handles]

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers (STOP, join, kill stragglers) and sweep shared memory."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            with contextlib.suppress(OSError):
                pipe.send(handle.conn, (Msg.STOP,), self.shm_threshold_bytes)
        deadline = time.monotonic() + timeout_s
        for handle in self._handles:
            handle.proc.join(max(0.0, deadline - time.monotonic()))
            if handle.proc.is_alive():
                handle.proc.kill()
                handle.proc.join(1.0)
            self._forget(handle)
            handle.conn.close()
            shm.release(handle.unread)
            self._dead_pids.append(handle.proc.pid)
        for pid in self._dead_pids:
            shm.sweep_orphans(pid)
        self._handles.clear()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close(timeout_s=1.0)

    # -- running ----------------------------------------------------------------------
    def run(self, target: Any, **kwargs: Any) -> Any:
        """Run ``target`` on this pool; see ``graflow.run`` for the arguments."""
        from graflow.runner import execute_run  # noqa: PLC0415 - runner builds on this module

        return execute_run(target, supervisor=self, **kwargs)

    def backend(self, timeout_s: float | None = None) -> ProcessBackend:
        """An execution backend for one run on this pool."""
        if self._closed:
            raise BackendUnavailable("the supervisor is closed")
        return ProcessBackend(self, timeout_s)

    @contextmanager
    def signals_drain(self, backend: ProcessBackend) -> Iterator[None]:
        """While a run is active on the main thread: SIGTERM/SIGINT drain, a 2nd SIGINT stops."""

        def hand_back_unstarted() -> None:
            self._slots[self.processes] = 1  # workers hand back the items not started

        with drain_on_signals(backend, self.grace_s, hand_back_unstarted):
            yield


class ProcessBackend:
    """ExecutorBackend that runs a scheduler's items on a Supervisor's worker processes."""

    prepares_kwargs = True

    def __init__(self, supervisor: Supervisor, timeout_s: float | None) -> None:
        self.sup = supervisor
        self.pending: deque[WorkItem] = deque()
        self.ready: list[Completion] = []
        self.deliveries: dict[int, int] = {}
        self.avg_task_s: float | None = None
        self.draining: tuple[str, float] | None = None
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.run_id = ""
        self.scheduler: Any = None
        self.graph_blob = b""
        self.handlers_blob = b""
        self.host: ChannelHost | None = None
        self.has_timeouts = False  # some worker runs an item with timeout_s
        self.blameless_deaths = 0  # deaths with no item to blame since a task last finished

    # -- ExecutorBackend --------------------------------------------------------------
    def start_run(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        context = scheduler.context
        self.run_id = context.session_id
        self.graph_blob = _serialize_graph(context.graph)
        try:
            self.handlers_blob = codec.dumps(dict(scheduler.engine.handlers))
        except Exception as exc:
            raise ConfigError(f"a registered task handler cannot be pickled: {exc}") from exc
        self.host = ChannelHost(context.channel, self._reply)
        self.sup._slots[self.sup.processes] = 0

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        self.pending.append(item)
        return None

    def wait(self, timeout_s: float | None) -> list[Completion]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._check_run_limits()
            self._flush()
            if not self.ready:
                self._poll(self._poll_timeout(deadline))
                self._check_task_timeouts()
            if self.ready:
                out, self.ready = self.ready, []
                return out
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def end_run(self, scheduler: Any) -> None:
        sup = self.sup
        for handle in list(sup._handles):
            if handle.outstanding:
                # The run ended with work still out (timeout, interrupt, failure): the
                # worker may be deep in a stale task, so replace it.
                self._replace(handle, kill=True)
            elif handle.run_id == self.run_id:
                self._send(handle, (Msg.END_RUN, self.run_id))
                handle.run_id = None
        self.pending.clear()

    # -- sending ----------------------------------------------------------------------
    def _batch_cap(self) -> int:
        avg = self.avg_task_s
        if avg is None:
            return 2
        return max(1, min(_MAX_BATCH, int(_TARGET_BATCH_S / max(avg, 1e-7))))

    def _flush(self) -> None:
        if not self.pending or self.draining is not None:
            return
        handles = [h for h in self.sup._handles if not h.retiring]
        if not handles:
            return
        cap = self._batch_cap()
        share = max(1, math.ceil(len(self.pending) / len(handles)))
        for handle in sorted(handles, key=lambda h: len(h.outstanding)):
            if not self.pending:
                return
            room = min(cap - len(handle.outstanding), share)
            if room <= 0 or handle.timeout_at is not None:
                continue
            batch = self._take(room, idle=not handle.outstanding)
            if batch:
                self._send_items(handle, batch)

    def _take(self, room: int, idle: bool) -> list[WorkItem]:
        pending = self.pending
        batch: list[WorkItem] = []
        while pending and len(batch) < room:
            if pending[0].timeout_s is not None:
                if batch or not idle:
                    break
                batch.append(pending.popleft())
                break
            batch.append(pending.popleft())
        return batch

    def _send_items(self, handle: _Handle, batch: list[WorkItem]) -> None:
        if handle.run_id != self.run_id:
            if not self._send(handle, (Msg.RUN, self.run_id, self.graph_blob, self.handlers_blob)):
                self.pending.extendleft(reversed(batch))
                return
            handle.run_id = self.run_id
            handle.nodes_sent = 0
        dynamic = self.scheduler.dynamic_nodes
        if handle.nodes_sent < len(dynamic):
            if not self._send(handle, (Msg.NODES, self.run_id, dynamic[handle.nodes_sent :])):
                self.pending.extendleft(reversed(batch))
                return
            handle.nodes_sent = len(dynamic)
        raw = [i.as_tuple() for i in batch]
        try:
            frame = pipe.dumps((Msg.ITEMS, self.run_id, raw), self.sup.shm_threshold_bytes)
        except Exception:  # noqa: BLE001 - find the items whose arguments won't pickle
            self._send_items_one_by_one(handle, batch)
            return
        self._register(handle, batch)
        # On failure the sentinel reports the death; outstanding items are resent then.
        self._send_frame(handle, frame)

    def _send_items_one_by_one(self, handle: _Handle, batch: list[WorkItem]) -> None:
        for item in batch:
            raw = [item.as_tuple()]
            try:
                frame = pipe.dumps((Msg.ITEMS, self.run_id, raw), self.sup.shm_threshold_bytes)
            except Exception as exc:  # noqa: BLE001 - reported as this task's failure
                err = TaskError(
                    item.task_id,
                    f"its arguments could not be sent to a worker process: "
                    f"{type(exc).__name__}: {exc}",
                )
                self.ready.append(Completion(item.seq, item.task_id, False, None, err))
                continue
            self._register(handle, [item])
            if not self._send_frame(handle, frame):
                return

    def _register(self, handle: _Handle, batch: list[WorkItem]) -> None:
        for item in batch:
            handle.outstanding[item.seq] = item
        first = batch[0]
        if first.timeout_s is not None:
            handle.timeout_at = time.monotonic() + first.timeout_s
            self.has_timeouts = True

    def _send(self, handle: _Handle, msg: Any) -> bool:
        return self._send_frame(handle, pipe.dumps(msg, self.sup.shm_threshold_bytes))

    def _send_frame(self, handle: _Handle, frame: bytes) -> bool:
        refs = pipe.segments(frame)
        try:
            handle.conn.send_bytes(frame)
        except OSError:
            shm.release(refs)
            return False
        handle.unread += refs
        return True

    def _reply(self, worker: int, ok: bool, value: Any) -> None:
        handle = self.sup._handles[worker]
        try:
            self._send(handle, (Msg.CHAN_REPLY, ok, value))
        except Exception as exc:  # noqa: BLE001 - the value itself would not pickle
            err = TypeError(f"channel value could not be sent to the worker: {exc}")
            self._send(handle, (Msg.CHAN_REPLY, False, err))

    # -- receiving --------------------------------------------------------------------
    def _poll_timeout(self, deadline: float | None) -> float | None:
        if (
            deadline is None
            and self.deadline is None
            and self.draining is None
            and not self.has_timeouts
            and (self.host is None or not self.host.has_waiters)
        ):
            return None
        now = time.monotonic()
        candidates = [t for t in (deadline, self.deadline) if t is not None]
        candidates += [h.timeout_at for h in self.sup._handles if h.timeout_at is not None]
        if self.draining is not None:
            candidates.append(self.draining[1])
        if self.host is not None:
            lock_wait = self.host.expire_waiters()
            if lock_wait is not None:
                candidates.append(now + lock_wait)
        if not candidates:
            return None
        return max(0.0, min(candidates) - now)

    def _poll(self, timeout_s: float | None) -> None:
        sup = self.sup
        for fd, _events in sup._poller.poll(timeout_s):
            entry = sup._fds.get(fd)
            if entry is None:
                continue
            handle, is_sentinel = entry
            if handle not in sup._handles:
                continue
            if is_sentinel:
                self._on_death(handle)
            else:
                self._drain(handle)

    def _drain(self, handle: _Handle) -> None:
        # One message per readiness event is enough: the poller is level-triggered, so a
        # pipe with more data is reported again at once (no extra poll() per message).
        try:
            self._on_message(handle, pipe.recv(handle.conn))
        except (EOFError, OSError):
            return  # the sentinel reports the death

    def _drain_all(self, handle: _Handle) -> None:
        conn = handle.conn
        try:
            while conn.poll():
                self._on_message(handle, pipe.recv(conn))
        except (EOFError, OSError):
            return

    def _on_message(self, handle: _Handle, msg: Any) -> None:
        kind = msg[0]
        if kind == Msg.DONE:
            self._on_done(handle, msg[1])
        elif kind == Msg.CHAN:
            if self.host is not None and msg[1] == self.run_id:
                self.host.handle(handle.index, msg[2], msg[3])
            else:
                self._reply(handle.index, False, RuntimeError("no run is active"))
        elif kind == Msg.RETIRING:
            logger.info("worker %d retiring: %s", handle.index, msg[1])
            handle.retiring = True
            if not handle.outstanding:
                self._replace(handle, kill=False)

    def _on_done(self, handle: _Handle, entries: list[tuple[Any, ...]]) -> None:
        total = 0.0
        count = 0
        for seq, task_id, ok, value, error, commands, duration, tb in entries:
            item = handle.outstanding.pop(seq, None)
            if item is None:
                continue
            if ok is None:  # handed back unstarted: the run is draining
                self.pending.append(item)
                continue
            if isinstance(error, TaskError) and tb and error.remote_traceback is None:
                error.remote_traceback = tb
            if isinstance(value, pipe.Sealed):
                try:
                    value = value.open()
                except Exception as exc:  # noqa: BLE001 - this task's result is unusable
                    ok, value, error = (
                        False,
                        None,
                        TaskError(
                            task_id,
                            f"its result could not be rebuilt in the driver: "
                            f"{type(exc).__name__}: {exc}",
                        ),
                    )
            self.ready.append(
                Completion(seq, task_id, ok, value, error, commands, duration, tb, False)
            )
            total += duration
            count += 1
        if count:
            self.blameless_deaths = 0
            sample = total / count
            avg = self.avg_task_s
            self.avg_task_s = sample if avg is None else 0.7 * avg + 0.3 * sample
        if not handle.outstanding:
            handle.timeout_at = None
            handle.unread.clear()  # it answered every item, so it read every frame
            if handle.retiring:
                self._replace(handle, kill=False)

    # -- faults -----------------------------------------------------------------------
    def _on_death(self, handle: _Handle, timed_out: int | None = None) -> None:
        self._drain_all(handle)
        running = self.sup._slots[handle.index]
        handle.proc.join(0.5)
        exitcode = handle.proc.exitcode
        leftovers = list(handle.outstanding.values())
        handle.outstanding.clear()
        if self.host is not None:
            self.host.forget_worker(handle.index)
        self._replace(handle, kill=True)
        if timed_out is None:
            self.sup.worker_deaths += 1
            if self.scheduler is not None:
                self.scheduler.stats.worker_deaths += 1
            logger.warning(
                "worker %d (pid %s) died with exit code %s holding %d task(s)",
                handle.index,
                handle.proc.pid,
                exitcode,
                len(leftovers),
            )
        charged = running if any(i.seq == running for i in leftovers) else None
        if charged is None and leftovers:
            # It ran none of its items (it was starting, loading the graph or reporting). A
            # SIGKILL then came from outside (OOM killer, operator): nobody to blame, up to a
            # bound. Dying by itself, or while decoding the batch (arguments that kill whoever
            # unpickles them), blames the first item, so that a poison ends in WorkerLost.
            self.blameless_deaths += 1
            killed = exitcode == -signal.SIGKILL and running != DECODING
            bound = 10 * self.sup.max_deliveries * self.sup.processes
            if not killed or self.blameless_deaths > bound:
                charged = leftovers[0].seq
        for item in reversed(leftovers):
            if item.seq == timed_out:
                err = TaskTimeoutError(item.task_id, item.timeout_s or 0.0)
                self.ready.append(Completion(item.seq, item.task_id, False, None, err))
            elif item.seq == charged:
                count = self.deliveries.get(item.seq, 0) + 1
                self.deliveries[item.seq] = count
                if count >= self.sup.max_deliveries:
                    detail = f"exit code {exitcode}"
                    lost = WorkerLost(item.task_id, count, detail)
                    self.ready.append(Completion(item.seq, item.task_id, False, None, lost))
                else:
                    self.pending.appendleft(item)
            else:
                self.pending.appendleft(item)

    def _replace(self, handle: _Handle, kill: bool) -> None:
        sup = self.sup
        if handle not in sup._handles:
            return
        if kill and handle.proc.is_alive():
            handle.proc.kill()
        elif not kill:
            self._send(handle, (Msg.STOP,))
        handle.proc.join(5.0)
        if handle.proc.is_alive():
            handle.proc.kill()
            handle.proc.join(1.0)
        sup._forget(handle)
        handle.conn.close()
        shm.sweep_orphans(handle.proc.pid)
        shm.release(handle.unread)
        position = sup._handles.index(handle)
        sup._handles[position] = sup._spawn(handle.index)

    def _check_task_timeouts(self) -> None:
        if not self.has_timeouts:
            return
        self.has_timeouts = any(h.timeout_at is not None for h in self.sup._handles)
        now = time.monotonic()
        for handle in list(self.sup._handles):
            if handle.timeout_at is not None and now >= handle.timeout_at and handle.outstanding:
                seq = next(iter(handle.outstanding))
                logger.warning(
                    "task %s timed out: killing its worker", handle.outstanding[seq].task_id
                )
                handle.proc.kill()
                handle.proc.join(1.0)
                self._on_death(handle, timed_out=seq)

    def _check_run_limits(self) -> None:
        if self.deadline is None and self.draining is None:
            return
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise WorkflowTimeoutError(self.timeout_s or 0.0)
        if self.draining is not None:
            name, grace_end = self.draining
            busy = any(h.outstanding for h in self.sup._handles)
            if not busy:
                raise RunInterrupted(name, drained=True)
            if now >= grace_end:
                raise RunInterrupted(name, drained=False)
