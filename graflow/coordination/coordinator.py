"""Names of the coordination backends a parallel group can ask for."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CoordinationBackend"]


class CoordinationBackend(StrEnum):
    """How a parallel group's branches are run.

    ``THREADING`` (default): concurrently, on threads in-process or on the worker processes
    of a pool. ``DIRECT``: one after another in the driver thread. ``REDIS``: on the workers
    serving a Redis queue.
    """

    REDIS = "redis"
    THREADING = "threading"
    DIRECT = "direct"
