"""Run state (ExecutionContext) and what a running task sees of it (TaskExecutionContext).

The ExecutionContext of a run is owned by the scheduler in the driver: only the engine
writes its run state. A task talks to the run through its TaskExecutionContext, whose
control methods (``next_task``, ``next_iteration``, ``terminate_workflow``,
``cancel_workflow``) only *record* commands; the engine applies them when the task's
completion arrives, whichever process the task ran in.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from graflow.channels.base import Channel
from graflow.channels.factory import ChannelFactory
from graflow.channels.typed import TypedChannel
from graflow.core.cycle import CycleController, base_task_id
from graflow.core.graph import TaskGraph
from graflow.core.retry import RetryController
from graflow.core.scope import current_task_context
from graflow.core.spec import CheckpointRequest, Command, CommandKind
from graflow.core.task import Executable, ParallelGroup, SequentialTask, Task, TaskWrapper
from graflow.exceptions import CycleLimitExceededError, GraflowRuntimeError
from graflow.queue.base import TaskQueue, TaskSpec
from graflow.queue.factory import QueueBackend, TaskQueueFactory
from graflow.trace.base import Tracer
from graflow.trace.noop import NoopTracer
from graflow.trace.span import AttemptSpans

__all__ = [
    "ExecutionContext",
    "TaskExecutionContext",
    "create_execution_context",
    "execute_with_cycles",
]

logger = logging.getLogger(__name__)

# What pickling raises for objects it cannot handle (locks, sockets, open files, generators).
_PICKLE_ERRORS = (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError)


class TaskExecutionContext:
    """What ``inject_context=True`` passes to a task: its view of the run, and its controls."""

    def __init__(
        self,
        task_id: str,
        execution_context: ExecutionContext,
        *,
        cycle_count: int | None = None,
        max_cycles: int | None = None,
        retry_count: int | None = None,
        max_retries: int | None = None,
        task: Executable | None = None,
        prepared_kwargs: dict[str, Any] | None = None,
        scheduled: bool = False,
    ) -> None:
        self.task_id = task_id
        # True when a scheduler runs this task and applies its commands once it returns;
        # a task run by hand (executing_task, create_task_context) applies them at once.
        self.scheduled = scheduled
        self.execution_context = execution_context
        cc = execution_context.cycle_controller
        rc = execution_context.retry_controller
        self.cycle_count = cc.get_cycle_count(task_id) if cycle_count is None else cycle_count
        self.max_cycles = cc.get_max_cycles_for_node(task_id) if max_cycles is None else max_cycles
        self.retry_count = rc.get_retry_count(task_id) if retry_count is None else retry_count
        self.max_retries = (
            rc.get_max_retries_for_node(task_id) if max_retries is None else max_retries
        )
        self.task = task
        self.prepared_kwargs = prepared_kwargs
        self.commands: list[Command] = []
        self.local_data: dict[str, Any] = {}
        self.start_time = time.time()

    # -- the run, read-only -----------------------------------------------------------
    @property
    def session_id(self) -> str:
        """Id of the run."""
        return self.execution_context.session_id

    @property
    def trace_id(self) -> str:
        """Trace id of the run."""
        return self.execution_context.trace_id

    @property
    def graph(self) -> TaskGraph:
        """The run's graph."""
        return self.execution_context.graph

    def get_channel(self) -> Channel:
        """The run's channel (one per run, shared by every branch)."""
        return self.execution_context.channel

    def get_typed_channel(self, message_type: Any) -> TypedChannel[Any]:
        """The run's channel, validating values against a TypedDict."""
        return TypedChannel(self.get_channel(), message_type)

    def get_result(self, node: str, default: Any = None) -> Any:
        """The stored result of task ``node``."""
        return self.get_channel().get(f"{node}.__result__", default)

    def can_iterate(self) -> bool:
        """True while ``next_iteration`` fits within ``max_cycles``."""
        return self.cycle_count < self.max_cycles

    def set_local_data(self, key: str, value: Any) -> None:
        """Keep a value for the rest of this execution."""
        self.local_data[key] = value

    def get_local_data(self, key: str, default: Any = None) -> Any:
        """A value kept with ``set_local_data``."""
        return self.local_data.get(key, default)

    def elapsed_time(self) -> float:
        """Seconds since this execution started."""
        return time.time() - self.start_time

    # -- controls ---------------------------------------------------------------------
    def next_task(self, executable: Executable, goto: bool = False) -> str:
        """Schedule ``executable`` after this task; with ``goto`` skip this task's successors.

        Jumping to a task that already is a node of the graph is a goto too.
        """
        if not isinstance(executable, Executable):
            raise TypeError(f"next_task() takes a task, chain or group, not {executable!r}")
        target = executable.leftmost if isinstance(executable, SequentialTask) else executable
        task_id = target.task_id
        graph = self.execution_context.graph
        is_new = not graph.has_node(task_id)
        if not is_new and isinstance(target, ParallelGroup) and target._auto_named:
            existing = graph.nodes[task_id].get("task") if task_id in graph.nodes else None
            if existing is not None and getattr(existing, "_uid", None) != target._uid:
                # A group built at run time where no workflow is current got a default
                # name that another group already has: give it a name of its own.
                target._task_id = f"{task_id}_{target._uid[:8]}"
                task_id = target._task_id
                is_new = True
        command = Command(
            CommandKind.NEXT_TASK, task_id=task_id, executable=executable, goto=goto or not is_new
        )
        self.commands.append(command)
        if not self.scheduled:
            self.execution_context.apply_next_task(command)
        return task_id

    def next_iteration(self, data: Any = None) -> str:
        """Run this task again as a new iteration node, passing ``data`` to it."""
        base = base_task_id(self.task_id)
        if self.cycle_count >= self.max_cycles:
            raise CycleLimitExceededError(base, self.cycle_count, self.max_cycles)
        task = self.task
        if task is None:
            task = self.execution_context.graph.get_node(self.task_id)
        if not isinstance(task, TaskWrapper):
            raise GraflowRuntimeError(f"next_iteration() needs a function task, not {task!r}")
        node = task.make_iteration(f"{base}_cycle_{self.cycle_count}_{uuid.uuid4().hex[:8]}", data)
        return self.next_task(node, goto=False)

    def terminate_workflow(self, message: str = "") -> None:
        """End the run normally once this task returns (successors are not run)."""
        self.commands.append(Command(CommandKind.TERMINATE, message=message))
        if not self.scheduled:
            self.execution_context._terminate_called = True
            self.execution_context.ctrl_message = message

    def cancel_workflow(self, message: str = "") -> None:
        """Abort the run once this task returns: the run raises GraflowWorkflowCanceledError."""
        self.commands.append(Command(CommandKind.CANCEL, message=message))
        if not self.scheduled:
            self.execution_context._cancel_called = True
            self.execution_context.ctrl_message = message

    def checkpoint(
        self,
        metadata: dict[str, Any] | None = None,
        *,
        path: str | None = None,
        deferred: bool = True,
    ) -> tuple[str, Any] | None:
        """Save the run so that it can be resumed (see ``graflow.core.checkpoint``).

        Deferred (the default): the engine writes the checkpoint once this task finished and
        its successors are queued; returns None. Immediate (``deferred=False``): the checkpoint
        shows the run while this task runs, so a resume runs it again; returns
        ``(pkl_path, CheckpointMetadata)`` when the task runs in the driver's scheduler thread,
        else (worker processes, parallel branch threads) it is written when this task's
        completion arrives and None is returned. Without ``path`` the run's own checkpoint
        (``graflow.run(checkpoint=...)``) is written, or else upstream's three files under
        ``checkpoints/<session_id>/``.
        """
        meta = dict(metadata or {})
        meta.update(
            task_id=self.task_id,
            cycle_count=self.cycle_count,
            elapsed_time=self.elapsed_time(),
            mode="deferred" if deferred else "immediate",
        )
        request = CheckpointRequest(meta, path, immediate=not deferred)
        context = self.execution_context
        scheduler = getattr(context, "_scheduler", None)
        if not deferred and scheduler is not None and scheduler.owns_thread():
            result: tuple[str, Any] = scheduler.checkpoint_now(request)
            return result
        if deferred:
            context.checkpoint_requested = True
            context.checkpoint_metadata = meta
            context.checkpoint_request_metadata = meta
            context.checkpoint_request_path = path
        self.commands.append(Command(CommandKind.CHECKPOINT, metadata=request))
        return None

    def __str__(self) -> str:
        return f"TaskExecutionContext(task_id={self.task_id}, cycle_count={self.cycle_count})"

    __repr__ = __str__


