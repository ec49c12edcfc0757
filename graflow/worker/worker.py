"""``TaskWorker``: serve a Redis queue from threads of this process, like a node does.

    TaskWorker.start()
      ├── thread 0 ─┐  each a graflow.redis.node.RedisWorker loop on the queue's stream:
      ├── thread 1 ─┤  XREADGROUP → verify → run (handler) → XADD done → XACK+XDEL,
      └── thread N ─┘  lease heartbeats, reclaiming entries of dead workers, dead letters
    on_completion (in each thread) → counters of get_metrics()

``max_concurrent_tasks`` threads run at most that many tasks at once. The tasks are those
of any run submitted to the queue (``graflow.run(wf, redis=URL)``, or a context created with
``queue_backend="redis"``); their producers schedule successors and read the completions.

Shutdown (``stop()``, SIGTERM/SIGINT, or the end of the interpreter): every loop stops
claiming at once; each thread finishes the task in hand and hands back entries it claimed
but did not start. A task still running after the grace period keeps its thread (threads
cannot be killed) but no longer its lease: once the lease expires another worker may run
it again, as when a worker process dies (the producer applies the first completion only).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import uuid
from types import FrameType
from typing import Any

from graflow.core.handler import TaskHandler as CoreTaskHandler
from graflow.core.spec import Completion
from graflow.exceptions import ConfigError, TaskTimeoutError
from graflow.queue.redis import RedisTaskQueue
from graflow.redis import keys
from graflow.redis.node import NodeSettings, RedisWorker
from graflow.worker.handler import InProcessTaskExecutor

__all__ = ["TaskWorker"]

logger = logging.getLogger(__name__)

_RESTART_MAX_S = 5.0


class TaskWorker:
    """Runs tasks from a ``RedisTaskQueue`` on up to ``max_concurrent_tasks`` threads.

    ``start()`` returns at once; ``stop()`` is graceful and idempotent. Both are thread safe.
    ``handler`` runs the tasks of the default handler type (``@task`` without
    ``handler=...``); tasks that name another handler use the one their run registered.
    Upstream's positional form ``TaskWorker(queue, "worker-1")`` names the worker.
    """

    def __init__(
        self,
        queue: RedisTaskQueue,
        handler: CoreTaskHandler | str | None = None,
        worker_id: str | None = None,
        max_concurrent_tasks: int = 4,
        poll_interval: float = 0.1,
        graceful_shutdown_timeout: float = 30.0,
        tracer_config: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(queue, RedisTaskQueue):
            raise ValueError("TaskWorker requires a RedisTaskQueue instance")
        if isinstance(handler, str) and worker_id is None:
            handler, worker_id = None, handler
        if handler is not None and not isinstance(handler, CoreTaskHandler):
            raise TypeError(
                f"handler must be a TaskHandler (graflow.worker.handler), got {handler!r}"
            )
        if max_concurrent_tasks < 1:
            raise ConfigError(f"max_concurrent_tasks must be >= 1, got {max_concurrent_tasks}")
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval must be > 0, got {poll_interval}")
        self.queue = queue
        self.handler = handler
        self.worker_id = worker_id or f"worker_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        keys.node(self.worker_id)  # ConfigError now for an id that cannot name Redis keys
        self.max_concurrent_tasks = max_concurrent_tasks
        self.poll_interval = poll_interval
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.tracer_config = tracer_config  # accepted for upstream scripts; tracing is not built in
        self.is_running = False
        self.is_stopping = False
        self.tasks_processed = 0
        self.tasks_succeeded = 0
        self.tasks_failed = 0
        self.tasks_timeout = 0
        self.total_execution_time = 0.0
        self.start_time: float | None = None
        # Reentrant: the SIGTERM/SIGINT handler calls stop() in the main thread, which may
        # be inside start() or get_metrics() holding the lock at that moment.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._loops: list[RedisWorker | None] = []
        self._threads: list[threading.Thread] = []
        self._previous_handlers: dict[int, Any] = {}
        self._install_signal_handlers()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start serving the queue in background threads (no-op if already running)."""
        with self._lock:
            if self.is_running:
                return
            self._stopping.clear()
            self.is_running = True
            self.start_time = time.monotonic()
            self._loops = [None] * self.max_concurrent_tasks
            self._threads = [
                threading.Thread(
                    target=self._serve, args=(index,), name=f"{self.worker_id}-{index}", daemon=True
                )
                for index in range(self.max_concurrent_tasks)
            ]
        for thread in self._threads:
            thread.start()
        atexit.register(self._stop_at_exit)
        self._install_signal_handlers()
        logger.info(
            "worker %s serving queue %r with %d thread(s)",
            self.worker_id,
            self.queue.queue_name,
            self.max_concurrent_tasks,
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming tasks and wait for those in hand; idempotent.

        Waits up to ``timeout`` seconds (default: ``graceful_shutdown_timeout``); returns at
        once when the worker is not running or another caller is already stopping it.
        """
        with self._lock:
            if not self.is_running:
                self._restore_signal_handlers()
                return
            if self.is_stopping:
                return
            self.is_stopping = True
            self._stopping.set()
            loops = [loop for loop in self._loops if loop is not None]
        for loop in loops:
            loop.stop()
        grace = self.graceful_shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + grace
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():  # a task may stop
                thread.join(max(0.0, deadline - time.monotonic()))
        busy = sum(thread.is_alive() for thread in self._threads)
        if busy:
            logger.warning(
                "worker %s: %d task(s) still running after %.1f s; their entries return to "
                "the queue when their lease expires if this process exits first",
                self.worker_id,
                busy,
                grace,
            )
        atexit.unregister(self._stop_at_exit)
        self._restore_signal_handlers()
        with self._lock:
            self.is_running = False
            self.is_stopping = False
        logger.info("worker %s stopped", self.worker_id)

    def _stop_at_exit(self) -> None:
        self.stop()

    # -- metrics ------------------------------------------------------------------------
    def get_metrics(self) -> dict[str, Any]:
        """Counters and state of this worker (the keys of upstream's TaskWorker)."""
        with self._lock:
            processed = self.tasks_processed
            succeeded = self.tasks_succeeded
            total = self.total_execution_time
            metrics: dict[str, Any] = {
                "worker_id": self.worker_id,
                "is_running": self.is_running,
                "is_stopping": self.is_stopping,
                "active_tasks": self.active_tasks,
                "max_concurrent_tasks": self.max_concurrent_tasks,
                "tasks_processed": processed,
                "tasks_succeeded": succeeded,
                "tasks_failed": self.tasks_failed,
                "tasks_timeout": self.tasks_timeout,
                "total_execution_time": total,
                "average_execution_time": total / processed if processed else 0.0,
                "success_rate": succeeded / processed if processed else 0.0,
                "runtime": time.monotonic() - self.start_time if self.start_time else 0.0,
            }
        return metrics

    @property
    def active_tasks(self) -> int:
        """Threads holding claimed entries right now (each runs one task at a time)."""
        return sum(1 for loop in self._loops if loop is not None and loop.in_hand)

    def _record(self, completion: Completion) -> None:
        with self._lock:
            self.tasks_processed += 1
            self.total_execution_time += completion.duration_s
            if completion.ok:
                self.tasks_succeeded += 1
            else:
                self.tasks_failed += 1
                if isinstance(completion.error, TaskTimeoutError):
                    self.tasks_timeout += 1

    # -- the threads --------------------------------------------------------------------
    def _serve(self, index: int) -> None:
        """One loop of the queue; a loop that crashes is replaced until the worker stops."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                loop = self._new_loop(index)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._loops[index] = loop
                loop.serve()
                return
            except Exception:  # a thread's top: log, then serve again
                logger.exception("worker %s: loop %d crashed; restarting it", self.worker_id, index)
                self._stopping.wait(delay)
                delay = min(delay * 2, _RESTART_MAX_S)

    def _new_loop(self, index: int) -> RedisWorker:
        queue = self.queue
        settings = NodeSettings(
            url="",
            queue=queue.queue_name,
            node_id=self.worker_id,
            lease_ms=queue.stream.lease_ms,
            max_deliveries=queue.stream.max_deliveries,
            grace_s=self.graceful_shutdown_timeout,
            block_ms=max(1, int(self.poll_interval * 1000)),
        )
        handler = self.handler
        overrides = {}
        if handler is not None and type(handler) is not InProcessTaskExecutor:
            overrides["direct"] = handler
        return RedisWorker(
            settings,
            queue.signer,
            f"{self.worker_id}:{uuid.uuid4().hex[:6]}:{index}",
            client=queue.client,
            handlers=overrides,
            on_completion=self._record,
        )

    # -- signals ------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if self._previous_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous, self._previous_handlers = self._previous_handlers, {}
        for sig, handler in previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.is_running:
            # Not started (or stopped): the signal means what it meant before this worker.
            self._restore_signal_handlers()
            signal.raise_signal(signum)
            return
        logger.info("worker %s: %s received, stopping", self.worker_id, signal.Signals(signum).name)
        self.stop()
