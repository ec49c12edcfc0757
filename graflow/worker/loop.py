"""The worker loop, written once for every backend: fetch, run in a lane, post, acknowledge.

    feed thread:  source.fetch() ──▶ Batch ──▶ dispatch, item by item:
                      ├─ cpu lane:   the serving thread, one plain sync task at a time
                      ├─ io lane:    a thread pool (``threads``), ``@task(io=True)``
                      └─ async lane: one event loop (``max_async`` in flight), ``async def``
    any lane:     finished item ──▶ source.seal() ──▶ Outcome ──▶ source.post(batch, outcomes)
                  (with the batch's last outcomes, ``final``: the source acknowledges it)

A source (the supervisor's pipe, a Redis stream) only moves bytes: it turns what arrives
into Batches and Outcomes into what leaves. Everything about running lives here:

* Items of a batch start in order; a plain sync item waits for the cpu lane, the others
  start at once in their lanes, so a process crunching numbers still runs its io and async
  tasks, and the feed thread keeps fetching while a lane has room.
* A conditional item (graflow.core.lookahead: ``after`` names its predecessor) starts only
  once its predecessor finished cleanly, after the predecessor's outcome was posted (the
  driver stores that result before the successor can read it, and a crash of the successor
  is charged to the successor); after anything else it is VOID.
* While the source drains (or the worker retires), an item not started yet is reported
  UNSTARTED (a conditional one VOID) instead of running.

Thread safety: ``post`` of a source is called one at a time (``_post_lock``), from
whichever lane finished; ``fetch`` only from the feed thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from graflow.config import DEFAULT_MAX_ASYNC, DEFAULT_THREADS, check_lane_sizes
from graflow.core.spec import Completion, Outcome, OutcomeKind, WorkItem
from graflow.core.task import ASYNC_LANE, CPU_LANE, IO_LANE
from graflow.exceptions import TaskError
from graflow.worker.runtime import RunState

__all__ = ["DEFAULT_MAX_ASYNC", "DEFAULT_THREADS", "Batch", "Room", "WorkLoop", "WorkSource"]

logger = logging.getLogger(__name__)

_MAX_FINISHED = 4096
_SHARE_POST_S = 0.002  # cpu outcomes of one batch within this long share one post


@dataclass(eq=False)
class Batch:
    """Items of one run that a source handed over together (a message, a stream entry).

    ``state`` is None when the source could not load the run; ``token`` is the source's own
    handle on the batch. The loop fills in the rest.
    """

    state: RunState | None
    items: list[WorkItem]
    afters: list[int]
    token: Any = None
    remaining: int = 0
    started: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the source's own bookkeeping


@dataclass(frozen=True)
class Room:
    """How much more a worker can take: the cpu lane's state and free io/async slots."""

    cpu_idle: bool
    io: int
    aio: int
    busy: bool  # anything in flight in any lane


class WorkSource(Protocol):
    """Where a WorkLoop's items come from and where their outcomes go.

    ``fetch`` is called from the feed thread only; it may block (a source that ``pushes``
    is read whenever it has something; a pulling one is asked only while some lane has
    room) and returns None once the loop must stop. ``seal`` is called in the lane that ran
    the item. ``post`` is called one at a time, from any lane's thread.
    """

    pushes: bool
    """True if the other side sends work unasked (it tracks each worker's room itself)."""

    def fetch(self, room: Room) -> list[Batch] | None:
        """Batches that arrived (maybe none), or None: stop serving."""

    def seal(self, batch: Batch, completion: Completion, waited_on: bool) -> Outcome:
        """The outcome to post for ``completion``; ``waited_on``: a successor runs next."""

    def post(self, batch: Batch, outcomes: list[Outcome], final: bool) -> None:
        """Send these outcomes of ``batch``; ``final``: they are its last, acknowledge it."""

    def on_start(self, batch: Batch, item: WorkItem, lane: str) -> None:
        """``item`` of ``batch`` starts now in ``lane`` (in that lane's thread)."""

    def on_end(self, batch: Batch, item: WorkItem, lane: str) -> None:
        """``item`` of ``batch`` is over in ``lane``."""

    def on_idle(self) -> None:
        """Every lane is idle now (called in the thread that finished last)."""

    def is_draining(self) -> bool:
        """True while items not started yet must go back unrun."""

    def task_done(self) -> None:
        """One more task finished here (the source may decide to retire the worker)."""


