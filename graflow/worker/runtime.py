"""What a worker process keeps of a run, and how it runs one work item of it.

The scheduler (in the driver or producer) owns the run state; a worker only needs the
run's graph, its task handlers and a channel. Backends differ in the channel (a pipe to the
supervisor, or Redis) and in whether a result is captured for the completion or stored in
the channel directly.
"""

from __future__ import annotations

from typing import Any

from graflow.channels.base import Channel
from graflow.core import codec
from graflow.core.backend import run_item, run_item_async
from graflow.core.context import ExecutionContext
from graflow.core.cycle import CycleController
from graflow.core.graph import TaskGraph
from graflow.core.handler import TaskHandler
from graflow.core.retry import RetryController
from graflow.core.spec import Completion, WorkItem
from graflow.core.workflow import WorkflowContext, set_current_workflow_context
from graflow.exceptions import BackendUnavailable, TaskError
from graflow.trace.noop import NoopTracer
from graflow.trace.span import AttemptSpans

__all__ = ["RunState", "WorkerContext", "portable_error"]


class WorkerContext(ExecutionContext):
    """The worker-side view of a run: its graph, a channel, and captured results.

    With ``store_results`` a handler's ``set_result`` writes to the channel (a shared
    store such as Redis); otherwise the result is kept to travel with the completion.
    """

    def __init__(
        self,
        run_id: str,
        graph: TaskGraph,
        channel: Channel,
        store_results: bool = False,
        attempt_spans: AttemptSpans | None = None,
    ) -> None:
        # Deliberately not ExecutionContext.__init__: the run state lives with the scheduler,
        # this object only carries what task bodies and handlers read.
        self.session_id = run_id
        self.trace_id = run_id
        self.graph = graph
        self.channel = channel
        self.start_node = None
        self.max_steps = 0
        self.steps = 0
        self.parent_context = None
        self.tracer = NoopTracer(False)
        self.attempt_spans = attempt_spans
        self.llm_client = None
        self.prompt_manager = None
        self.channel_backend = "remote"
        self._config = {}
        self.cycle_controller = CycleController(10)
        self.retry_controller = RetryController(0)
        self.completed_tasks = []
        self._completed_set = set()
        self._task_stack = []
        self.store_results = store_results
        self.results: dict[str, Any] = {}
        # With defer_stores, results to store wait in `stored` for the worker to write them
        # in one round trip with the completion (Redis); otherwise they are written at once.
        self.defer_stores = False
        self.stored: dict[str, Any] = {}

    def set_result(self, task_id: str, result: Any) -> None:
        self.results[task_id] = result
        if not self.store_results:
            return
        if self.defer_stores:
            self.stored[f"{task_id}.__result__"] = result
        else:
            self.channel.set(f"{task_id}.__result__", result)

    def get_result(self, task_id: str, default: Any = None) -> Any:
        if task_id in self.results:
            return self.results[task_id]
        key = f"{task_id}.__result__"
        if key in self.stored:
            return self.stored[key]
        return self.channel.get(key, default)


class RunState:
    """A run as one worker process knows it."""

    def __init__(
        self,
        run_id: str,
        graph: TaskGraph,
        handlers: dict[str, TaskHandler],
        channel: Channel,
        store_results: bool = False,
        attempt_spans: AttemptSpans | None = None,
    ) -> None:
        self.run_id = run_id
        self.context = WorkerContext(run_id, graph, channel, store_results, attempt_spans)
        self.handlers = handlers
        # Stands in for the driver's `with workflow(...)` block when an item asks for it, so
        # tasks built inside a task register into the run's graph as they would there.
        self.block = WorkflowContext(f"run-{run_id}")
        self.block.graph = graph

    def close(self) -> None:
        """The run is over here: cut the task -> context -> graph -> task cycle it formed.

        Each task that ran points at the run's context (``_execution_context``), whose graph
        holds the tasks; left alone, only a full collection would free a run, and those are
        rare in a long-lived worker whose heap grows run after run.
        """
        self.context.graph._nodes.clear()

    def add_nodes(self, nodes: list[Any]) -> None:
        """Tasks created at run time elsewhere."""
        graph = self.context.graph
        for exe in nodes:
            if exe.task_id not in graph.nodes:
                graph.add_node(exe)

    def node(self, item: WorkItem) -> Any:
        """The graph node ``item`` runs (KeyError if the worker's graph lacks it)."""
        return self.context.graph.get_node(item.task_id)

    def run(self, item: WorkItem) -> Completion:
        """Run one item in this thread; the completion carries a portable value or error."""
        context = self.context
        try:
            exe = context.graph.get_node(item.task_id)
        except KeyError:
            return self._not_in_graph(item)
        if item.in_block:
            set_current_workflow_context(self.block)
        try:
            completion = run_item(context, item, exe, self.handlers, in_worker=True)
        finally:
            if item.in_block:
                set_current_workflow_context(None)
        return self._portable(item, completion)

    async def run_async(self, item: WorkItem) -> Completion:
        """Run one item of an ``async def`` task on the running event loop (see ``run``)."""
        context = self.context
        try:
            exe = context.graph.get_node(item.task_id)
        except KeyError:
            return self._not_in_graph(item)
        completion = await run_item_async(context, item, exe, self.handlers, in_worker=True)
        return self._portable(item, completion)

    def _not_in_graph(self, item: WorkItem) -> Completion:
        err = TaskError(item.task_id, "task is not in the graph shipped to the worker")
        return Completion(item.seq, item.task_id, False, None, err)

    def _portable(self, item: WorkItem, completion: Completion) -> Completion:
        context = self.context
        if completion.ok:
            completion.value = context.results.pop(item.task_id, completion.value)
        else:
            context.results.pop(item.task_id, None)
            raised = completion.error
            completion.error = portable_error(item.task_id, completion)
            key = f"{item.task_id}.__result__"
            if completion.error is not raised and context.stored.get(key) is raised:
                context.stored[key] = completion.error  # stored for get_result: must pickle too
        return completion


def portable_error(task_id: str, completion: Completion) -> BaseException:
    """The completion's exception if it survives a pickle round trip, else a TaskError."""
    error = completion.error
    try:
        # codec, not plain pickle: an exception class defined in __main__ (or in a flows file
        # loaded by path) travels by value as the task did, and keeps its type (#14).
        codec.loads(codec.dumps(error))
        return error  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - any failure means: send a description instead
        outage = _outage_in(error)
        if outage is not None:
            # Still an outage (the worker runs the task again once Redis is back); what did
            # not pickle is its cause, e.g. a redis-py cluster error holding its node.
            return BackendUnavailable(f"{outage.message} (caused by {outage.cause})")
        return TaskError(
            task_id,
            f"raised {type(error).__name__}: {error} (the exception itself could not be "
            f"sent back from the worker process: {exc})",
            remote_traceback=completion.traceback,
        )


def _outage_in(error: BaseException | None) -> BackendUnavailable | None:
    """The BackendUnavailable that ``error`` is or was caused by, if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BackendUnavailable):
            return error
        seen.add(id(error))
        error = getattr(error, "cause", None) or error.__cause__
    return None
