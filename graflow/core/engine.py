"""The scheduler: one per run, in the driver, the only writer of run state.

    ExecutionContext ──ready ids──▶ Scheduler ──WorkItem──▶ backend ──▶ worker(s)
          ▲                            │  ▲                                │
          └──results, steps, cycles────┘  └───────────── Completion ◀──────┘

Scheduling rules (those of the upstream Graflow core, kept so scripts behave the same):
* A run is a tree of *frames*. The root frame is the run's FIFO queue; every member of a
  parallel group runs in a frame of its own (the member, then whatever its edges and
  dynamic tasks schedule). A frame runs one task at a time, in FIFO order; frames run
  concurrently. The group node is the join: it finishes when all its frames have.
* A finished task enqueues each of its successors in its frame (no join on plain edges),
  unless it jumped elsewhere (goto, or next_task to an existing node).
* A failed task is retried per its RetryPolicy: the retry waits in a timer heap and goes to
  the tail of its frame's queue when due, so other ready tasks run meanwhile.
* terminate_workflow ends the frame (the run, at the root); cancel_workflow fails it.

How a task runs is the backend's business (``graflow.core.backend``): in this thread, a
thread pool, worker processes, or workers across Redis.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graflow.channels.base import Deferred
from graflow.core.backend import ExecutorBackend, InProcessBackend, backend_factory
from graflow.core.checkpoint import Checkpointer, CheckpointMetadata, run_state, write_request
from graflow.core.cycle import base_task_id
from graflow.core.handler import TaskHandler, TaskResult
from graflow.core.handlers.direct import DirectTaskHandler
from graflow.core.lookahead import ChainLookahead, lookahead_depth
from graflow.core.observer import RunObserver
from graflow.core.policy import GroupExecutionPolicy, StrictGroupPolicy, resolve_group_policy
from graflow.core.spec import CheckpointRequest, Command, CommandKind, Completion, WorkItem
from graflow.core.task import (
    Executable,
    ParallelGroup,
    SequentialTask,
    TaskWrapper,
    group_members_key,
)
from graflow.core.workflow import get_current_workflow_context
from graflow.exceptions import (
    ConfigError,
    GraflowRuntimeError,
    GraflowWorkflowCanceledError,
    MaxStepsExceeded,
    ParallelGroupError,
    RetryLimitExceededError,
    UnknownHandlerError,
    UnknownTaskError,
    as_runtime_error,
)
from graflow.trace.noop import is_idle

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.trace.base import Tracer

__all__ = ["RunStats", "WorkflowEngine"]

logger = logging.getLogger(__name__)

_MULTI_BACKEND_SLICE_S = 0.005


class RunStats:
    """Counters of one run."""

    __slots__ = ("failures", "retries", "started_at", "tasks_run", "wall_s", "worker_deaths")

    def __init__(self) -> None:
        self.tasks_run = 0
        self.retries = 0
        self.failures = 0
        self.worker_deaths = 0
        self.wall_s = 0.0
        self.started_at = time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return {
            "tasks_run": self.tasks_run,
            "retries": self.retries,
            "failures": self.failures,
            "worker_deaths": self.worker_deaths,
            "wall_s": self.wall_s,
        }


class _Frame:
    """A FIFO of task ids that runs one task at a time (the root, or one group branch)."""

    __slots__ = (
        "backend",
        "busy",
        "dead",
        "error",
        "group",
        "inline",
        "light",
        "member_id",
        "queue",
        "timers",
        "waiting",
    )

    def __init__(self, queue: deque[str], group: _GroupRun | None, member_id: str) -> None:
        self.queue = queue
        self.group = group
        self.member_id = member_id
        self.busy = False
        self.dead = False
        self.waiting = False  # already in the scheduler's ready deque
        self.timers = 0  # retries waiting out their backoff
        # Run tasks in the driver thread: the root frame, and branches of "direct" groups.
        self.inline = group is None or group.exe.execution_backend == "direct"
        # Which backend runs this frame's tasks ("" = the run's own; else a group's, by name).
        self.backend = ""
        self.error: GraflowRuntimeError | None = None
        # The stand-in of a group's light members (see _start_light_members): no queue of
        # its own; a member that fails or issues a command gets a frame of its own then.
        self.light = False


class _GroupRun:
    """A parallel group in progress: its frames and the results of finished members."""

    __slots__ = ("exe", "failures", "member_ids", "outcomes", "parent", "pending", "started")

    def __init__(self, exe: ParallelGroup, parent: _Frame) -> None:
        self.exe = exe
        self.parent = parent
        self.member_ids = [m.task_id for m in exe.tasks]
        self.pending = len(self.member_ids)
        self.outcomes: dict[str, GraflowRuntimeError | None] = {}  # member -> its error
        self.failures = 0
        self.started = time.time()


class _Stop(Exception):
    """Internal: the run ended early (terminate at the root)."""


class WorkflowEngine:
    """Runs workflows: owns the task handlers and drives the scheduler of each run."""

    def __init__(self, backend: ExecutorBackend | None = None) -> None:
        self._handlers: dict[str, TaskHandler] = {"direct": DirectTaskHandler()}
        self._backend = backend
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        """Called in the driver with a run's counters (run_id, done, failed, retries, running,
        queued) at most every ``progress_interval_s``, between scheduling steps."""
        self.progress_interval_s = 0.1
        self.observer: RunObserver | None = None
        """Told of every state change of the runs this engine drives (graflow.history)."""

    def register_handler(self, handler_type: str, handler: TaskHandler) -> None:
        """Make ``handler`` run the tasks declared with ``@task(handler=handler_type)``."""
        if not isinstance(handler, TaskHandler):
            raise TypeError(f"{handler!r} is not a TaskHandler")
        self._handlers[handler_type] = handler

    @property
    def handlers(self) -> dict[str, TaskHandler]:
        """The registered handlers by name."""
        return self._handlers

    def _get_handler(self, task: Executable) -> TaskHandler:
        """The handler registered for ``task.handler_type`` (UnknownHandlerError if none)."""
        handler = self._handlers.get(task.handler_type)
        if handler is None:
            raise UnknownHandlerError(task.handler_type, list(self._handlers))
        return handler

    def _execute_task(self, task: Executable, context: ExecutionContext) -> Any:
        """Run one task through its handler in this thread, outside any scheduling."""
        handler = self._get_handler(task)
        with context.executing_task(task):
            return handler.execute_task(task, context)

    def execute(self, context: ExecutionContext, start_task_id: str | None = None) -> Any:
        """Run ``context`` until its queue is empty; return the last root task's result."""
        return _Scheduler(self, context, self._backend).run(start_task_id)

    def run(
        self,
        context: ExecutionContext,
        start_task_id: str | None = None,
        *,
        checkpointer: Checkpointer | None = None,
    ) -> tuple[Any, RunStats]:
        """Like ``execute``, and also return the run's counters; ``checkpointer`` saves it."""
        scheduler = _Scheduler(self, context, self._backend)
        scheduler.checkpointer = checkpointer
        return scheduler.run(start_task_id), scheduler.stats

    def run_group(self, context: ExecutionContext, group: ParallelGroup) -> None:
        """Run one parallel group (and its branches) in ``context``."""
        scheduler = _Scheduler(self, context, self._backend)
        scheduler.run_only(group)

    def execute_with_cycles(self, graph: Any, start_node: str, max_steps: int = 10) -> Any:
        """Create a run over ``graph`` from ``start_node`` and execute it."""
        from graflow.core.context import ExecutionContext  # noqa: PLC0415 - context imports us

        return self.execute(ExecutionContext.create(graph, start_node, max_steps=max_steps))


