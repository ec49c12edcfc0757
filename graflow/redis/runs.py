"""What a worker reads of a run from Redis: its graph, its handlers, its run-time tasks."""

from __future__ import annotations

import logging
from typing import Any

from graflow.core.graph import TaskGraph
from graflow.core.handler import TaskHandler
from graflow.core.task import Executable
from graflow.exceptions import PoisonMessage
from graflow.redis import keys
from graflow.redis.signing import Signer

__all__ = ["UnloadableRun", "fetch_nodes", "fetch_run"]

logger = logging.getLogger(__name__)


class UnloadableRun(Exception):
    """Raised when a run's graph verifies but cannot be unpickled on this host."""


def fetch_run(
    client: Any, signer: Signer, run_id: str
) -> tuple[TaskGraph, dict[str, TaskHandler]] | None:
    """The run's graph and handlers; None when the run is gone or its blobs do not verify.

    Raises UnloadableRun when they verify but need code this host does not have.
    """
    graph_blob, handlers_blob = client.mget(keys.graph(run_id), keys.handlers(run_id))
    if graph_blob is None or handlers_blob is None:
        return None
    try:
        graph = signer.loads(graph_blob)
        handlers = signer.loads(handlers_blob)
    except PoisonMessage as exc:
        logger.error("run %s: its graph does not verify (%s)", run_id, exc)
        return None
    except Exception as exc:  # e.g. a module that this host does not have
        raise UnloadableRun(f"{type(exc).__name__}: {exc}") from exc
    return graph, handlers


def fetch_nodes(
    client: Any, signer: Signer, run_id: str, start: int = 0
) -> list[Executable | None]:
    """Tasks the run created at run time, from position ``start`` (None: did not verify)."""
    nodes: list[Executable | None] = []
    for blob in client.lrange(keys.nodes(run_id), start, -1):
        try:
            nodes.append(signer.loads(blob))
        except PoisonMessage as exc:
            logger.error("run %s: a dynamic task does not verify (%s)", run_id, exc)
            nodes.append(None)
    return nodes