class _AsyncLane:
    """One event loop in a thread of its own, for the worker's ``async def`` tasks."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._lock = threading.Lock()
        self._starting: list[Coroutine[Any, Any, None]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run
        self.flush_due = False  # a flush of outcomes is scheduled on the loop
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the loop; one wake-up of the loop starts all submitted so far."""
        with self._lock:
            self._starting.append(coro)
            wake = len(self._starting) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        with self._lock:
            starting, self._starting = self._starting, []
        for coro in starting:
            task = self.loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)


class WorkLoop:
    """Serves one source: the feed thread fetches and dispatches, the lanes run."""

    def __init__(
        self,
        source: WorkSource,
        *,
        threads: int = DEFAULT_THREADS,
        max_async: int = DEFAULT_MAX_ASYNC,
        name: str = "graflow",
    ) -> None:
        check_lane_sizes(threads, max_async)
        self.source = source
        self.threads = threads
        self.max_async = max_async
        self.name = name
        self._cpu: deque[tuple[Batch, WorkItem]] = deque()
        self._cpu_closed = False
        self._io: ThreadPoolExecutor | None = None
        self._aio: _AsyncLane | None = None
        self._lock = threading.Lock()  # the books below
        self._post_lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._cpu_ready = threading.Condition(self._lock)
        self.cpu_pending = 0  # queued or running on the cpu lane
        self.io_running = 0
        self.aio_running = 0
        # Items by (run id, seq): seqs are unique within a run only.
        self._running: set[_Key] = set()  # dispatched (running, queued or waiting), not over
        self._finished: dict[_Key, bool] = {}  # over: clean?
        self._waiting: dict[_Key, list[tuple[Batch, WorkItem]]] = {}  # on a predecessor
        self._unposted: deque[tuple[Batch, Outcome]] = deque()
        self._stopped = False

    # -- the serving thread: feed thread started, then the cpu lane -------------------------
    def serve(self) -> None:
        """Serve until the source says stop; returns once every lane is idle."""
        feed = threading.Thread(target=self._feed, name=f"{self.name}-feed", daemon=True)
        feed.start()
        try:
            self._run_cpu_lane()
        finally:
            feed.join(5.0)
            self._close_lanes()

    def _run_cpu_lane(self) -> None:
        jobs = self._cpu
        while True:
            with self._lock:
                while not jobs and not self._cpu_closed:
                    self._cpu_ready.wait()
                if not jobs:
                    return
                batch, item = jobs.popleft()
            self._run_sync(batch, item)
            with self._lock:
                self.cpu_pending -= 1
                self._room.notify_all()
                idle = not (self.cpu_pending or self.io_running or self.aio_running)
            if idle:
                self.source.on_idle()

    def _close_cpu_lane(self) -> None:
        with self._lock:
            self._cpu_closed = True
            self._cpu_ready.notify_all()

    def _feed(self) -> None:
        source = self.source
        try:
            while True:
                room = self._wait_for_room()
                if room is None:
                    break
                batches = source.fetch(room)
                if batches is None:
                    break
                for batch in batches:
                    self._dispatch(batch)
        except Exception:  # a process boundary: the worker ends, its work is redelivered
            logger.exception("%s: the worker loop failed", self.name)
        finally:
            self._wait_idle()
            self._close_cpu_lane()

    def _wait_for_room(self) -> Room | None:
        with self._lock:
            while True:
                room = self._current_room()
                if self.source.pushes or room.cpu_idle:
                    return room
                # A pulling source is asked for more while a cpu task runs only when io or
                # async work is in flight too (and has room): plain tasks fetched now would
                # wait here while an idle worker elsewhere could run them.
                concurrent = self.io_running or self.aio_running
                if concurrent and (room.io or room.aio):
                    return room
                if self._stopped:
                    return None
                self._room.wait(0.5)

    def _current_room(self) -> Room:
        busy = bool(self.cpu_pending or self.io_running or self.aio_running)
        return Room(
            cpu_idle=self.cpu_pending == 0,
            io=self.threads - self.io_running,
            aio=self.max_async - self.aio_running,
            busy=busy,
        )

    def room(self) -> Room:
        """What this worker can take now."""
        with self._lock:
            return self._current_room()

    def _wait_idle(self) -> None:
        with self._lock:
            while self.io_running or self.aio_running:
                self._room.wait(0.5)

    def stop(self) -> None:
        """Wake a feed thread waiting for room (the source's own stop ends fetching)."""
        with self._lock:
            self._stopped = True
            self._room.notify_all()

    # -- dispatch ---------------------------------------------------------------------------
    def _dispatch(self, batch: Batch) -> None:
        batch.remaining = len(batch.items)
        batch.extra["posted"] = time.monotonic()
        if batch.remaining == 0:
            with self._post_lock:
                self.source.post(batch, [], True)
            return
        run_id = _run_of(batch)
        for item, after in zip(batch.items, batch.afters, strict=True):
            if after:
                with self._lock:
                    parent = (run_id, after)
                    if parent in self._running:
                        self._running.add((run_id, item.seq))
                        self._waiting.setdefault(parent, []).append((batch, item))
                        continue
                    clean = self._finished.get(parent, False)
                if not clean:
                    self._skip(batch, item, OutcomeKind.VOID)
                    continue
                self.flush()  # its predecessor's outcome goes out before it starts
            self._start(batch, item)

    def _lane_of(self, batch: Batch, item: WorkItem) -> str:
        state = batch.state
        if state is None:
            return CPU_LANE
        try:
            return str(state.node(item).lane)
        except KeyError:
            return CPU_LANE

    def _start(self, batch: Batch, item: WorkItem) -> None:
        lane = self._lane_of(batch, item)
        with self._lock:
            self._running.add((_run_of(batch), item.seq))
            if lane == IO_LANE:
                self.io_running += 1
            elif lane == ASYNC_LANE:
                self.aio_running += 1
            else:
                self.cpu_pending += 1
        if lane == IO_LANE:
            self._io_pool().submit(self._run_io, batch, item)
        elif lane == ASYNC_LANE:
            self._async_lane().submit(self._run_async(batch, item))
        else:
            with self._lock:
                self._cpu.append((batch, item))
                self._cpu_ready.notify()

    def _io_pool(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(self.threads, thread_name_prefix=f"{self.name}-io")
        return self._io

    def _async_lane(self) -> _AsyncLane:
        if self._aio is None:
            self._aio = _AsyncLane(f"{self.name}-async")
        return self._aio

    def _close_lanes(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)
        if self._aio is not None:
            self._aio.close()

    # -- running ----------------------------------------------------------------------------
    def _should_skip(self, batch: Batch, item: WorkItem) -> bool:
        if batch.state is None:
            return False
        if self.source.is_draining():
            self._skip(batch, item, OutcomeKind.UNSTARTED)
            return True
        return False

    def _run_sync(self, batch: Batch, item: WorkItem, lane: str = CPU_LANE) -> None:
        if self._should_skip(batch, item):
            return
        state = batch.state
        source = self.source
        source.on_start(batch, item, lane)
        try:
            completion = state.run(item) if state is not None else _no_run(item)
        finally:
            source.on_end(batch, item, lane)
        self._finish(batch, item, completion, lane)

    def _run_io(self, batch: Batch, item: WorkItem) -> None:
        try:
            self._run_sync(batch, item, IO_LANE)
        finally:
            with self._lock:
                self.io_running -= 1
                self._room.notify_all()
                idle = not (self.cpu_pending or self.io_running or self.aio_running)
            if idle:
                self.source.on_idle()

    async def _run_async(self, batch: Batch, item: WorkItem) -> None:
        try:
            if self._should_skip(batch, item):
                return
            state = batch.state
            self.source.on_start(batch, item, ASYNC_LANE)
            try:
                completion = await state.run_async(item) if state is not None else _no_run(item)
            finally:
                self.source.on_end(batch, item, ASYNC_LANE)
            self._finish(batch, item, completion, ASYNC_LANE)
        finally:
            with self._lock:
                self.aio_running -= 1
                self._room.notify_all()
                idle = not (self.cpu_pending or self.io_running or self.aio_running)
            if idle:
                self.source.on_idle()

    # -- outcomes ---------------------------------------------------------------------------
    def _finish(self, batch: Batch, item: WorkItem, completion: Completion, lane: str) -> None:
        with self._lock:
            waited_on = (_run_of(batch), item.seq) in self._waiting
        outcome = self.source.seal(batch, completion, waited_on)
        self.source.task_done()
        self._report(batch, outcome, lane=lane)

    def _skip(self, batch: Batch, item: WorkItem, kind: OutcomeKind) -> None:

        if kind is OutcomeKind.UNSTARTED and self._is_conditional(batch, item):
            kind = OutcomeKind.VOID
        self._report(batch, Outcome.skipped(item, kind), lane=CPU_LANE)

    @staticmethod
    def _is_conditional(batch: Batch, item: WorkItem) -> bool:
        for other, after in zip(batch.items, batch.afters, strict=True):
            if other is item:
                return bool(after)
        return False

    def _report(self, batch: Batch, outcome: Outcome, lane: str) -> None:
        """Record ``outcome``, post it, then start or void what waited on it."""
        clean = outcome.is_clean
        key = (_run_of(batch), outcome.seq)
        with self._lock:
            self._running.discard(key)
            self._finished[key] = clean
            if len(self._finished) > _MAX_FINISHED:
                for old in list(self._finished)[: _MAX_FINISHED // 2]:
                    del self._finished[old]
            waiters = self._waiting.pop(key, None)
            self._unposted.append((batch, outcome))
            # Short cpu tasks of one batch share one post; a slow one is posted at once, so
            # that its successors need not wait for the rest of the batch.
            defer = (
                waiters is None
                and lane == CPU_LANE
                and bool(self._cpu)
                and self._cpu[0][0] is batch
                and time.monotonic() - batch.extra.get("posted", 0.0) < _SHARE_POST_S
            )
        if lane == ASYNC_LANE and waiters is None and self._aio is not None:
            # Coroutines that finish in one turn of the event loop share one post.
            if not self._aio.flush_due:
                self._aio.flush_due = True
                self._aio.loop.call_soon(self._flush_async)
        elif not defer:
            self.flush()
        for waiting_batch, waiting_item in waiters or ():
            if clean and not self.source.is_draining():
                self._start(waiting_batch, waiting_item)
            else:
                self._skip(waiting_batch, waiting_item, OutcomeKind.VOID)

    def _flush_async(self) -> None:
        assert self._aio is not None
        self._aio.flush_due = False
        self.flush()

    def flush(self) -> None:
        """Post every outcome not posted yet, grouped by batch; ack the batches done."""
        with self._post_lock:
            with self._lock:
                unposted = list(self._unposted)
                self._unposted.clear()
            if not unposted:
                return
            groups: dict[int, tuple[Batch, list[Outcome]]] = {}
            for batch, outcome in unposted:
                groups.setdefault(id(batch), (batch, []))[1].append(outcome)
            now = time.monotonic()
            for batch, outcomes in groups.values():
                batch.remaining -= len(outcomes)
                self.source.post(batch, outcomes, batch.remaining <= 0)
                batch.extra["posted"] = now


_Key = tuple[str, int]


def _run_of(batch: Batch) -> str:
    return batch.state.run_id if batch.state is not None else ""


def _no_run(item: WorkItem) -> Completion:
    err = TaskError(item.task_id, "the worker has no graph for its run")
    return Completion(item.seq, item.task_id, False, None, err)
