"""The Redis barrier at its upstream import path (implementation: graflow.redis.coordinator)."""

from graflow.redis.coordinator import RedisCoordinator, record_task_completion

__all__ = ["RedisCoordinator", "record_task_completion"]