class ExecutionContext:
    """The state of one run: graph, queue, channel, cycle and retry bookkeeping, progress."""

    def __init__(
        self,
        graph: TaskGraph,
        start_node: str | None = None,
        max_steps: int = 10000,
        default_max_cycles: int = 10,
        default_max_retries: int = 0,
        steps: int = 0,
        channel_backend: str = "memory",
        config: dict[str, Any] | None = None,
        parent_context: ExecutionContext | None = None,
        session_id: str | None = None,
        trace_id: str | None = None,
        tracer: Tracer | None = None,
        llm_client: Any = None,
        prompt_manager: Any = None,
        queue_backend: QueueBackend | str | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex
        self.trace_id = trace_id or self.session_id
        self.graph = graph
        self.start_node = start_node
        self.max_steps = max_steps
        self.steps = steps
        self.default_max_retries = default_max_retries
        self.parent_context = parent_context
        # The default tracer records nothing and the scheduler skips it (noop.is_idle).
        self.tracer: Tracer = tracer if tracer is not None else NoopTracer(False)
        # Makes the span of each attempt run in this process (set by a tracer for the run).
        self.attempt_spans: AttemptSpans | None = None
        self.workflow_name: str | None = None  # the workflow's name, when run as one
        self.llm_client = llm_client
        self.prompt_manager = prompt_manager
        self.channel_backend = channel_backend
        self.queue_backend = TaskQueueFactory.normalize(queue_backend)
        self._config = dict(config or {})
        self.cycle_controller = CycleController(default_max_cycles)
        self.retry_controller = RetryController(default_max_retries)
        self.completed_tasks: list[str] = []
        self._completed_set: set[str] = set()
        self.ctrl_message: str | None = None
        self.graph_hash: str | None = None
        self.checkpoint_metadata: dict[str, Any] = {}
        self.last_checkpoint_path: str | None = None
        self.checkpoint_requested = False
        # A deferred checkpoint asked for by the task that ran last (upstream's names).
        self.checkpoint_request_metadata: dict[str, Any] | None = None
        self.checkpoint_request_path: str | None = None
        # While a scheduler runs this context (immediate checkpoints and live state need it).
        self._scheduler: Any = None
        # Parallel groups that were in progress when the checkpoint this run resumes was taken.
        self._resume_groups: dict[str, Any] | None = None
        self.max_steps_reached = False
        self.max_steps_pending = 0  # tasks still queued when the run stopped at max_steps
        # graflow.run's default limit grows with each task added at run time, and reaching
        # a limit with work left fails the run there (#14); wf.execute stops quietly.
        self.max_steps_grows = False
        self.max_steps_fails = False
        self._goto_called = False
        self._terminate_called = False
        self._cancel_called = False
        self._task_stack: list[TaskExecutionContext] = []
        self.channel = ChannelFactory.create_channel(
            channel_backend, self.session_id, **self._config
        )
        self._config.pop("redis_client", None)
        seed = start_node if start_node is not None and graph.has_node(start_node) else None
        if start_node is not None and seed is None:
            logger.debug("start node %r is not in the graph; the queue starts empty", start_node)
        self.task_queue: TaskQueue = TaskQueueFactory.create_queue(self.queue_backend, self, seed)

    @classmethod
    def create(
        cls,
        graph: TaskGraph,
        start_node: str | None = None,
        max_steps: int = 10000,
        default_max_cycles: int = 10,
        default_max_retries: int = 0,
        channel_backend: str = "memory",
        config: dict[str, Any] | None = None,
        tracer: Tracer | None = None,
        llm_client: Any = None,
        prompt_manager: Any = None,
        queue_backend: QueueBackend | str | None = None,
        session_id: str | None = None,
    ) -> ExecutionContext:
        """A new run over ``graph``; without ``start_node`` the first root is taken.

        ``session_id`` (graflow's addition) names the run, e.g. to resume one whose channel
        lives in Redis.
        """
        if start_node is None:
            roots = graph.get_start_nodes()
            start_node = roots[0] if roots else None
        return cls(
            graph,
            start_node,
            max_steps=max_steps,
            default_max_cycles=default_max_cycles,
            default_max_retries=default_max_retries,
            channel_backend=channel_backend,
            config=config,
            tracer=tracer,
            llm_client=llm_client,
            prompt_manager=prompt_manager,
            queue_backend=queue_backend,
            session_id=session_id,
        )

    # -- properties -------------------------------------------------------------------
    @property
    def queue(self) -> TaskQueue:
        """The run's task queue."""
        return self.task_queue

    @property
    def config(self) -> dict[str, Any]:
        """The backend configuration the run was created with (clients removed)."""
        return self._config

    @property
    def goto_called(self) -> bool:
        """True if the last finished task jumped elsewhere."""
        return self._goto_called

    @property
    def terminate_called(self) -> bool:
        """True if a task asked to terminate the run."""
        return self._terminate_called

    @property
    def cancel_called(self) -> bool:
        """True if a task asked to cancel the run."""
        return self._cancel_called

    def reset_goto_flag(self) -> None:
        """Clear the goto flag."""
        self._goto_called = False

    def reset_terminate_flag(self) -> None:
        """Clear the terminate flag."""
        self._terminate_called = False

    def reset_cancel_flag(self) -> None:
        """Clear the cancel flag."""
        self._cancel_called = False

    def reset_control_flags(self) -> None:
        """Clear every control flag."""
        self._goto_called = self._terminate_called = self._cancel_called = False

    # -- running ----------------------------------------------------------------------
    def execute(self) -> Any:
        """Run the workflow in this process; return the last task's result."""
        from graflow.core.engine import WorkflowEngine  # noqa: PLC0415 - engine imports us

        return WorkflowEngine().execute(self)

    def get_channel(self) -> Channel:
        """The run's channel."""
        return self.channel

    def set_result(self, task_id: str, result: Any) -> None:
        """Store a task's result under ``"<task_id>.__result__"``."""
        self.channel.set(f"{task_id}.__result__", result)

    def get_result(self, task_id: str, default: Any = None) -> Any:
        """A stored task result."""
        return self.channel.get(f"{task_id}.__result__", default)

    def apply_next_task(self, command: Command) -> None:
        """Add a task scheduled by hand to the graph (if new) and the queue, at once.

        The scheduler does this itself when a task it runs returns; this is for tasks run
        outside it (``executing_task``, ``push_task_context``), as upstream tests do.
        """
        exe = command.executable
        if exe is None or self._scheduler is not None:
            return  # a running scheduler applies the task's commands when it returns
        members = list(exe.tasks) if isinstance(exe, SequentialTask) else [exe]
        if isinstance(exe, ParallelGroup):
            members += list(exe.tasks)
        graph = self.graph
        for member in members:
            if member.task_id not in graph.nodes:
                graph.add_node(member, command.task_id if member is exe else None)
        if isinstance(exe, SequentialTask):
            for left, right in itertools.pairwise(exe.tasks):
                graph.add_edge(left.task_id, right.task_id)
        target = graph.get_node(command.task_id)
        self.add_to_queue(target)
        if command.goto:
            self._goto_called = True

    def add_to_queue(self, executable: Executable) -> None:
        """Enqueue a task of this run."""
        self.task_queue.enqueue(TaskSpec(executable, self))

    def get_next_task(self) -> str | None:
        """Dequeue the next task id."""
        return self.task_queue.get_next_task()

    def is_completed(self) -> bool:
        """True when nothing is queued or the step budget is used up."""
        return self.task_queue.is_empty() or self.steps >= self.max_steps

    def increment_step(self) -> None:
        """Count one finished task."""
        self.steps += 1

    def mark_task_completed(self, task_id: str) -> None:
        """Record that ``task_id`` finished (first time only)."""
        if task_id not in self._completed_set:
            self._completed_set.add(task_id)
            self.completed_tasks.append(task_id)

    # -- the task currently running in this thread ----------------------------------
    @property
    def current_task_context(self) -> TaskExecutionContext | None:
        """The context of the task running in this thread, if any."""
        ctx = current_task_context.get()
        if ctx is not None:
            return ctx  # type: ignore[no-any-return]
        if self._task_stack:
            return self._task_stack[-1]
        if self.parent_context is not None:
            return self.parent_context.current_task_context
        return None

    @property
    def current_task_id(self) -> str | None:
        """Id of the task running in this thread, if any."""
        ctx = self.current_task_context
        return ctx.task_id if ctx is not None else None

    def create_task_context(self, task_id: str) -> TaskExecutionContext:
        """A fresh TaskExecutionContext for ``task_id`` in this run."""
        return TaskExecutionContext(task_id, self)

    def push_task_context(self, task_ctx: TaskExecutionContext) -> None:
        """Make ``task_ctx`` current (outside the engine)."""
        self._task_stack.append(task_ctx)

    @property
    def _task_execution_stack(self) -> list[TaskExecutionContext]:
        """The task contexts pushed by hand (upstream's name)."""
        return self._task_stack

    def pop_task_context(self) -> TaskExecutionContext | None:
        """Undo ``push_task_context``."""
        return self._task_stack.pop() if self._task_stack else None

    @contextmanager
    def executing_task(self, task: Executable) -> Iterator[TaskExecutionContext]:
        """Run a block as ``task``'s execution (counts a cycle, sets the current context).

        The task's own ``max_cycles``, ``max_retries`` and ``retry_policy`` apply from here on.
        """
        task_id = task.task_id
        self._apply_task_settings(task)
        if self.retry_controller.get_retry_count(task_id) == 0:
            self.cycle_controller.increment(task_id)
        task_ctx = TaskExecutionContext(task_id, self, task=task)
        token = current_task_context.set(task_ctx)
        task.set_execution_context(self)
        try:
            yield task_ctx
        finally:
            current_task_context.reset(token)

    def _apply_task_settings(self, task: Executable) -> None:
        """Register ``task``'s cycle budget and retry settings with the controllers."""
        if not isinstance(task, TaskWrapper):
            return
        task_id = task.task_id
        if task.max_cycles is not None:
            self.cycle_controller.set_node_max_cycles(task_id, task.max_cycles)
        if task.retry_policy is not None:
            if task_id not in self.retry_controller.node_policies:
                self.retry_controller.set_node_policy(task_id, task.retry_policy)
        elif task.max_retries is not None:
            self.retry_controller.set_node_max_retries(task_id, task.max_retries)

    def _require_task_context(self, what: str) -> TaskExecutionContext:
        ctx = self.current_task_context
        if ctx is None:
            raise GraflowRuntimeError(f"{what}() can only be called while a task runs")
        return ctx

    def next_task(self, executable: Executable, goto: bool = False) -> str:
        """``next_task`` of the task running in this thread."""
        return self._require_task_context("next_task").next_task(executable, goto=goto)

    def next_iteration(self, data: Any = None, task_id: str | None = None) -> str:
        """``next_iteration`` of the task running in this thread."""
        return self._require_task_context("next_iteration").next_iteration(data)

    def terminate_workflow(self, message: str = "") -> None:
        """``terminate_workflow`` of the task running in this thread."""
        self._require_task_context("terminate_workflow").terminate_workflow(message)

    def cancel_workflow(self, message: str = "") -> None:
        """``cancel_workflow`` of the task running in this thread."""
        self._require_task_context("cancel_workflow").cancel_workflow(message)

    # -- checkpoints ------------------------------------------------------------------
    def request_checkpoint(
        self, metadata: dict[str, Any] | None = None, *, path: str | None = None
    ) -> None:
        """Ask for a checkpoint once the running task finished (see ``TaskExecutionContext``)."""
        self.checkpoint_requested = True
        self.checkpoint_metadata = dict(metadata or {})
        self.checkpoint_request_metadata = dict(metadata or {})
        self.checkpoint_request_path = path
        task_ctx = self.current_task_context
        if task_ctx is not None:
            request = CheckpointRequest(dict(metadata or {}), path)
            task_ctx.commands.append(Command(CommandKind.CHECKPOINT, metadata=request))

    def clear_checkpoint_request(self) -> None:
        """Forget a requested checkpoint (the engine calls this once it wrote it)."""
        self.checkpoint_requested = False
        self.checkpoint_request_metadata = None
        self.checkpoint_request_path = None

    def get_checkpoint_state(self) -> dict[str, Any]:
        """The run state a checkpoint records (what ``<base>.state.json`` holds), as plain data.

        While the run executes, from its scheduler's thread, this includes the work in flight
        and the parallel groups in progress; otherwise it describes the context's queue.
        """
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None and scheduler.owns_thread():
            state: dict[str, Any] = scheduler.checkpoint_state()
            return state
        return self.base_checkpoint_state()

    def base_checkpoint_state(self, queue: list[str] | None = None) -> dict[str, Any]:
        """The checkpoint state of this context: counters, completed tasks, and ``queue``.

        ``queue`` defaults to what the context's task queue holds.
        """
        rc = self.retry_controller
        queued = self.task_queue.to_list() if queue is None else queue
        now = time.time()
        return {
            "schema_version": "1.0",
            "session_id": self.session_id,
            "trace_id": self.trace_id,
            "start_node": self.start_node,
            "steps": self.steps,
            "max_steps": self.max_steps,
            "completed_tasks": list(self.completed_tasks),
            "cycle_counts": dict(self.cycle_controller.cycle_counts),
            "retry_counts": dict(rc.retry_counts),
            "last_errors": rc.error_texts(),
            "backend": {"channel": self.channel_backend, "queue": str(self.queue_backend)},
            "queue": queued,
            "pending_tasks": [
                {
                    "task_id": task_id,
                    "status": "ready",
                    "created_at": now,
                    "retry_count": rc.get_retry_count(task_id),
                    "max_retries": rc.get_max_retries_for_node(task_id),
                    "last_error": rc.get_last_error_text(task_id),
                }
                for task_id in queued
            ],
            "resuming_task_id": None,
            "groups": None,
        }

    # -- persistence ------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_task_stack"] = []
        state["_scheduler"] = None
        state["attempt_spans"] = None  # bound to this process's exporter
        state["_channel_data"] = (
            self.channel.snapshot() if self.channel_backend == "memory" else None
        )
        state["_queued_ids"] = self.task_queue.to_list()
        # A shared store (Redis) is reached again through the channel object itself, which
        # knows its server; only an in-memory channel is rebuilt from its contents.
        state["_channel_obj"] = None if self.channel_backend == "memory" else self.channel
        del state["channel"]
        del state["task_queue"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        channel_data = state.pop("_channel_data", None)
        queued = state.pop("_queued_ids", [])
        channel = state.pop("_channel_obj", None)
        state.pop("_checkpoint_path", None)  # the name before checkpoint_request_path
        state.setdefault("checkpoint_request_metadata", None)
        state.setdefault("checkpoint_request_path", None)
        state.setdefault("_resume_groups", None)
        state.setdefault("tracer", NoopTracer(False))
        state["_scheduler"] = None
        self.__dict__.update(state)
        self.channel = channel or ChannelFactory.create_channel(
            self.channel_backend, self.session_id, **self._config
        )
        if channel_data:
            self.channel.update(channel_data)
        self.task_queue = TaskQueueFactory.create_queue(self.queue_backend, self, None)
        for task_id in queued:
            self.task_queue.enqueue(TaskSpec(self.graph.get_node(task_id), self))

    def save(self, path: str = "execution_context.pkl") -> None:
        """Pickle this run (graph, channel contents, queue, counters) to ``path``.

        Raises:
            GraflowRuntimeError: something in the run cannot be pickled; the message names
                the channel keys at fault, and nothing is written.
        """
        try:
            blob = cloudpickle.dumps(self)
        except _PICKLE_ERRORS as exc:
            raise GraflowRuntimeError(
                f"cannot save execution context {self.session_id} to {path!r}: "
                f"{self._describe_unpicklable()}",
                cause=exc,
            ) from exc
        with open(path, "wb") as fh:
            fh.write(blob)

    def _describe_unpicklable(self) -> str:
        """Which part of this run defeats pickling, in words."""
        bad: list[str] = []
        if self.channel_backend == "memory":
            for key, value in self.channel.snapshot().items():
                try:
                    cloudpickle.dumps(value)
                except _PICKLE_ERRORS:
                    bad.append(f"{key!r} ({type(value).__name__})")
        if bad:
            return f"channel key(s) {', '.join(bad)} hold values that cannot be pickled"
        return (
            "the graph or run state holds an object that cannot be pickled "
            "(a task closing over a lock, socket or client?)"
        )

    @classmethod
    def load(cls, path: str = "execution_context.pkl") -> ExecutionContext:
        """Load a run saved with ``save``."""
        with open(path, "rb") as fh:
            ctx = cloudpickle.load(fh)
        if not isinstance(ctx, cls):
            raise GraflowRuntimeError(f"{path} does not hold an ExecutionContext")
        return ctx

    def __repr__(self) -> str:
        return (
            f"ExecutionContext(session_id={self.session_id}, steps={self.steps}, "
            f"completed={len(self.completed_tasks)})"
        )


def create_execution_context(
    start_node: str = "ROOT", max_steps: int = 10, tracer: Tracer | None = None, **kwargs: Any
) -> ExecutionContext:
    """A run over a new graph holding only a placeholder task ``start_node``."""
    graph = TaskGraph()
    graph.add_node(Task(start_node, register_to_context=False))
    return ExecutionContext.create(graph, start_node, max_steps=max_steps, tracer=tracer, **kwargs)


def execute_with_cycles(graph: TaskGraph, start_node: str, max_steps: int = 10) -> Any:
    """Create a run over ``graph`` and execute it (legacy helper)."""
    return ExecutionContext.create(graph, start_node, max_steps=max_steps).execute()
