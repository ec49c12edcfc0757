"""``DistributedTaskQueue``: upstream's name and constructor for the Redis task queue."""

from __future__ import annotations

from typing import Any

from graflow.queue.redis import DEFAULT_KEY_PREFIX, RedisTaskQueue
from graflow.redis.signing import Signer

__all__ = ["DistributedTaskQueue"]


class DistributedTaskQueue(RedisTaskQueue):
    """A ``RedisTaskQueue`` built the upstream way, without an execution context.

    ``graph_store`` is accepted and kept for upstream scripts: graflow stores each run's
    graph under the run's own keys when the run starts, so there is no shared graph store.
    """

    def __init__(
        self,
        redis_client: Any = None,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        graph_store: Any = None,
        *,
        queue: str | None = None,
        signer: Signer | None = None,
        max_deliveries: int = 3,
        lease_ms: int = 30_000,
    ) -> None:
        super().__init__(
            None,
            redis_client,
            queue=queue,
            key_prefix=key_prefix,
            host=host,
            port=port,
            db=db,
            signer=signer,
            max_deliveries=max_deliveries,
            lease_ms=lease_ms,
        )
        self.graph_store = graph_store
