"""``GroupExecutor``: upstream's entry point for running one parallel group's members.

``ParallelGroup.run()`` goes through it, so code that calls or patches
``GroupExecutor.execute_parallel_group`` sees every group run that is not scheduled by an
engine. It hands the group to ``WorkflowEngine.run_group``: the branches run on the
backend the group asks for, and its policy decides the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graflow.coordination.coordinator import CoordinationBackend
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.task import Executable, ParallelGroup

__all__ = ["GroupExecutor"]


class GroupExecutor:
    """Runs the members of a parallel group to completion in a run's context."""

    DEFAULT_BACKEND = CoordinationBackend.THREADING

    @staticmethod
    def execute_parallel_group(
        group_id: str,
        tasks: Sequence[Executable],
        exec_context: ExecutionContext,
        *,
        backend: CoordinationBackend | str | None = None,
        backend_config: dict[str, Any] | None = None,
        policy: Any = "strict",
    ) -> None:
        """Run ``tasks`` as the group ``group_id``; ParallelGroupError if its policy says so."""
        group = GroupExecutor._group(group_id, tasks, exec_context)
        if group is None:
            group = ParallelGroup.detached(group_id, list(tasks))
            for member in tasks:  # a member runs as a node of the run's graph
                exec_context.graph.add_node(member, skip_if_exists=True)
            group.with_execution(backend=backend, backend_config=backend_config, policy=policy)
        WorkflowEngine().run_group(exec_context, group)

    @staticmethod
    def _group(
        group_id: str, tasks: Sequence[Executable], context: ExecutionContext
    ) -> ParallelGroup | None:
        """The group node ``group_id`` of the run's graph, if it has exactly these members."""
        node = context.graph.nodes.get(group_id, {}).get("task")
        if not isinstance(node, ParallelGroup):
            return None
        if [m.task_id for m in node.tasks] != [t.task_id for t in tasks]:
            return None
        return node
