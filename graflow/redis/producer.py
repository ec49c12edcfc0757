"""Running a workflow against Redis: ``graflow.run(wf, redis="redis://host:port/db")``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from graflow.config import RedisTLS, redact_url
from graflow.core.checkpoint import Checkpointer
from graflow.core.context import ExecutionContext
from graflow.core.engine import RunStats, WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.interrupt import drain_on_signals
from graflow.core.steps import limit_steps
from graflow.redis import keys
from graflow.redis.backend import RedisBackend, StoredValue
from graflow.redis.connect import connect
from graflow.redis.signing import Signer, load_secret
from graflow.trace.base import Tracer

__all__ = ["RedisRun", "connect", "run_on_redis"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisRun:
    """What a run on Redis left: its context, value and counters, and how long it waited."""

    context: ExecutionContext
    value: Any
    stats: RunStats
    waited_for_node_s: float
    """Seconds the run waited with no node serving its queue."""


def run_on_redis(
    graph: TaskGraph,
    start_node: str,
    *,
    url: str,
    tls: RedisTLS | None = None,
    queue: str = "default",
    secret: str | bytes | None = None,
    secret_file: str | None = None,
    max_steps: int | None = None,
    initial_channel: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    engine: WorkflowEngine | None = None,
    grace_s: float = 30.0,
    checkpointer: Checkpointer | None = None,
    tracer: Tracer | None = None,
    workflow_name: str = "",
) -> RedisRun:
    """Schedule a run here and execute its tasks on the nodes serving ``queue``.

    A ``checkpointer`` holding a saved run resumes it under the same run id, so the channel
    keys it left in Redis are the resumed run's channel.
    """
    client = connect(url, tls)
    signer = Signer(load_secret(secret, secret_file))
    context = ExecutionContext.create(
        graph,
        start_node,
        channel_backend="redis",
        config={"redis_client": client, "signer": signer},
        session_id=checkpointer.run_id if checkpointer is not None else None,
        tracer=tracer,
    )
    limit_steps(context, max_steps)
    context.workflow_name = workflow_name or None
    if checkpointer is not None and checkpointer.saved is not None:
        checkpointer.restore(context)
    elif initial_channel:
        context.channel.update(initial_channel)
    if not client.scard(keys.nodes_index()):
        logger.warning(
            "no graflow node has registered with this Redis yet: start one with "
            "'graflow supervisor --redis URL' or the run will wait"
        )
    backend = RedisBackend(client, signer, queue=queue, timeout_s=timeout_s, where=redact_url(url))
    run_engine = WorkflowEngine(backend)
    if engine is not None:
        run_engine.handlers.update(engine.handlers)
        run_engine.on_progress = engine.on_progress
        run_engine.observer = engine.observer
    with drain_on_signals(backend, grace_s):
        value, stats = run_engine.run(context, checkpointer=checkpointer)
    if isinstance(value, StoredValue):
        value = context.channel.get(f"{value.task_id}.__result__")
    return RedisRun(context, value, stats, backend.waited_for_node_s)
