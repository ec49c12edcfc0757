"""ProcessBackend: the scheduler's items on a Supervisor's worker processes.

    scheduler ─submit─▶ ProcessBackend.pending ─flush─▶ ITEMS batch ─pipe─▶ worker i
    scheduler ◀─wait─── completions ◀──── DONE batch / sentinel (death) ◀── worker i

See graflow.mp.supervisor for the fault model (redelivery, timeouts, draining).

Conditional items (graflow.core.lookahead) travel to the worker that holds their
predecessor: with it, in the same batch, when the predecessor is not sent yet; on their own
afterwards. ``cond`` holds those still unresolved: one whose predecessor finishes cleanly
becomes an ordinary item (redelivered as such if its worker dies); any other comes back void,
also when its worker dies or hands it back.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from graflow.core import codec
from graflow.core.spec import Completion, OutcomeKind, WorkItem
from graflow.core.task import ASYNC_LANE, CPU_LANE, IO_LANE
from graflow.exceptions import (
    BackendError,
    RunInterrupted,
    TaskError,
    TaskTimeoutError,
    WorkerLost,
    WorkflowTimeoutError,
)
from graflow.mp import mapped, pipe, shm
from graflow.mp.channel_host import Caller, ChannelHost
from graflow.mp.conditional import ConditionalItems
from graflow.mp.pipe import Msg
from graflow.mp.pool import WorkerHandle
from graflow.mp.shared_value import SharedValue
from graflow.mp.worker import DECODING

if TYPE_CHECKING:
    from graflow.core.task import Executable
    from graflow.mp.supervisor import Supervisor

__all__ = ["ProcessBackend"]

logger = logging.getLogger(__name__)

_NOT_RUN = (OutcomeKind.UNSTARTED, OutcomeKind.VOID)
_CANCEL_GRACE_S = 1.0
_MAX_BATCH = 512
_TARGET_BATCH_S = 0.002  # aim for about this much work per message per worker


class ProcessBackend:
    """ExecutorBackend that runs a scheduler's items on a Supervisor's worker processes."""

    prepares_kwargs = True
    forwards_deferred = True  # arguments may hold SharedValues: they travel by name
    chain_lookahead = 8
    light_members = True  # wide groups of plain tasks skip the per-member frame

    def __init__(self, supervisor: Supervisor, timeout_s: float | None) -> None:
        self.sup = supervisor
        self.pending: deque[WorkItem] = deque()  # plain sync items, for the cpu lanes
        self.pending_concurrent: deque[WorkItem] = deque()  # io and async items
        self.lane_of: dict[int, str] = {}  # io and async items of the run, by seq
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
        self.chain_lookahead = supervisor.chain_lookahead
        self.cond = ConditionalItems()
        self.shared: list[SharedValue] = []  # large results of the run kept in segments

    # -- ExecutorBackend --------------------------------------------------------------
    def start_run(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        context = scheduler.context
        self.run_id = context.session_id
        self.graph_blob, self.handlers_blob = codec.dumps_run(
            context.graph, scheduler.engine.handlers, "worker processes"
        )
        self.host = ChannelHost(context.channel, self._reply)
        self.sup._slots[self.sup.processes] = 0
        # The graph goes out now: workers load it while the scheduler prepares the first
        # items, instead of after the first batch arrives.
        for handle in self.sup._handles:
            if not handle.retiring:
                self._send_run(handle)

    def _send_run(self, handle: WorkerHandle) -> bool:
        """Make sure ``handle`` has this run's graph (False: the worker is gone)."""
        if handle.run_id == self.run_id:
            return True
        if not self._send(handle, (Msg.RUN, self.run_id, self.graph_blob, self.handlers_blob)):
            return False
        handle.run_id = self.run_id
        handle.nodes_sent = 0
        return True

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        lane = exe.lane
        if lane == CPU_LANE:
            self.pending.append(item)
        else:
            self.lane_of[item.seq] = lane
            self.pending_concurrent.append(item)
        return None

    def _due(self, item: WorkItem, first: bool = True) -> None:
        """``item`` is due again (redelivered or handed back), at the head of its queue."""
        due = self.pending_concurrent if item.seq in self.lane_of else self.pending
        if first:
            due.appendleft(item)
        else:
            due.append(item)

    def submit_after(self, item: WorkItem, exe: Executable, parent: int) -> None:
        """Hand over ``item``, to run only if item ``parent`` finishes cleanly."""
        self.cond.add(item, parent, self.pending, self.sup._handles, self.ready)

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
        self.pending_concurrent.clear()
        self.lane_of.clear()
        self.cond.clear()
        self._release_shared()

    # -- sending ----------------------------------------------------------------------
    def _batch_cap(self) -> int:
        avg = self.avg_task_s
        if avg is None:
            return 2
        return max(1, min(_MAX_BATCH, int(_TARGET_BATCH_S / max(avg, 1e-7))))

    def _flush(self) -> None:
        if self.draining is not None:
            return
        if self.cond:
            self._flush_chained()
        if self.pending_concurrent:
            self._flush_concurrent()
        if not self.pending:
            return
        handles = [h for h in self.sup._handles if not h.retiring]
        if not handles:
            return
        cap = self._batch_cap()
        share = max(1, math.ceil(len(self.pending) / len(handles)))
        for handle in sorted(handles, key=_cpu_load):
            if not self.pending:
                return
            room = min(cap - _cpu_load(handle), share)
            if room <= 0 or handle.timeout_at is not None:
                continue
            batch = self._take(room, idle=not handle.outstanding)
            if batch:
                self._send_items(handle, batch)

    def _flush_concurrent(self) -> None:
        """Send io and async items to workers whose lanes have room, evenly."""
        handles = [h for h in self.sup._handles if not h.retiring and h.timeout_at is None]
        if not handles:
            return
        share = max(1, math.ceil(len(self.pending_concurrent) / len(handles)))
        for handle in sorted(handles, key=lambda h: len(h.concurrent)):
            batch = self._take_concurrent(handle, share)
            if batch:
                self._send_items(handle, batch)
            if not self.pending_concurrent:
                return

    def _take_concurrent(self, handle: WorkerHandle, share: int) -> list[WorkItem]:
        pending = self.pending_concurrent
        rooms = {
            IO_LANE: self.sup.threads - handle.io_out,
            ASYNC_LANE: self.sup.max_async - handle.aio_out,
        }
        batch: list[WorkItem] = []
        while pending and len(batch) < share:
            item = pending[0]
            if item.timeout_s is not None:
                # Its send time is its start time only on an idle worker, alone (see _take).
                if not batch and not handle.outstanding:
                    batch.append(pending.popleft())
                break
            lane = self.lane_of[item.seq]
            if rooms[lane] <= 0:
                break
            rooms[lane] -= 1
            batch.append(pending.popleft())
        return batch

    def _flush_chained(self) -> None:
        for handle in self.sup._handles:
            if handle.chained:
                batch, handle.chained = handle.chained, []
                self._send_items(handle, batch)

    def _take(self, room: int, idle: bool) -> list[WorkItem]:
        pending = self.pending
        cond = self.cond
        batch: list[WorkItem] = []
        while pending and len(batch) < room:
            if pending[0].timeout_s is not None:
                if batch or not idle:
                    break
                batch.append(pending.popleft())
                break
            item = pending.popleft()
            batch.append(item)
            if cond.attached:  # its successors go with it, to the same worker
                cond.take_attached(item, batch)
        return batch

    def _send_items(self, handle: WorkerHandle, batch: list[WorkItem]) -> None:
        if not self._send_run(handle):
            for item in reversed(batch):
                self._due(item)
            return
        dynamic = self.scheduler.dynamic_nodes
        if handle.nodes_sent < len(dynamic):
            if not self._send(handle, (Msg.NODES, self.run_id, dynamic[handle.nodes_sent :])):
                for item in reversed(batch):
                    self._due(item)
                return
            handle.nodes_sent = len(dynamic)
        raw = self._encode(batch)
        try:
            frame = pipe.dumps((Msg.ITEMS, self.run_id, raw), self.sup.shm_threshold_bytes)
        except Exception:  # noqa: BLE001 - find the items whose arguments won't pickle
            self._send_items_one_by_one(handle, batch)
            return
        self._register(handle, batch)
        # On failure the sentinel reports the death; outstanding items are resent then.
        self._send_frame(handle, frame)

    def _send_items_one_by_one(self, handle: WorkerHandle, batch: list[WorkItem]) -> None:
        for item in batch:
            raw = self._encode([item])
            try:
                msg = (Msg.ITEMS, self.run_id, raw)
                frame = pipe.dumps(msg, self.sup.shm_threshold_bytes)
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

    def _encode(self, batch: list[WorkItem]) -> list[tuple[Any, ...]]:
        afters = self.cond.afters(batch)
        if afters is None:
            return [codec.encode_item(item) for item in batch]
        return [codec.encode_item(item, after) for item, after in zip(batch, afters, strict=True)]

    def _register(self, handle: WorkerHandle, batch: list[WorkItem]) -> None:
        lane_of = self.lane_of
        for item in batch:
            handle.outstanding[item.seq] = item
            lane = lane_of.get(item.seq)
            if lane is not None:
                handle.concurrent[item.seq] = lane
                if lane == IO_LANE:
                    handle.io_out += 1
                else:
                    handle.aio_out += 1
        first = batch[0]
        if first.timeout_s is not None:
            # An async task is cancelled by its worker at its timeout; the process is killed
            # only if it has not stopped a grace second later.
            grace = _CANCEL_GRACE_S if lane_of.get(first.seq) == ASYNC_LANE else 0.0
            handle.timeout_at = time.monotonic() + first.timeout_s + grace
            self.has_timeouts = True

    def _unregister(self, handle: WorkerHandle, seq: int) -> WorkItem | None:
        """``seq`` is off ``handle``: its item (None if it held no such item)."""
        item = handle.outstanding.pop(seq, None)
        lane = handle.concurrent.pop(seq, None)
        if lane == IO_LANE:
            handle.io_out -= 1
        elif lane == ASYNC_LANE:
            handle.aio_out -= 1
        return item

    def _send(self, handle: WorkerHandle, msg: Any) -> bool:
        return self._send_frame(handle, pipe.dumps(msg, self.sup.shm_threshold_bytes))

    def _send_frame(self, handle: WorkerHandle, frame: bytes) -> bool:
        refs = pipe.segments(frame)
        try:
            handle.conn.send_bytes(frame)
        except OSError:
            shm.release(refs)
            return False
        handle.unread += refs
        return True

    def _reply(self, caller: Caller, ok: bool, value: Any) -> None:
        handle = self.sup._handles[caller[0]]
        number = caller[2]
        try:
            self._send(handle, (Msg.CHAN_REPLY, number, ok, value))
        except Exception as exc:  # noqa: BLE001 - the value itself would not pickle
            err = TypeError(f"channel value could not be sent to the worker: {exc}")
            self._send(handle, (Msg.CHAN_REPLY, number, False, err))

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
                if fd == sup._wake_r:
                    sup.take_wake()
                continue
            handle, is_sentinel = entry
            if handle not in sup._handles:
                continue
            if is_sentinel:
                self._on_death(handle)
            else:
                self._drain(handle)

    def _drain(self, handle: WorkerHandle) -> None:
        # One message per readiness event is enough: the poller is level-triggered, so a
        # pipe with more data is reported again at once (no extra poll() per message).
        try:
            self._on_message(handle, pipe.recv(handle.conn))
        except (EOFError, OSError):
            return  # the sentinel reports the death

    def _drain_all(self, handle: WorkerHandle) -> None:
        conn = handle.conn
        try:
            while conn.poll():
                self._on_message(handle, pipe.recv(conn))
        except (EOFError, OSError):
            return

    def _on_message(self, handle: WorkerHandle, msg: Any) -> None:
        kind = msg[0]
        if kind == Msg.DONE:
            self._on_done(handle, msg[1])
        elif kind == Msg.CHAN:
            _, run_id, op, args, number, owner = msg
            caller = (handle.index, owner, number)
            if self.host is not None and run_id == self.run_id:
                self.host.handle(caller, op, args)
            else:
                self._reply(caller, False, RuntimeError("no run is active"))
        elif kind == Msg.RETIRING:
            logger.info("worker %d retiring: %s", handle.index, msg[1])
            handle.retiring = True
            if not handle.outstanding:
                self._replace(handle, kill=False)

    def _on_done(self, handle: WorkerHandle, entries: list[tuple[Any, ...]]) -> None:
        total = 0.0
        count = 0
        cond = self.cond
        worker = f"pid {handle.proc.pid}"
        for entry in entries:
            outcome = codec.decode_outcome(entry)
            seq, task_id, value, error = outcome.seq, outcome.task_id, outcome.value, outcome.error
            commands, duration, tb = outcome.commands, outcome.duration_s, outcome.traceback
            item = self._unregister(handle, seq)
            if item is None:
                if isinstance(value, shm.Shared):
                    shm.release([value.ref])  # a stale duplicate: nobody will read it
                continue
            if outcome.kind in _NOT_RUN:  # handed back (the run drains), or a skipped conditional
                self._take_back(item)
                continue
            self.lane_of.pop(seq, None)
            if isinstance(error, TaskError) and tb and error.remote_traceback is None:
                error.remote_traceback = tb
            ok = outcome.ok
            if ok:
                ok, value, error = self._result_value(task_id, value)
            self.ready.append(
                Completion(
                    seq, task_id, ok, value, error, commands, duration, tb, False, worker=worker
                )
            )
            cond.finished(seq, ok and not commands)
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

    def _result_value(self, task_id: str, value: Any) -> tuple[bool, Any, BaseException | None]:
        """(ok, value, error) of a result as it came over the pipe."""
        if isinstance(value, pipe.Sealed):
            return _open_sealed(task_id, value)
        if isinstance(value, shm.Shared):
            return self._adopt(task_id, value)
        return True, value, None

    def _adopt(self, task_id: str, shared: shm.Shared) -> tuple[bool, Any, BaseException | None]:
        try:
            value = SharedValue(shm.adopt(shared))
        except BackendError as exc:
            return False, None, TaskError(task_id, f"its result could not be read: {exc}")
        self.shared.append(value)
        return True, value, None

    def _release_shared(self) -> None:
        for value in self.shared:
            value.release()
        self.shared.clear()
        mapped.collect()  # values of earlier runs that nobody holds any more

    def _take_back(self, item: WorkItem) -> None:
        """An item that did not run: void if still conditional, else due again."""
        if self.cond.is_unresolved(item.seq):
            self.ready.append(self.cond.void(item))
        else:
            self._due(item, first=False)

    # -- faults -----------------------------------------------------------------------
    def _on_death(self, handle: WorkerHandle, timed_out: int | None = None) -> None:
        self._drain_all(handle)
        running = self.sup._slots[handle.index]
        handle.proc.join(0.5)
        exitcode = handle.proc.exitcode
        leftovers = list(handle.outstanding.values())
        handle.outstanding.clear()
        handle.concurrent.clear()
        handle.io_out = handle.aio_out = 0
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
        unresolved = self.cond.is_unresolved
        blamable = [i for i in leftovers if not unresolved(i.seq)]
        charged = running if any(i.seq == running for i in blamable) else None
        if charged is None and blamable:
            # It ran none of its items (it was starting, loading the graph or reporting). A
            # SIGKILL then came from outside (OOM killer, operator): nobody to blame, up to a
            # bound. Dying by itself, or while decoding the batch (arguments that kill whoever
            # unpickles them), blames the first item, so that a poison ends in WorkerLost.
            self.blameless_deaths += 1
            killed = exitcode == -signal.SIGKILL and running != DECODING
            bound = 10 * self.sup.max_deliveries * self.sup.processes
            if not killed or self.blameless_deaths > bound:
                charged = blamable[0].seq
        for item in leftovers:
            if unresolved(item.seq):
                self.ready.append(self.cond.void(item))
        self._requeue(blamable, charged, timed_out, exitcode)

    def _requeue(
        self, leftovers: list[WorkItem], charged: int | None, timed_out: int | None, exitcode: Any
    ) -> None:
        """A dead worker's items: time out, charge a delivery, or redeliver as they were."""
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
                    self._due(item)
            else:
                self._due(item)

    def _replace(self, handle: WorkerHandle, kill: bool) -> None:
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


def _open_sealed(task_id: str, value: pipe.Sealed) -> tuple[bool, Any, BaseException | None]:
    try:
        return True, value.open(), None
    except Exception as exc:  # noqa: BLE001 - this task's result is unusable
        detail = f"{type(exc).__name__}: {exc}"
        return (
            False,
            None,
            TaskError(task_id, f"its result could not be rebuilt in the driver: {detail}"),
        )


def _cpu_load(handle: WorkerHandle) -> int:
    """Items a worker holds for its cpu lane."""
    return len(handle.outstanding) - len(handle.concurrent)
