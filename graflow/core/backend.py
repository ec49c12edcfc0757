"""Execution backends: how the scheduler's WorkItems get run.

The scheduler calls ``submit`` for every ready task and ``wait`` for completions. A backend
may run an item at once and return its Completion from ``submit`` (the in-process backend
does so for the root frame, which keeps a plain chain free of any thread hand-off), or queue
it and return it later from ``wait``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
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
from graflow.exceptions import TaskError, TaskTimeoutError, UnknownHandlerError

if TYPE_CHECKING:
    from graflow.core.task import Executable

__all__ = [
    "BACKEND_FACTORIES",
    "ExecutorBackend",
    "InProcessBackend",
    "backend_factory",
    "run_item",
    "run_item_async",
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


# What a worker turns into a task's failure; in the driver's own thread an exit or an
# interrupt raised by a task ends the run as it would any program (issue 14, point 12).
WORKER_CATCHES: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)
_DRIVER_CATCHES: tuple[type[BaseException], ...] = (Exception,)


def _task_context(
    context: ExecutionContext, item: WorkItem, exe: Executable
) -> TaskExecutionContext:
    return TaskExecutionContext(
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


def _failed(item: WorkItem, exc: BaseException, started: float) -> Completion:
    return Completion(
        item.seq,
        item.task_id,
        ok=False,
        error=exc,
        duration_s=time.perf_counter() - started,
        traceback=traceback.format_exc(),
        stored=True,
    )


def _succeeded(item: WorkItem, value: Any, commands: list[Any], started: float) -> Completion:
    return Completion(
        item.seq,
        item.task_id,
        ok=True,
        value=value,
        commands=commands or None,
        duration_s=time.perf_counter() - started,
        stored=True,
    )


def _handler(exe: Executable, handlers: dict[str, TaskHandler]) -> TaskHandler:
    handler = handlers.get(exe.handler_type)
    if handler is None:
        raise UnknownHandlerError(exe.handler_type, list(handlers))
    return handler


def _no_coroutine(exe: Executable, value: Any, context: ExecutionContext) -> None:
    if inspect.iscoroutine(value):
        value.close()  # never awaited: close it so Python does not warn at exit
        error = TaskError(
            exe.task_id,
            "it returned a coroutine, which a sync task's caller never awaits: make the "
            "function itself `async def` (graflow awaits those on the worker's event loop)",
        )
        context.set_result(exe.task_id, error)  # in place of the coroutine the handler stored
        raise error


def run_item(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
    *,
    in_worker: bool = False,
) -> Completion:
    """Run one item through its handler in this thread and describe the outcome.

    ``in_worker``: this thread is a worker's, where SystemExit and KeyboardInterrupt raised
    by the task are its failure, not the end of the process. When the run is traced (the
    item carries a trace context and this process makes attempt spans), the attempt runs
    inside its span.
    """
    spans = context.attempt_spans
    if spans is not None and item.trace is not None:
        token = spans.start(item)
        completion = None
        try:
            completion = _run_item(context, item, exe, handlers, in_worker)
        finally:
            spans.end(token, completion)  # None: interrupted (KeyboardInterrupt, exit)
        return completion
    return _run_item(context, item, exe, handlers, in_worker)


def _run_item(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
    in_worker: bool,
) -> Completion:
    catches = WORKER_CATCHES if in_worker else _DRIVER_CATCHES
    task_ctx = _task_context(context, item, exe)
    token = current_task_context.set(task_ctx)
    exe._execution_context = context
    started = time.perf_counter()
    try:
        value = _handler(exe, handlers).execute_task(exe, context)
        _no_coroutine(exe, value, context)
    except catches as exc:
        return _failed(item, exc, started)
    finally:
        current_task_context.reset(token)
    return _succeeded(item, value, task_ctx.commands, started)


async def _within(awaitable: Any, item: WorkItem) -> Any:
    """``await awaitable``, cancelled at the item's ``timeout_s`` (TaskTimeoutError)."""
    if item.timeout_s is None:
        return await awaitable
    scope = asyncio.timeout(item.timeout_s)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if not scope.expired():
            raise  # the task's own TimeoutError
        raise TaskTimeoutError(item.task_id, item.timeout_s) from None