class _Scheduler:
    """The state machine of one run (see the module docstring)."""

    def __init__(
        self, engine: WorkflowEngine, context: ExecutionContext, backend: ExecutorBackend | None
    ) -> None:
        self.engine = engine
        self.context = context
        self.graph = context.graph
        self.nodes = context.graph._nodes
        self.succ = context.graph._succ
        self.backend: ExecutorBackend = backend or self._default_backend(context)
        self.backends: dict[str, ExecutorBackend] = {"": self.backend}
        self.pending_by_backend: dict[str, int] = {"": 0}
        self.stats = RunStats()
        self.seq = itertools.count(1)
        self.inflight: dict[int, tuple[_Frame, WorkItem]] = {}
        self.ready: deque[_Frame] = deque()
        self.timers: list[tuple[float, int, _Frame, str]] = []
        self.last_result: Any = None
        self.stopped = False
        # Groups whose last branch ended, finished one after another rather than from inside
        # each other: a group nested N deep would otherwise recurse 4N frames deep (#14).
        self.ended_groups: deque[_GroupRun] = deque()
        self.finishing_groups = False
        # Executables added at run time, in order (remote backends ship them to workers).
        self.dynamic_nodes: list[Executable] = []
        self.dynamic_counted = 0  # of dynamic_nodes, those a growing max_steps counted
        self.configured: set[str] = set()  # tasks whose own cycle/retry settings are applied
        self.on_progress = engine.on_progress
        self.observer = engine.observer
        self.next_progress = 0.0
        self.checkpointer: Checkpointer | None = None
        self.failed_task: str | None = None  # the root task whose failure ended the run
        self.thread_id = 0
        self.prepare_kwargs = bool(getattr(self.backend, "prepares_kwargs", False))
        # Arguments may be Deferred values (large results still in shared memory), which the
        # backend forwards as they are: read them from the channel unresolved.
        peek = getattr(context.channel, "peek", None)
        self.argument_source: Any = (
            _Peeking(peek)
            if peek is not None and getattr(self.backend, "forwards_deferred", False)
            else context.channel
        )
        depth = lookahead_depth(self.backend)
        self.lookahead = ChainLookahead(depth) if depth else None
        self.light_members = bool(getattr(self.backend, "light_members", False))
        # Tracing (graflow.trace.base): None when the run is not traced, so that costs nothing.
        tracer = context.tracer
        self.tracer = None if is_idle(tracer) or context.parent_context is not None else tracer
        self.task_tracer = None  # the tracer when it wants per-task hooks here, in the driver
        self.trace_parent: str | None = None  # what work items carry to workers
        if self.tracer is not None and not self.tracer.traces_attempts_where_they_run:
            self.task_tracer = self.tracer
            # Each attempt must be dispatched and completed in plain sight of the hooks; a
            # conditional item may come back unrun.
            self.lookahead = None
        current = get_current_workflow_context()
        self.in_block = current is not None and current.graph is self.graph
        queue = getattr(context.task_queue, "ids", None)
        if backend is None and backend_factory(context.queue_backend) is not None:
            # A remote queue backend: the scheduler keeps the run's FIFO; tasks go remote.
            start = context.start_node
            queue = deque([start] if start and context.graph.has_node(start) else [])
        elif not isinstance(queue, deque):
            # A queue class of its own (registered with TaskQueueFactory): the scheduler
            # takes over what it holds and keeps the run's FIFO itself.
            queue = deque()
            while True:
                task_id = context.task_queue.get_next_task()
                if task_id is None:
                    break
                queue.append(task_id)
        self.root = _Frame(queue, None, "")
        groups = getattr(context, "_resume_groups", None)
        if groups:
            context._resume_groups = None
            self._restore_group(self.root, groups)

    @staticmethod
    def _default_backend(context: ExecutionContext) -> ExecutorBackend:
        factory = backend_factory(context.queue_backend)
        if factory is not None:
            return factory(context, dict(context.config))
        return InProcessBackend()

    def _backend_of(self, frame: _Frame) -> ExecutorBackend:
        key = frame.backend
        backend = self.backends.get(key)
        if backend is None:
            factory = backend_factory(key)
            if factory is None:
                raise ConfigError(f"no execution backend named {key!r} is available")
            options = dict(self.context.config)
            if frame.group is not None:
                options.update(frame.group.exe.backend_config)
            backend = factory(self.context, options)
            backend.start_run(self)
            self.backends[key] = backend
            self.pending_by_backend[key] = 0
        return backend

    # -- entry points -----------------------------------------------------------------
    def run(self, start_task_id: str | None) -> Any:
        observer = self.observer
        if observer is None:
            return self._run(start_task_id)
        observer.run_started(self.context.session_id, self.graph)
        try:
            value = self._run(start_task_id)
        except BaseException as exc:
            observer.run_finished(exc)
            raise
        observer.run_finished(None)
        return value

    def _run(self, start_task_id: str | None) -> Any:
        if start_task_id is not None:
            self.root.queue.appendleft(start_task_id)
        self._mark_ready(self.root)
        self.backend.start_run(self)
        self.context._scheduler = self
        self.thread_id = threading.get_ident()
        tracer = self.tracer
        if tracer is None:
            return self._run_checkpointed()
        self._trace_start(tracer)
        try:
            result = self._run_checkpointed()
        except BaseException as exc:
            self._trace_end(tracer, exc)
            raise
        self._trace_end(tracer, None)
        return result

    def _run_checkpointed(self) -> Any:
        checkpointer = self.checkpointer
        try:
            if checkpointer is not None:
                checkpointer.start(self)
            self._loop()
            self._check_step_limit()
            if checkpointer is not None:
                checkpointer.finish(self)
        except Exception as exc:
            if checkpointer is not None:
                checkpointer.fail(self, exc)
            raise
        finally:
            self.context._scheduler = None
            self.stats.wall_s = time.monotonic() - self.stats.started_at
            if self.on_progress is not None:  # the final counters, however the run ended
                self.next_progress = 0.0
                self._report_progress(self.on_progress)
            for backend in self.backends.values():
                backend.end_run(self)
        if isinstance(self.last_result, Deferred):
            self.last_result = self.last_result.resolve()
        return self.last_result

    def run_only(self, group: ParallelGroup) -> None:
        self.backend.start_run(self)
        try:
            self.root.busy = True
            self._start_group(self.root, group)
            self._loop()
        finally:
            for backend in self.backends.values():
                backend.end_run(self)

    # -- tracing (graflow.trace) --------------------------------------------------------
    def _workflow_name(self) -> str:
        ctx = self.context
        name = getattr(ctx, "workflow_name", None)  # a WorkerContext has none
        return str(name) if name else f"workflow_{ctx.session_id[:8]}"

    def _trace_start(self, tracer: Tracer) -> None:
        tracer.on_workflow_start(self._workflow_name(), self.context)
        self.trace_parent = tracer.trace_parent()
        self.context.attempt_spans = tracer.attempt_spans()

    def _trace_end(self, tracer: Tracer, error: BaseException | None) -> None:
        self.context.attempt_spans = None
        if error is not None:
            tracer.on_workflow_failed(self._workflow_name(), self.context, error)
        tracer.on_workflow_end(self._workflow_name(), self.context, result=self.last_result)

    def _trace_task_end(self, tracer: Tracer, item: WorkItem, completion: Completion) -> None:
        exe = self.nodes.get(item.task_id, {}).get("task")
        if exe is not None:
            tracer.on_task_end(exe, self.context, completion.value, completion.error)

    def _trace_dynamic(self, tracer: Tracer, cmd: Command, parent_id: str) -> None:
        tracer.on_dynamic_task_added(
            cmd.task_id,
            parent_task_id=parent_id,
            is_iteration="_cycle_" in cmd.task_id,
            metadata={"task_type": type(cmd.executable).__name__, "goto": cmd.goto},
        )

    # -- the loop ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self.ready and not self.stopped:
                self._dispatch()
            if self.on_progress is not None:
                self._report_progress(self.on_progress)
            if not self.inflight:
                if self.stopped or not self.timers:
                    break
                self._sleep_until_timer()
                continue
            completions = self._wait(self._timer_timeout())
            if self.observer is not None:
                self.observer.tasks_done(completions)
            for completion in completions:
                self._apply(completion)
            if self.timers:
                self._fire_timers()

    def _report_progress(self, report: Callable[[dict[str, Any]], None]) -> None:
        now = time.monotonic()
        if now < self.next_progress:
            return
        self.next_progress = now + self.engine.progress_interval_s
        stats = self.stats
        report(
            {
                "run_id": self.context.session_id,
                "done": stats.tasks_run - stats.failures,
                "failed": stats.failures,
                "retries": stats.retries,
                "running": len(self.inflight)
                - (0 if self.lookahead is None else len(self.lookahead.parent_of)),
                "queued": sum(len(f.queue) for f in self.ready) + len(self.timers),
                "worker_deaths": stats.worker_deaths,
                "completed": len(self.context.completed_tasks),
            }
        )

    def _wait(self, timeout: float | None) -> list[Completion]:
        if len(self.backends) == 1:
            return self.backend.wait(timeout)
        busy = [k for k, n in self.pending_by_backend.items() if n > 0]
        if len(busy) == 1:
            return self.backends[busy[0]].wait(timeout)
        # Tasks out on several backends: look at each in turn, briefly.
        slice_s = (
            _MULTI_BACKEND_SLICE_S if timeout is None else min(timeout, _MULTI_BACKEND_SLICE_S)
        )
        out: list[Completion] = []
        for key in busy:
            out.extend(self.backends[key].wait(0.0 if out else slice_s))
        return out

    def _timer_timeout(self) -> float | None:
        if not self.timers:
            return None
        return max(0.0, self.timers[0][0] - time.monotonic())

    def _sleep_until_timer(self) -> None:
        delay = self._timer_timeout()
        if delay:
            time.sleep(delay)
        # The earliest retry is due now that we slept for it, whatever the clock says (a
        # sleep patched out by a test returns at once; looping on the clock would spin).
        self._fire_timers(at_least=self.timers[0][0] if self.timers else 0.0)

    def _fire_timers(self, at_least: float = 0.0) -> None:
        now = max(time.monotonic(), at_least)
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, frame, task_id = heapq.heappop(timers)
            frame.timers -= 1
            if frame.dead:
                continue
            frame.queue.append(task_id)
            self._mark_ready(frame)

    def _mark_ready(self, frame: _Frame) -> None:
        if not frame.waiting and not frame.busy and frame.queue and not frame.dead:
            frame.waiting = True
            self.ready.append(frame)

    # -- dispatch ---------------------------------------------------------------------
    def _dispatch(self) -> None:
        ctx = self.context
        ready = self.ready
        while ready:
            if ctx.steps + len(self.inflight) >= ctx.max_steps:
                self._hit_step_limit()
                return
            frame = ready.popleft()
            frame.waiting = False
            if frame.busy or frame.dead or not frame.queue:
                continue
            task_id = frame.queue.popleft()
            try:
                exe = self._lookup(task_id)
            except UnknownTaskError as exc:
                self._fail_frame(frame, exc)
                continue
            frame.busy = True
            if isinstance(exe, ParallelGroup):
                self._start_group(frame, exe)
                continue
            item = self._make_item(task_id, exe, frame)
            self.inflight[item.seq] = (frame, item)
            self.pending_by_backend[frame.backend] += 1
            backend = self.backend if not frame.backend else self._backend_of(frame)
            completion = backend.submit(item, exe, frame.inline)
            if completion is not None:
                if self.observer is not None:
                    self.observer.tasks_done((completion,))
                self._apply(completion)
            elif self.lookahead is not None and not frame.backend and self.succ.get(task_id):
                self.lookahead.extend(self, frame, item)
            if self.stopped:
                return

    def _lookup(self, task_id: str) -> Executable:
        data = self.nodes.get(task_id)
        if data is not None:
            exe = data.get("task")
            if exe is not None:
                return exe  # type: ignore[no-any-return]
        try:
            return self.graph.get_node(task_id)
        except KeyError:
            known = [node for node, node_data in self.nodes.items() if "task" in node_data]
            raise UnknownTaskError(task_id, known, edge_only=task_id in self.nodes) from None

    def _make_item(
        self, task_id: str, exe: Executable, frame: _Frame, *, prepare: bool = True
    ) -> WorkItem:
        """The work item of ``task_id``'s next attempt (its arguments resolved here if the
        backend wants them so and ``prepare``; else the worker resolves them at start)."""
        item = self._new_item(task_id, exe, frame, prepare)
        if self.observer is not None:
            self.observer.tasks_queued((item,))
        return item

    def _new_item(self, task_id: str, exe: Executable, frame: _Frame, prepare: bool) -> WorkItem:
        """``_make_item`` untold to the observer (the caller tells it of a whole batch)."""
        ctx = self.context
        cc = ctx.cycle_controller
        rc = ctx.retry_controller
        if task_id not in self.configured:
            self._configure(task_id, exe)
        if self.task_tracer is not None:
            self.task_tracer.on_task_start(exe, ctx)
        attempt = rc.retry_counts.get(task_id, 0)
        base = task_id if "_cycle_" not in task_id else base_task_id(task_id)
        counts = cc.cycle_counts
        if attempt == 0:
            cycle = counts.get(base, 0) + 1
            counts[base] = cycle
        else:
            cycle = counts.get(base, 0)
        kwargs = None
        if (
            prepare
            and (self.prepare_kwargs if not frame.backend else self._prepares(frame))
            and isinstance(exe, TaskWrapper)
        ):
            names = exe._param_names
            if names is None:
                names = exe.parameter_names()
            if exe._bound_kwargs or (exe.resolve_keyword_args and names):
                source = self.argument_source if not frame.backend else ctx.channel
                kwargs = exe.build_arguments(source, (), {})[1]
        return WorkItem(
            next(self.seq),
            task_id,
            attempt,
            cycle,
            cc.node_max_cycles.get(base, cc.default_max_cycles),
            rc.node_max_retries.get(task_id, rc.default_max_retries),
            kwargs,
            getattr(exe, "timeout_s", None),
            self.in_block and frame.group is None,
            self.trace_parent,
        )

    def _configure(self, task_id: str, exe: Executable) -> None:
        """Apply a task's own cycle and retry settings, the first time it is dispatched."""
        self.configured.add(task_id)
        if not isinstance(exe, TaskWrapper):
            return
        ctx = self.context
        if exe.max_cycles is not None:
            ctx.cycle_controller.set_node_max_cycles(task_id, exe.max_cycles)
        if exe.retry_policy is not None:
            ctx.retry_controller.set_node_policy(task_id, exe.retry_policy)
        elif exe.max_retries is not None:
            ctx.retry_controller.node_max_retries[task_id] = exe.max_retries

    def _prepares(self, frame: _Frame) -> bool:
        return bool(getattr(self._backend_of(frame), "prepares_kwargs", False))

    def handler_for(self, exe: Executable) -> TaskHandler:
        """The handler that runs ``exe`` (UnknownHandlerError if not registered)."""
        return self.engine._get_handler(exe)

    def _check_step_limit(self) -> None:
        """Say that the run stopped at max_steps; raise MaxStepsExceeded if work was left and
        the caller asked for that (``graflow.run``; ``wf.execute`` stops quietly, as upstream)."""
        ctx = self.context
        if not ctx.max_steps_reached:
            return
        if ctx.max_steps_fails and ctx.max_steps_pending:
            error = MaxStepsExceeded(ctx.session_id, ctx.max_steps, ctx.max_steps_pending)
            error.stats = self.stats
            error.context = ctx
            raise error
        logger.warning(
            "run %s stopped at max_steps=%d with %d task(s) still queued "
            "(a loop without an exit? raise max_steps or end it with terminate_workflow)",
            ctx.session_id,
            ctx.max_steps,
            ctx.max_steps_pending,
        )

    def _hit_step_limit(self) -> None:
        # Each hit drops the ready frames: count what they held, once per frame (the root
        # frame may be among them). A first hit may find only a chain's adopted successor.
        frames = {id(frame): frame for frame in (*self.ready, self.root)}
        pending = sum(len(frame.queue) for frame in frames.values())
        ctx = self.context
        ctx.max_steps_reached = True
        ctx.max_steps_pending = max(ctx.max_steps_pending, pending)
        for frame in self.ready:
            frame.waiting = False  # a later completion may queue work in it again: counted
        self.ready.clear()
        self.stopped = not self.inflight

    # -- completions ------------------------------------------------------------------
    def _apply(self, completion: Completion) -> None:
        entry = self.inflight.pop(completion.seq, None)
        if entry is None:
            return  # a late duplicate (e.g. a redelivered task finished twice)
        frame, item = entry
        if self.task_tracer is not None:
            self._trace_task_end(self.task_tracer, item, completion)
        if frame.light:
            if completion.ok and not completion.commands:
                self._finish_light(frame, item.task_id, completion)
                return
            frame = self._own_frame(frame, item.task_id)
        self.pending_by_backend[frame.backend] -= 1
        if completion.void:
            if self.lookahead is not None:
                self.lookahead.on_void(self, item)
            return
        frame.busy = False
        self.stats.tasks_run += 1
        if not completion.ok or completion.commands:
            self._apply_unclean(frame, item, completion)
            return
        if not completion.stored:
            self.context.set_result(item.task_id, completion.value)
        self.context._goto_called = False  # the flag describes the last finished task
        self._finish(frame, item.task_id, completion.value, goto=False)
        lookahead = self.lookahead
        if lookahead is not None and item.seq in lookahead.child_of:
            lookahead.on_completion(self, frame, item.seq, clean=True)

    def _apply_unclean(self, frame: _Frame, item: WorkItem, completion: Completion) -> None:
        """A task failed or issued commands."""
        if self.lookahead is not None:
            self.lookahead.on_completion(self, frame, item.seq, clean=False)
        if not completion.ok:
            self._on_failure(frame, item.task_id, completion.error, completion.traceback)
            return
        if not completion.stored:
            self.context.set_result(item.task_id, completion.value)
        assert completion.commands is not None
        self._finish_with_commands(frame, item.task_id, completion.value, completion.commands)

    def _finish_light(self, stand_in: _Frame, task_id: str, completion: Completion) -> None:
        """A light member finished cleanly: its branch is over (the _finish path, inlined)."""
        self.pending_by_backend[stand_in.backend] -= 1
        self.stats.tasks_run += 1
        ctx = self.context
        if not completion.stored:
            ctx.set_result(task_id, completion.value)
        ctx._goto_called = False
        if task_id not in ctx._completed_set:
            ctx._completed_set.add(task_id)
            ctx.completed_tasks.append(task_id)
        ctx.steps += 1
        run = stand_in.group
        assert run is not None
        if task_id not in run.outcomes:
            run.outcomes[task_id] = None
            run.pending -= 1
            if run.pending == 0:
                self._finish_group(run)
        if self.checkpointer is not None:
            self.checkpointer.tick(self)

    @staticmethod
    def _own_frame(stand_in: _Frame, task_id: str) -> _Frame:
        """The frame of a light member that needs one (it failed or issued commands)."""
        frame = _Frame(deque(), stand_in.group, task_id)
        frame.backend = stand_in.backend
        frame.busy = True
        return frame

    def _finish_with_commands(
        self, frame: _Frame, task_id: str, value: Any, commands: list[Command]
    ) -> None:
        cancel = next((c for c in commands if c.kind is CommandKind.CANCEL), None)
        if cancel is not None:
            self.context._cancel_called = True
            self._fail_frame(frame, GraflowWorkflowCanceledError(cancel.message, task_id=task_id))
            return
        request = _checkpoint_request(commands)
        if request is not None and request.immediate:
            write_request(self, request, rerun=(frame, task_id))  # as if still running
        goto = False
        terminate = False
        for cmd in commands:
            if cmd.kind is CommandKind.NEXT_TASK:
                if self.tracer is not None:
                    self._trace_dynamic(self.tracer, cmd, task_id)
                self._add_dynamic(cmd)
                frame.queue.append(cmd.task_id)
                goto = goto or cmd.goto
            elif cmd.kind is CommandKind.TERMINATE:
                terminate = True
                self.context.ctrl_message = cmd.message
        self.context._goto_called = goto
        if terminate:
            self.context._terminate_called = True
            frame.queue.clear()
        self._finish(frame, task_id, value, goto=goto or terminate, terminate=terminate)
        if request is not None and not request.immediate:
            write_request(self, request)  # upstream: after the successors were queued

    def _add_dynamic(self, cmd: Command) -> None:
        exe = cmd.executable
        if exe is None:
            return
        graph = self.graph
        if isinstance(exe, SequentialTask):
            items = list(exe.tasks)
            for item in items:
                if item.task_id not in self.nodes:
                    graph.add_node(item)
                    self.dynamic_nodes.append(item)
            for left, right in itertools.pairwise(items):
                graph.add_edge(left.task_id, right.task_id)
            self._grow_step_limit()
            return
        if cmd.task_id not in self.nodes:
            graph.add_node(exe, cmd.task_id)
            self.dynamic_nodes.append(exe)
        if isinstance(exe, ParallelGroup):
            for member in exe.tasks:
                if member.task_id not in self.nodes:
                    graph.add_node(member)
                    self.dynamic_nodes.append(member)
        self._grow_step_limit()

    def _grow_step_limit(self) -> None:
        """A default max_steps scales with the graph: each task added at run time adds one."""
        ctx = self.context
        if ctx.max_steps_grows:
            added = len(self.dynamic_nodes) - self.dynamic_counted
            ctx.max_steps += added
            self.dynamic_counted += added

    def _finish(
        self, frame: _Frame, task_id: str, value: Any, goto: bool, terminate: bool = False
    ) -> None:
        ctx = self.context
        if task_id not in ctx._completed_set:
            ctx._completed_set.add(task_id)
            ctx.completed_tasks.append(task_id)
        ctx.steps += 1
        if frame is self.root:
            self.last_result = value
            if terminate:
                self.stopped = True
                return
        if not goto:
            succs = self.succ.get(task_id)
            if succs:
                frame.queue.extend(succs)
        self._after_step(frame)

    def _after_step(self, frame: _Frame) -> None:
        if frame.queue:
            self._mark_ready(frame)
        elif not frame.busy and not frame.timers and frame.group is not None:
            self._end_branch(frame)
        if self.checkpointer is not None:
            self.checkpointer.tick(self)

    # -- failures and retries ---------------------------------------------------------
    def _raise_exit(self, err: BaseException) -> None:
        if isinstance(err, SystemExit | KeyboardInterrupt):
            # A task's exit or interrupt, caught by the worker that ran it: the run ends
            # with it as it would in this process (issue 14, point 12), never retried.
            self.stopped = True
            raise err

    def _on_failure(
        self,
        frame: _Frame,
        task_id: str,
        error: BaseException | None,
        tb: str | None = None,
        *,
        counted: bool = True,
    ) -> None:
        rc = self.context.retry_controller
        err: BaseException = error if error is not None else GraflowRuntimeError("task failed")
        self._raise_exit(err)
        if counted:
            self.stats.failures += 1
        if rc.accept_retry(task_id):
            rc.increment(task_id, err)
            self.stats.retries += 1
            delay = rc.get_delay(task_id)
            if self.observer is not None:
                attempt = rc.get_retry_count(task_id)
                self.observer.task_event(task_id, "retried", attempt, f"{err} (in {delay:.3g}s)")
            logger.info(
                "run %s task %s failed (%s); retry %d/%d in %.3gs",
                self.context.session_id,
                task_id,
                err,
                rc.get_retry_count(task_id),
                rc.get_max_retries_for_node(task_id),
                delay,
            )
            if delay <= 0:
                frame.queue.append(task_id)
            elif self._is_idle_but(frame):
                # Nothing else could run meanwhile: wait here, in one sleep of the policy's
                # delay, as upstream does (tests patch time.sleep and count the calls).
                time.sleep(delay)
                frame.queue.append(task_id)
            else:
                frame.timers += 1
                heapq.heappush(
                    self.timers, (time.monotonic() + delay, next(self.seq), frame, task_id)
                )
            self._after_step(frame)
            return
        if rc.get_retry_count(task_id) > 0:
            count = rc.increment(task_id, err)
            failure: GraflowRuntimeError = RetryLimitExceededError(
                task_id, count, rc.get_max_retries_for_node(task_id), err
            )
        else:
            failure = as_runtime_error(err)
        if failure.task_id is None:  # name the failing task for reports (graflow run)
            failure.task_id = task_id
        if failure.remote_traceback is None:
            failure.remote_traceback = tb
        if frame is self.root:
            self.failed_task = task_id
        self._fail_frame(frame, failure)

    def _is_idle_but(self, frame: _Frame) -> bool:
        """True if nothing but ``frame``'s failed task is left to run or wait for."""
        return not (self.inflight or self.ready or self.timers or frame.queue or frame.busy)

    def _fail_frame(self, frame: _Frame, error: GraflowRuntimeError) -> None:
        if frame is self.root:
            self.stopped = True
            raise error
        frame.dead = True
        frame.error = error
        frame.queue.clear()
        frame.busy = False
        self._end_branch(frame)

    # -- parallel groups --------------------------------------------------------------
    def _start_group(self, parent: _Frame, group: ParallelGroup) -> None:
        run = _GroupRun(group, parent)
        if self.tracer is not None:
            self.tracer.on_parallel_group_start(group.task_id, run.member_ids, self.context)
        self._group_event(group, "started")
        if not run.member_ids:
            self._finish_group(run)
            return
        key = self._branch_backend(parent, group)
        members = run.member_ids
        if self.light_members and not key and group.execution_backend != "direct":
            members = self._start_light_members(run)
        for member_id in members:
            frame = _Frame(deque((member_id,)), run, member_id)
            frame.backend = key
            frame.waiting = True
            self.ready.append(frame)

    def _start_light_members(self, run: _GroupRun) -> list[str]:
        """Submit the members that need no frame; return the others.

        A light member is a plain task with no successor and no timeout: its branch is the
        task alone, so it runs under one stand-in frame for the group, and only a member
        that fails or issues a command gets a frame of its own (``_own_frame``). This saves
        a frame and a pass through the ready queue per member of a wide group.
        """
        ctx = self.context
        stand_in = _Frame(deque(), run, "")
        stand_in.light = True
        stand_in.busy = True
        rest: list[str] = []
        succ = self.succ
        inflight = self.inflight
        submit = self.backend.submit
        count = 0
        observed: list[WorkItem] | None = [] if self.observer is not None else None
        for member_id in run.member_ids:
            exe = self.nodes.get(member_id, {}).get("task")
            if (
                type(exe) is not TaskWrapper
                or succ.get(member_id)
                or exe.timeout_s is not None
                or ctx.steps + len(inflight) >= ctx.max_steps
            ):
                rest.append(member_id)
                continue
            item = self._new_item(member_id, exe, stand_in, True)
            inflight[item.seq] = (stand_in, item)
            submit(item, exe, False)
            count += 1
            if observed is not None:
                observed.append(item)
        self.pending_by_backend[""] += count
        if observed and self.observer is not None:  # one note for the whole group
            self.observer.tasks_queued(observed)
        return rest

    @staticmethod
    def _branch_backend(parent: _Frame, group: ParallelGroup) -> str:
        kind = group.execution_backend
        return kind if kind is not None and backend_factory(kind) is not None else parent.backend

    def _end_branch(self, frame: _Frame) -> None:
        run = frame.group
        if run is None or frame.member_id in run.outcomes:
            return
        if not frame.dead and (frame.timers or frame.busy):
            return
        run.outcomes[frame.member_id] = frame.error
        if frame.error is not None:
            run.failures += 1
        run.pending -= 1
        if run.pending == 0:
            self._finish_groups_from(run)

    def _finish_groups_from(self, run: _GroupRun) -> None:
        """Finish ``run``, then each enclosing group that its finishing completes, in a loop."""
        self.ended_groups.append(run)
        if self.finishing_groups:
            return  # the loop below, further up the stack, takes it
        self.finishing_groups = True
        try:
            while self.ended_groups:
                self._finish_group(self.ended_groups.popleft())
        finally:
            self.finishing_groups = False
            self.ended_groups.clear()

    def _finish_group(self, run: _GroupRun) -> None:
        group = run.exe
        parent = run.parent
        parent.busy = False
        if self.tracer is not None:
            self.tracer.on_parallel_group_end(group.task_id, run.member_ids, self.context)
        policy = resolve_group_policy(group.policy)
        if type(policy) is StrictGroupPolicy and not run.failures and not run.pending:
            pass  # every member succeeded: nothing for the default policy to decide
        else:
            try:
                self._apply_group_policy(run, policy)
            except ParallelGroupError as exc:
                self._group_event(group, "failed", str(exc))
                # Why the members failed travels with the group's error to the user (#18);
                # the group itself is no task run, so it is not counted as a failed one.
                exc.member_errors = {m: e for m, e in run.outcomes.items() if e is not None}
                self._on_failure(parent, group.task_id, exc, counted=False)
                return
            except (ValueError, TypeError) as exc:
                self._group_event(group, "failed", str(exc))
                self._fail_frame(parent, as_runtime_error(exc))
                return
        self._group_event(group, "succeeded")
        self._forget_failed_results(run)
        self.context.set_result(group.task_id, None)  # None, as upstream
        # A successor's parameter named after the group receives {member_id: result}.
        self.context.channel.set(group_members_key(group.task_id), list(run.member_ids))
        self._finish(parent, group.task_id, None, goto=False)

    def _forget_failed_results(self, run: _GroupRun) -> None:
        # Upstream drops a failed branch's writes, so get_result(failed member) is None after
        # a group that tolerated the failure; branches share the channel here, so only the
        # failed member's stored exception is dropped.
        if run.failures:
            channel = self.context.channel
            for member_id, error in run.outcomes.items():
                if error is not None:
                    channel.delete(f"{member_id}.__result__")

    def _group_event(self, group: ParallelGroup, state: str, detail: str = "") -> None:
        if self.observer is not None:
            attempt = self.context.retry_controller.retry_counts.get(group.task_id, 0)
            self.observer.task_event(group.task_id, state, attempt, detail)

    def _apply_group_policy(self, run: _GroupRun, policy: GroupExecutionPolicy) -> None:
        now = time.time()
        results = {
            mid: TaskResult(
                task_id=mid,
                success=error is None,
                error=error,
                error_message=None if error is None else str(error),
                duration=now - run.started,
                timestamp=now,
            )
            for mid in run.member_ids
            if mid in run.outcomes
            for error in (run.outcomes[mid],)
        }
        policy.on_group_finished(run.exe.task_id, list(run.exe.tasks), results, self.context)

    # -- checkpoints (graflow.core.checkpoint) ------------------------------------------
    def owns_thread(self) -> bool:
        """True in the thread that runs this scheduler (where its state may be read)."""
        return threading.get_ident() == self.thread_id

    def checkpoint_now(self, request: CheckpointRequest) -> tuple[str, CheckpointMetadata]:
        """Write the checkpoint a task asked for, from the scheduler's thread."""
        return write_request(self, request)

    def checkpoint_state(self) -> dict[str, Any]:
        """The run's checkpoint state now."""
        return run_state(self)

    def pending_work(
        self, rerun: tuple[_Frame, str] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """The work not done yet, as plain data, and the ids of the tasks in flight.

        The root frame's ``{"queue": [...]}``: tasks in flight first (``rerun`` among them),
        then the queue, then retries waiting out their backoff. A frame running a parallel
        group also has ``"group": {"id", "finished": {member: error or None}, "branches":
        [{"member", "queue", "group"?}]}`` for the branches not finished yet.
        """
        head: dict[int, list[str]] = {}
        tail: dict[int, list[str]] = {}
        unresolved = self.lookahead.is_unresolved if self.lookahead is not None else None
        in_flight = [
            (self._own_frame(frame, item.task_id) if frame.light else frame, item.task_id)
            for frame, item in self.inflight.values()
            if unresolved is None or not unresolved(item.seq)
        ]
        if rerun is not None:
            in_flight.append(rerun)
        for frame, task_id in in_flight:
            head.setdefault(id(frame), []).append(task_id)
        for _, _, frame, task_id in sorted(self.timers, key=lambda t: (t[0], t[1])):
            tail.setdefault(id(frame), []).append(task_id)
        groups: dict[int, _GroupRun] = {}  # id(parent frame) -> the group it runs
        branches: dict[int, list[_Frame]] = {}  # id(group run) -> its live branches
        todo = [f for f, _ in in_flight] + list(self.ready) + [t[2] for t in self.timers]
        seen: set[int] = set()
        while todo:
            frame = todo.pop()
            run = frame.group
            if id(frame) in seen or run is None:
                continue
            seen.add(id(frame))
            if not frame.dead and frame.member_id not in run.outcomes:
                branches.setdefault(id(run), []).append(frame)
            groups[id(run.parent)] = run
            todo.append(run.parent)

        def describe(frame: _Frame) -> dict[str, Any]:
            state: dict[str, Any] = {
                "queue": head.get(id(frame), []) + list(frame.queue) + tail.get(id(frame), [])
            }
            run = groups.get(id(frame))
            if run is not None:
                live = sorted(
                    branches.get(id(run), []), key=lambda f: run.member_ids.index(f.member_id)
                )
                state["group"] = {
                    "id": run.exe.task_id,
                    "finished": {m: None if e is None else str(e) for m, e in run.outcomes.items()},
                    "branches": [{"member": b.member_id, **describe(b)} for b in live],
                }
            return state

        return describe(self.root), [task_id for _, task_id in in_flight]

    def _restore_group(self, parent: _Frame, state: dict[str, Any]) -> None:
        """Rebuild a parallel group that was in progress at a checkpoint (``pending_work``)."""
        group = self._lookup(str(state["id"]))
        if not isinstance(group, ParallelGroup):
            raise GraflowRuntimeError(f"checkpointed group {state['id']!r} is not a parallel group")
        parent.busy = True
        run = _GroupRun(group, parent)
        for member, error in state["finished"].items():
            run.outcomes[member] = None if error is None else GraflowRuntimeError(error)
            run.failures += error is not None
        run.pending = len(state["branches"])
        key = self._branch_backend(parent, group)
        for branch in state["branches"]:
            frame = _Frame(deque(branch["queue"]), run, branch["member"])
            frame.backend = key
            if branch.get("group"):
                self._restore_group(frame, branch["group"])
            elif frame.queue:
                frame.waiting = True
                self.ready.append(frame)
            else:
                self._end_branch(frame)
        if run.pending == 0:
            self._finish_group(run)


class _Peeking:
    """A channel's ``peek`` under the name ``get`` (what TaskWrapper.build_arguments calls)."""

    __slots__ = ("get",)

    def __init__(self, peek: Callable[..., Any]) -> None:
        self.get = peek


def _checkpoint_request(commands: list[Command]) -> CheckpointRequest | None:
    """The last checkpoint a task asked for, if any."""
    for cmd in reversed(commands):
        if cmd.kind is CommandKind.CHECKPOINT:
            return cmd.metadata  # type: ignore[no-any-return]
    return None
