"""Workflow contexts: ``with workflow(name) as wf`` collects the tasks built inside it.

The current workflow is held in a ``contextvars.ContextVar``, so it is scoped to the thread
(and asyncio task) that entered the block: worker threads and processes see none. Tasks
created while a workflow is current join its graph at once; tasks created with none join
the graph of the first workflow they meet through ``>>``/``|``.
"""

from __future__ import annotations

import contextvars
import itertools
import uuid
from typing import TYPE_CHECKING, Any

from graflow.core.graph import TaskGraph
from graflow.exceptions import GraflowRuntimeError, GraphCompilationError, UnknownTaskError

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext
    from graflow.core.task import Executable

__all__ = [
    "WorkflowContext",
    "clear_workflow_context",
    "current_workflow_context",
    "get_current_workflow_context",
    "require_workflow_context",
    "set_current_workflow_context",
    "workflow",
]

# Looked up by name at each use (tests and tools may swap in a ContextVar of their own,
# possibly one without a default: hence .get(None)).
_current_context: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar(
    "graflow_workflow", default=None
)


class WorkflowContext:
    """A named workflow: its graph, and the scope in which new tasks register into it."""

    def __init__(self, name: str, tracer: Any = None, prompt_manager: Any = None) -> None:
        self.name = name
        self.graph = TaskGraph()
        self.tracer = tracer
        self.prompt_manager = prompt_manager
        self._group_counter = itertools.count(1)
        self._tokens: list[
            tuple[contextvars.ContextVar[WorkflowContext | None], contextvars.Token[Any]]
        ] = []
        self._redis_client: Any = None

    def __enter__(self) -> WorkflowContext:
        var = _current_context
        self._tokens.append((var, var.set(self)))
        return self

    def __exit__(self, *exc: object) -> None:
        var, token = self._tokens.pop()
        var.reset(token)

    # -- graph building ---------------------------------------------------------------
    def add_node(self, name: str, task: Executable, skip_if_exists: bool = False) -> None:
        """Add ``task`` to this workflow's graph under ``name``."""
        self.graph.add_node(task, name, skip_if_exists=skip_if_exists)

    def add_edge(self, from_node: str, to_node: str) -> None:
        """Add an edge between two nodes of this workflow."""
        self.graph.add_edge(from_node, to_node)

    def rename_node(self, old: str, new: str) -> None:
        """Rename a node of this workflow's graph."""
        self.graph.rename_node(old, new)

    def get_next_group_name(self) -> str:
        """Next default parallel-group name: ``ParallelGroup_<n>``."""
        return f"ParallelGroup_{next(self._group_counter)}"

    def clear(self) -> None:
        """Drop every node and edge, and restart group numbering."""
        self.graph.clear()
        self._group_counter = itertools.count(1)

    def set_redis_client(self, client: Any) -> None:
        """Remember a Redis client for backends that need one."""
        self._redis_client = client

    def get_redis_client(self) -> Any:
        """The Redis client given to ``set_redis_client``, if any."""
        return self._redis_client

    # -- running ----------------------------------------------------------------------
    def resolve_start_node(self, start_node: str | None) -> str:
        """The node a run starts from: ``start_node`` checked, or the single root."""
        if start_node is not None:
            if not self.graph.has_node(start_node):
                raise UnknownTaskError(start_node, list(self.graph.nodes))
            return start_node
        candidates = self.graph.get_start_nodes()
        if not candidates:
            raise GraphCompilationError(
                "No start node specified and no nodes with no predecessors found."
            )
        if len(candidates) > 1:
            names = ", ".join(sorted(candidates))
            error = GraphCompilationError(
                f"Multiple start nodes found, please specify one: {names} (start=... in "
                "graflow.run or wf.execute, --start on the command line)"
            )
            error.candidates = sorted(candidates)  # type: ignore[attr-defined]
            raise error
        return candidates[0]

    def execute(
        self,
        start_node: str | None = None,
        max_steps: int = 10000,
        ret_context: bool = False,
        initial_channel: dict[str, Any] | None = None,
    ) -> Any:
        """Run the workflow in this process; return the last task's result.

        With ``ret_context=True`` return ``(result, ExecutionContext)`` instead.
        """
        # The engine imports the task model, which imports this module for registration:
        # the run entry point therefore resolves it at call time.
        from graflow.core.context import ExecutionContext  # noqa: PLC0415

        start = self.resolve_start_node(start_node)
        context = ExecutionContext.create(
            self.graph, start, max_steps=max_steps, tracer=self.tracer
        )
        context.workflow_name = self.name
        if initial_channel:
            channel = context.get_channel()
            for key, value in initial_channel.items():
                channel.set(key, value)
        result = context.execute()
        return (result, context) if ret_context else result

    def create_context(self, start_node: str | None = None, **kwargs: Any) -> ExecutionContext:
        """An ExecutionContext over this workflow's graph, ready to execute."""
        from graflow.core.context import ExecutionContext  # noqa: PLC0415 - see execute()

        return ExecutionContext.create(self.graph, self.resolve_start_node(start_node), **kwargs)

    # -- inspection -------------------------------------------------------------------
    def show_info(self) -> None:
        """Print the graph and its cycles."""
        print(f"=== Workflow '{self.name}' Information ===")
        print(str(self.graph))
        cycles = self.graph.detect_cycles()
        print(f"Cycles detected: {cycles}" if cycles else "No cycles detected")

    def visualize_dependencies(self) -> None:
        """Print one line per node with its successors."""
        print(f"=== Workflow '{self.name}' Dependencies ===")
        for node in self.graph.nodes:
            succs = self.graph.successors(node)
            if succs:
                print(f"{node} >> " + " >> ".join(succs))
            else:
                print(f"{node} (no dependencies)")

    def __repr__(self) -> str:
        return f"WorkflowContext(name={self.name!r}, nodes={len(self.graph)})"


def workflow(name: str, tracer: Any = None, prompt_manager: Any = None) -> WorkflowContext:
    """Create a workflow; use it as ``with workflow("name") as wf:``."""
    return WorkflowContext(name, tracer=tracer, prompt_manager=prompt_manager)


def get_current_workflow_context(create_if_not_exist: bool = False) -> WorkflowContext | None:
    """The workflow current in this thread, optionally creating an implicit one."""
    ctx = _current_context.get(None)
    if ctx is None and create_if_not_exist:
        ctx = WorkflowContext(uuid.uuid4().hex)
        _current_context.set(ctx)
    return ctx


def current_workflow_context() -> WorkflowContext:
    """The current workflow; an implicit global one is created and installed if none is."""
    ctx = get_current_workflow_context(create_if_not_exist=True)
    assert ctx is not None
    return ctx


def require_workflow_context() -> WorkflowContext:
    """The current workflow; raises GraflowRuntimeError when there is none."""
    ctx = _current_context.get(None)
    if ctx is None:
        raise GraflowRuntimeError("No workflow context is active; use 'with workflow(name):'")
    return ctx


def set_current_workflow_context(ctx: WorkflowContext | None) -> None:
    """Make ``ctx`` the current workflow of this thread."""
    _current_context.set(ctx)


def clear_workflow_context() -> None:
    """Forget the current workflow of this thread."""
    _current_context.set(None)
