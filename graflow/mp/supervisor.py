"""The supervisor: a persistent pool of worker processes serving one run at a time.

    scheduler ─submit─▶ ProcessBackend.pending ─flush─▶ ITEMS batch ─pipe─▶ worker i
    scheduler ◀─wait─── completions ◀──── DONE batch / sentinel (death) ◀── worker i

This module starts, replaces and stops the workers (graflow.mp.pool holds their handles);
graflow.mp.backend moves a run's items and completions and handles the faults below.

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
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from graflow.config import lane_sizes
from graflow.core.interrupt import drain_on_signals
from graflow.exceptions import BackendUnavailable, ConfigError
from graflow.mp import mapped, pipe, shm
from graflow.mp.backend import ProcessBackend
from graflow.mp.guard import check_main_guard
from graflow.mp.pipe import Msg
from graflow.mp.pool import Poller, WorkerHandle
from graflow.mp.worker import WorkerSettings, worker_main
from graflow.trace.setup import TraceSetup

if TYPE_CHECKING:
    pass

__all__ = ["ProcessBackend", "Supervisor"]

logger = logging.getLogger(__name__)


class Supervisor:
    """A pool of worker processes that runs workflows; reuse it for many runs.

    ``with Supervisor(processes=8) as sup: sup.run(wf_a); sup.run(wf_b)`` forks once.
    Each process runs plain tasks one at a time, up to ``threads`` ``io=True`` tasks at once
    on a thread pool, and up to ``max_async`` ``async def`` tasks on an event loop
    (defaults: GRAFLOW_THREADS or 16, GRAFLOW_MAX_ASYNC or 1000).
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
        chain_lookahead: int = 8,
        tracing: TraceSetup | None = None,
        threads: int | None = None,
        max_async: int | None = None,
    ) -> None:
        count = (os.cpu_count() or 1) if processes is None else processes
        if count < 1:
            raise ConfigError(f"processes must be >= 1 for a Supervisor, got {processes}")
        if max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, got {max_deliveries}")
        if chain_lookahead < 0:
            raise ConfigError(f"chain_lookahead must be >= 0, got {chain_lookahead}")
        if shm_threshold_bytes < 1024:
            raise ConfigError(f"shm_threshold_bytes must be >= 1024, got {shm_threshold_bytes}")
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        if method not in mp.get_all_start_methods():
            raise ConfigError(
                f"start_method {start_method!r} is not available here; "
                f"choose one of {mp.get_all_start_methods()}"
            )
        self.threads, self.max_async = lane_sizes(threads, max_async)
        """Per worker process: io tasks run at once, async tasks kept in flight."""
        check_main_guard(method)  # before any worker starts (spawn re-imports the script)
        self.processes = count
        self.start_method = method
        self.max_deliveries = max_deliveries
        self.grace_s = grace_s
        self.shm_threshold_bytes = shm_threshold_bytes
        self.chain_lookahead = chain_lookahead
        """How many of a chain's next tasks go out with the running one (0: none); see
        graflow.core.lookahead."""
        self.tracing = tracing
        """Where workers send the spans of traced runs (None: they make none); see
        graflow.trace.setup."""
        self._max_tasks = max_tasks_per_worker
        self._max_rss = None if max_rss_mb is None else int(max_rss_mb * 1024 * 1024)
        self._ctx = mp.get_context(method)
        self._slots = self._ctx.RawArray("q", count + 1)  # a slot per worker, then DRAINING
        self._handles: list[WorkerHandle] = []
        self._poller = Poller()
        self._fds: dict[int, tuple[WorkerHandle, bool]] = {}  # fd -> (worker, is its sentinel)
        # Written when a run starts draining: wakes the driver from a poll with no timeout,
        # so that the grace period holds while every worker is deep in a long task (#14).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._wake_r)
        self._dead_pids: list[int] = []
        self._closed = False
        self._lock = threading.Lock()
        self.worker_deaths = 0
        # Segments of supervisors or workers that were killed before they could clean up.
        shm.sweep_orphans()
        for index in range(count):
            self._handles.append(self._spawn(index))

    # -- lifecycle --------------------------------------------------------------------
    def _spawn(self, index: int) -> WorkerHandle:
        parent, child = self._ctx.Pipe(duplex=True)
        settings = WorkerSettings(
            index=index,
            shm_threshold_bytes=self.shm_threshold_bytes,
            max_tasks=self._max_tasks,
            max_rss_bytes=self._max_rss,
            inherited_fds=self._parent_fds(parent) if self.start_method == "fork" else (),
            parent_pid=os.getpid(),
            tracing=self.tracing,
            threads=self.threads,
            max_async=self.max_async,
        )
        proc = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child, self._slots, settings),
            name=f"graflow-worker-{index}",
            daemon=True,
        )
        if self.start_method == "fork":
            mapped.collect()  # a forked worker would keep dead values' pages alive
        proc.start()
        child.close()
        self._slots[index] = 0
        handle = WorkerHandle(index, proc, parent)
        for fd, is_sentinel in ((parent.fileno(), False), (proc.sentinel, True)):
            self._fds[fd] = (handle, is_sentinel)
            self._poller.register(fd)
        return handle

    def _parent_fds(self, parent: Connection) -> tuple[int, ...]:
        return (parent.fileno(), *(h.conn.fileno() for h in self._handles if not h.conn.closed))

    def _forget(self, handle: WorkerHandle) -> None:
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
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

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

    def wake(self) -> None:
        """Make the driver's current (or next) poll for worker messages return at once."""
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self._wake_w, b"w")

    def take_wake(self) -> None:
        """Consume pending wake-ups (the driver's poll returned because of one)."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    @contextmanager
    def signals_drain(self, backend: ProcessBackend) -> Iterator[None]:
        """While a run is active on the main thread: SIGTERM/SIGINT drain, a 2nd SIGINT stops."""

        def hand_back_unstarted() -> None:
            self._slots[self.processes] = 1  # workers hand back the items not started
            self.wake()

        with drain_on_signals(backend, self.grace_s, hand_back_unstarted):
            yield
