"""Queue backends by name: ``QueueBackend`` and ``TaskQueueFactory``."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from graflow.exceptions import ConfigError
from graflow.queue.base import TaskQueue
from graflow.queue.local import LocalTaskQueue

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext

__all__ = ["QueueBackend", "TaskQueueFactory"]


class QueueBackend(StrEnum):
    """Names of the task-queue backends."""

    IN_MEMORY = "in_memory"
    REDIS = "redis"


class TaskQueueFactory:
    """Builds the task queue of a run from a backend name."""

    _backends: dict[str, type[TaskQueue]] = {"in_memory": LocalTaskQueue, "memory": LocalTaskQueue}
    # Backends in optional layers register themselves when their module is imported (see
    # graflow.channels.factory); naming the module lets a run ask for them by name first.
    _modules: dict[str, str] = {"redis": "graflow.queue.redis"}

    @classmethod
    def register_backend(cls, name: str, queue_class: type[TaskQueue]) -> None:
        """Make ``queue_class`` available under ``name``."""
        if not (isinstance(queue_class, type) and issubclass(queue_class, TaskQueue)):
            raise TypeError(f"{queue_class!r} is not a TaskQueue subclass")
        cls._backends[name.lower()] = queue_class

    @classmethod
    def get_available_backends(cls) -> list[str]:
        """Names of the backends: those registered, and those importable by name."""
        return sorted(set(cls._backends) | set(cls._modules))

    @classmethod
    def normalize(cls, backend: QueueBackend | str | None) -> str:
        """The registry name of ``backend`` (ConfigError if unknown)."""
        if backend is None:
            return "in_memory"
        name = (backend.value if isinstance(backend, QueueBackend) else str(backend)).lower()
        if name not in cls._backends and name in cls._modules:
            importlib.import_module(cls._modules[name])
        if name not in cls._backends:
            raise ConfigError(
                f"Unsupported queue backend '{name}'. Available backends: "
                f"{cls.get_available_backends()}"
            )
        return name

    @classmethod
    def create_queue(
        cls,
        backend: QueueBackend | str | None,
        execution_context: ExecutionContext,
        start_node: str | None = None,
        **kwargs: Any,
    ) -> TaskQueue:
        """A new queue of the given backend for ``execution_context``."""
        queue_class = cls._backends[cls.normalize(backend)]
        if queue_class is LocalTaskQueue:
            return LocalTaskQueue(execution_context, start_node)
        return queue_class(execution_context, start_node=start_node, **kwargs)  # type: ignore[call-arg]
