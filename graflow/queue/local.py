"""The in-memory FIFO queue every in-process run uses."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from graflow.queue.base import TaskQueue, TaskSpec, TaskStatus

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext

__all__ = ["LocalTaskQueue", "MemoryTaskQueue"]


class LocalTaskQueue(TaskQueue):
    """FIFO of task ids (specs are built on demand); seeded with the start node."""

    def __init__(
        self, execution_context: ExecutionContext | None = None, start_node: str | None = None
    ) -> None:
        super().__init__(execution_context)
        self.ids: deque[str] = deque()
        self._specs: dict[str, TaskSpec] = {}
        if start_node is not None:
            self.ids.append(start_node)

    def enqueue(self, task_spec: TaskSpec) -> bool:
        self.ids.append(task_spec.task_id)
        self._specs[task_spec.task_id] = task_spec
        self.metrics["enqueued"] += 1
        return True

    def enqueue_id(self, task_id: str) -> None:
        """Add a task by id (the engine's fast path)."""
        self.ids.append(task_id)

    def dequeue(self) -> TaskSpec | None:
        if not self.ids:
            return None
        task_id = self.ids.popleft()
        self.metrics["dequeued"] += 1
        spec = self._specs.pop(task_id, None)
        if spec is None:
            context = self.execution_context
            if context is None:
                raise RuntimeError("LocalTaskQueue without an execution context")
            spec = TaskSpec(context.graph.get_node(task_id), context)
        spec.status = TaskStatus.RUNNING
        return spec

    def get_next_task(self) -> str | None:
        if not self.ids:
            return None
        self.metrics["dequeued"] += 1
        return self.ids.popleft()

    def peek_next_node(self) -> str | None:
        """Id at the head of the queue, without removing it."""
        return self.ids[0] if self.ids else None

    def is_empty(self) -> bool:
        return not self.ids

    def size(self) -> int:
        return len(self.ids)

    def to_list(self) -> list[str]:
        return list(self.ids)

    def get_task_spec(self, task_id: str) -> TaskSpec | None:
        return self._specs.get(task_id)

    def get_pending_task_specs(self) -> list[TaskSpec]:
        """Specs of every queued task, head first."""
        context = self.execution_context
        specs = []
        for task_id in self.ids:
            spec = self._specs.get(task_id)
            if spec is None and context is not None and context.graph.has_node(task_id):
                spec = TaskSpec(context.graph.get_node(task_id), context)
            if spec is not None:
                specs.append(spec)
        return specs

    def retry_failed_task(self, task_spec: TaskSpec) -> bool:
        """Put a failed task back at the tail."""
        task_spec.status = TaskStatus.READY
        return self.enqueue(task_spec)

    def cleanup(self) -> None:
        self.ids.clear()
        self._specs.clear()


MemoryTaskQueue = LocalTaskQueue
