"""The configuration API of graflow's original architecture document (in-memory backends)."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from graflow import task
from graflow.channels.base import Channel
from graflow.channels.factory import ChannelFactory
from graflow.channels.memory import MemoryChannel
from graflow.core.context import ExecutionContext
from graflow.core.graph import TaskGraph
from graflow.core.task import TaskWrapper
from graflow.core.workflow import workflow
from graflow.exceptions import ConfigError
from graflow.queue.base import TaskQueue, TaskSpec, TaskStatus
from graflow.queue.factory import QueueBackend, TaskQueueFactory
from graflow.queue.local import LocalTaskQueue


def _pipeline() -> TaskGraph:
    with workflow("seed") as wf:

        @task
        def start() -> int:
            return 20

        @task
        def finish(start: int) -> int:
            return start + 22

        start >> finish
    return wf.graph


def test_in_memory_configuration_as_documented() -> None:
    context = ExecutionContext.create(
        graph=_pipeline(),
        start_node="start",
        queue_backend=QueueBackend.IN_MEMORY,
        channel_backend="memory",
    )
    assert isinstance(context.task_queue, LocalTaskQueue)
    assert isinstance(context.channel, MemoryChannel)
    assert context.execute() == 42
    assert context.completed_tasks == ["start", "finish"]


@pytest.mark.parametrize("name", ["in_memory", "memory", "IN_MEMORY", QueueBackend.IN_MEMORY])
def test_queue_backend_spellings(name: Any) -> None:
    context = ExecutionContext.create(_pipeline(), "start", queue_backend=name)
    assert context.execute() == 42


def test_unknown_backends_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unsupported queue backend 'kafka'.*in_memory"):
        ExecutionContext.create(_pipeline(), "start", queue_backend="kafka")
    with pytest.raises(ConfigError, match=r"Unsupported backend 'etcd'.*memory"):
        ExecutionContext.create(_pipeline(), "start", channel_backend="etcd")


def test_config_reaches_the_channel_and_is_kept() -> None:
    context = ExecutionContext.create(
        _pipeline(), "start", channel_backend="memory", config={"key_prefix": "app"}
    )
    assert context.config == {"key_prefix": "app"}


class _ListQueue(TaskQueue):
    """A queue class of the user's own, registered with the factory."""

    def __init__(self, execution_context: Any = None, start_node: str | None = None) -> None:
        super().__init__(execution_context)
        self.items: deque[TaskSpec] = deque()
        if start_node is not None and execution_context is not None:
            graph = execution_context.graph
            self.items.append(TaskSpec(graph.get_node(start_node), execution_context))

    def enqueue(self, task_spec: TaskSpec) -> bool:
        self.items.append(task_spec)
        return True

    def dequeue(self) -> TaskSpec | None:
        return self.items.popleft() if self.items else None

    def is_empty(self) -> bool:
        return not self.items


def test_registered_queue_class_is_driven_by_the_engine() -> None:
    TaskQueueFactory.register_backend("listq", _ListQueue)
    try:
        context = ExecutionContext.create(_pipeline(), "start", queue_backend="listq")
        assert isinstance(context.task_queue, _ListQueue)
        assert context.execute() == 42
    finally:
        TaskQueueFactory._backends.pop("listq", None)
    with pytest.raises(TypeError):
        TaskQueueFactory.register_backend("bad", dict)  # type: ignore[arg-type]


def test_task_spec_retry_bookkeeping() -> None:
    graph = _pipeline()
    context = ExecutionContext.create(graph, "start")
    spec = TaskSpec(graph.get_node("start"), context, max_retries=2)
    assert spec.task_id == "start" and spec.status is TaskStatus.READY
    assert spec.can_retry()
    spec.increment_retry("boom")
    spec.increment_retry("boom again")
    assert (spec.retry_count, spec.last_error, spec.can_retry()) == (2, "boom again", False)
    queue = context.task_queue
    queue.configure(enable_retry=True)
    retry_spec = TaskSpec(graph.get_node("finish"), context, max_retries=1)
    assert queue.handle_task_failure(retry_spec, "flaky") is True
    assert queue.handle_task_failure(retry_spec, "flaky") is False
    assert retry_spec.status is TaskStatus.ERROR
    assert queue.get_metrics()["retries"] == 1


def test_abstract_bases_need_their_methods() -> None:
    with pytest.raises(TypeError):
        TaskQueue()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        Channel("x")  # type: ignore[abstract]
    assert "memory" in ChannelFactory.get_available_backends()


def test_add_to_queue_and_get_next_task() -> None:
    graph = _pipeline()
    context = ExecutionContext.create(graph, "start")
    context.add_to_queue(TaskWrapper("extra", lambda: 1, register_to_context=False))
    assert context.task_queue.to_list() == ["start", "extra"]
    assert context.get_next_task() == "start"
    assert not context.is_completed()