async def run_item_async(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
    *,
    in_worker: bool = False,
) -> Completion:
    """Run an ``async def`` task's item on the running event loop (see ``run_item``).

    The handler is called as for any task; the coroutine it hands back is awaited here, up
    to the item's ``timeout_s`` (then cancelled: TaskTimeoutError), and its value replaces
    the coroutine as the task's result. Each call runs in its own asyncio task, whose copy
    of the context variables keeps the task context apart from its neighbours'.
    """
    spans = context.attempt_spans
    if spans is not None and item.trace is not None:
        token = spans.start(item)
        completion = None
        try:
            completion = await _run_item_async(context, item, exe, handlers, in_worker)
        finally:
            spans.end(token, completion)
        return completion
    return await _run_item_async(context, item, exe, handlers, in_worker)


async def _run_item_async(
    context: ExecutionContext,
    item: WorkItem,
    exe: Executable,
    handlers: dict[str, TaskHandler],
    in_worker: bool,
) -> Completion:
    catches = WORKER_CATCHES if in_worker else _DRIVER_CATCHES
    task_ctx = _task_context(context, item, exe)
    token = current_task_context.set(task_ctx)
    exe._execution_context = context
    started = time.perf_counter()
    try:
        value = _handler(exe, handlers).execute_task(exe, context)
        if inspect.isawaitable(value):
            try:
                value = await _within(value, item)
            except catches as exc:
                context.set_result(item.task_id, exc)
                raise
            context.set_result(item.task_id, value)
    except catches as exc:
        return _failed(item, exc, started)
    finally:
        current_task_context.reset(token)
    return _succeeded(item, value, task_ctx.commands, started)


class InProcessBackend:
    """Root-frame tasks run in the calling thread; parallel branches on a thread pool.

    Threads are started on first use (up to ``max_threads``) and stopped at the end of the
    run. Worker threads start with an empty ``contextvars`` context, so no workflow block
    is current inside a branch, as with the upstream engine. ``io=True`` tasks always go to
    those threads; ``async def`` tasks run on one event loop in a thread of its own, up to
    ``max_async`` at once.
    """

    def __init__(self, max_threads: int | None = None, max_async: int = 1000) -> None:
        self.max_threads = max_threads or max(16, 2 * (os.cpu_count() or 1))
        self.max_async = max_async
        self._work: queue.SimpleQueue[tuple[WorkItem, Executable] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._queued = 0
        self._context: ExecutionContext | None = None
        self._handlers: dict[str, TaskHandler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._async_slots: asyncio.Semaphore | None = None

    def start_run(self, scheduler: Any) -> None:
        self._context = scheduler.context
        self._handlers = scheduler.engine.handlers

    def submit(self, item: WorkItem, exe: Executable, inline: bool) -> Completion | None:
        context = self._context
        assert context is not None
        lane = exe.lane
        if lane == "async":
            self._queued += 1
            self._submit_async(item, exe)
            return None
        if inline and lane != "io":
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

    def _submit_async(self, item: WorkItem, exe: Executable) -> None:
        loop = self._event_loop()
        asyncio.run_coroutine_threadsafe(self._run_async(item, exe), loop)

    async def _run_async(self, item: WorkItem, exe: Executable) -> None:
        assert self._context is not None and self._async_slots is not None
        async with self._async_slots:
            completion = await run_item_async(
                self._context, item, exe, self._handlers, in_worker=True
            )
        self._done.put(completion)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                self._async_slots = asyncio.Semaphore(self.max_async)
                started.set()
                loop.run_forever()
                loop.close()

            self._loop_thread = threading.Thread(target=serve, name="graflow-async", daemon=True)
            self._loop_thread.start()
            started.wait()
            self._loop = loop
        return self._loop

    def _serve(self) -> None:
        work = self._work
        done = self._done
        while True:
            entry = work.get()
            if entry is None:
                return
            item, exe = entry
            # A branch thread must outlive its task's sys.exit(): the scheduler raises it.
            done.put(self._run(item, exe, in_worker=True))

    def _run(self, item: WorkItem, exe: Executable, in_worker: bool = False) -> Completion:
        context = self._context
        assert context is not None
        return run_with_deadline(
            item,
            item.timeout_s,
            lambda: run_item(context, item, exe, self._handlers, in_worker=in_worker),
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
        loop, self._loop = self._loop, None
        if loop is not None and self._loop_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=5)
            self._loop_thread = None
