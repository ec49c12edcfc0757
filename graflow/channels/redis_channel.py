"""``RedisChannel`` at its upstream import path (the implementation is graflow.redis.channel)."""

from graflow.redis.channel import RedisChannel

__all__ = ["RedisChannel"]
