"""Execution backends: how the scheduler's WorkItems get run.

The scheduler calls ``submit`` for every ready task and ``wait`` for completions. A backend
may run an item at once and return its Completion from ``submit`` (the in-process backend
does so for the root frame, which keeps a plain chain free of any thread hand-off), or queue
it and return it later from ``wait``.
"""

from __future__ import annotations

import importlib
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from graflow.core.context import ExecutionContext, TaskExecutionContext
from graflow.core.deadline import run_with_deadline
from graflow.core.handler import TaskHandler
from graflow.core.scope import current_task_context
from graflow.core.spec import Completion, WorkItem
from graflow.exceptions import UnknownHandlerError

if TYPE_CHECKING:
    from graflow.core.task import Executable

__all__ = [
    "BACKEND_FACTORIES",
    "ExecutorBackend",
    "InProcessBackend",
    "backend_factory",
    "run_item",
]


class ExecutorBackend(Protocol):
    """Runs WorkItems for one scheduler at a time (driver side of the worker protocol)."""

    def start_run(self, scheduler: Any) -> None:
        """Get ready for a run (ship its graph to workers, start threads, ...)."""

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        """Hand over one item; return its Completion if it already ran."""

    def wait(self, timeout_s: float | None) -> list[Completion]:
        """Block until at least one completion is available (or the timeout); return all."""

    def end_run(self, scheduler: Any) -> None:
        """The run is over: release what ``start_run`` took."""


# Backends that live in optional layers, by name (a queue backend or a group's coordination
# backend), registered by their modules: name -> factory(context, options) -> backend.
BACKEND_FACTORIES: dict[str, Callable[[ExecutionContext, dict[str, Any]], ExecutorBackend]] = {}
_BACKEND_MODULES = {"redis": "graflow.redis.backend"}


def backend_factory(
    name: str | None,
) -> Callable[[ExecutionContext, dict[str, Any]], ExecutorBackend] | None:
    """The factory of the backend called ``name`` (importing its module on first use)."""
    if not name:
        return None
    factory = BACKEND_FACTORIES.get(name)
    if factory is None and name in _BACKEND_MODULES:
        importlib.import_module(_BACKEND_MODULES[name])
        factory = BACKEND_FACTORIES.get(name)
    return factory


def run_item(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
) -> Completion:
    """Run one item through its handler in this thread and describe the outcome.

    When the run is traced (the item carries a trace context and this process makes
    attempt spans), the attempt runs inside its span.
    """
    spans = context.attempt_spans
    if spans is not None and item.trace is not None:
        token = spans.start(item)
        completion = None
        try:
            completion = _run_item(context, item, exe, handlers)
        finally:
            spans.end(token, completion)  # None: interrupted (KeyboardInterrupt, exit)
        return completion
    return _run_item(context, item, exe, handlers)


def _run_item(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
) -> Completion:
    task_ctx = TaskExecutionContext(
        item.task_id,
        context,
        cycle_count=item.cycle_count,
        max_cycles=item.max_cycles,
        retry_count=item.attempt,
        max_retries=item.max_retries,
        task=exe,
        prepared_kwargs=item.kwargs,
        scheduled=True,
    )
    token = current_task_context.set(task_ctx)
    exe._execution_context = context
    started = time.perf_counter()
    try:
        handler = handlers.get(exe.handler_type)
        if handler is None:
            raise UnknownHandlerError(exe.handler_type, list(handlers))
        value = handler.execute_task(exe, context)
    except Exception as exc:  # noqa: BLE001 - a task's failure becomes its completion
        return Completion(
            item.seq,
            item.task_id,
            False,
            None,
            exc,
            None,
            time.perf_counter() - started,
            traceback.format_exc(),
            True,
        )
    finally:
        current_task_context.reset(token)
    return Completion(
        item.seq,
        item.task_id,
        True,
        value,
        None,
        task_ctx.commands or None,
        time.perf_counter() - started,
        None,
        True,
    )


class InProcessBackend:
    """Root-frame tasks run in the calling thread; parallel branches on a thread pool.

    Threads are started on first use (up to ``max_threads``) and stopped at the end of the
    run. Worker threads start with an empty ``contextvars`` context, so no workflow block
    is current inside a branch, as with the upstream engine.
    """

    def __init__(self, max_threads: int | None = None) -> None:
        self.max_threads = max_threads or max(16, 2 * (os.cpu_count() or 1))
        self._work: queue.SimpleQueue[tuple[WorkItem, Executable] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._queued = 0
        self._context: ExecutionContext | None = None
        self._handlers: dict[str, TaskHandler] = {}

    def start_run(self, scheduler: Any) -> None:
        self._context = scheduler.context
        self._handlers = scheduler.engine.handlers

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        context = self._context
        assert context is not None
        if inline:
            return self._run(item, exe)
        self._queued += 1
        if len(self._threads) < min(self._queued, self.max_threads):
            thread = threading.Thread(
                target=self._serve, name=f"graflow-branch-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._work.put((item, exe))
        return None

    def _serve(self) -> None:
        work = self._work
        done = self._done
        while True:
            entry = work.get()
            if entry is None:
                return
            item, exe = entry
            done.put(self._run(item, exe))

    def _run(self, item: WorkItem, exe: Executable) -> Completion:
        context = self._context
        assert context is not None
        return run_with_deadline(
            item, item.timeout_s, lambda: run_item(context, item, exe, self._handlers)
        )

    def wait(self, timeout_s: float | None) -> list[Completion]:
        try:
            first = self._done.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        done = self._done
        while True:
            try:
                batch.append(done.get_nowait())
            except queue.Empty:
                break
        self._queued -= len(batch)
        return batch

    def end_run(self, scheduler: Any) -> None:
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._queued = 0
