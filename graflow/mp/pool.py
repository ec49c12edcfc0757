"""The supervisor's view of its worker processes: a handle per worker and one poller.

A worker is a process with a duplex pipe; the poller watches every pipe and every process
sentinel at once, so one wait notices both messages and deaths.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from graflow.core.spec import WorkItem
from graflow.mp import shm

if TYPE_CHECKING:
    pass

__all__ = ["Poller", "WorkerHandle"]

logger = logging.getLogger(__name__)


class Poller:
    """A persistent level-triggered poller over the workers' pipes and sentinels.

    ``multiprocessing.connection.wait`` builds a new selector on every call, which costs
    more than a pipe round trip; this one is built once per supervisor.
    """

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int) -> None:
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(KeyError):
            self._poll.unregister(fd)

    def poll(self, timeout_s: float | None) -> list[tuple[int, int]]:
        timeout_ms = None if timeout_s is None else max(0, math.ceil(timeout_s * 1000))
        return self._poll.poll(timeout_ms)


class WorkerHandle:
    """The supervisor's side of one worker process."""

    __slots__ = (
        "aio_out",
        "chained",
        "concurrent",
        "conn",
        "index",
        "io_out",
        "nodes_sent",
        "outstanding",
        "proc",
        "retiring",
        "run_id",
        "timeout_at",
        "unread",
    )

    def __init__(self, index: int, proc: Any, conn: Connection) -> None:
        self.index = index
        self.proc = proc
        self.conn = conn
        self.outstanding: dict[int, WorkItem] = {}
        # Of those, the io and async items (by seq: their lane), which do not take the
        # worker's cpu lane.
        self.concurrent: dict[int, str] = {}
        self.io_out = 0
        self.aio_out = 0
        self.chained: list[WorkItem] = []  # conditional items to send after what it holds
        self.run_id: str | None = None
        self.nodes_sent = 0
        self.retiring = False
        self.timeout_at: float | None = None
        # Segments of frames sent to the worker that it may not have decoded yet: if it dies
        # with them in its pipe, nobody else will unlink them.
        self.unread: list[shm.SegmentRef] = []
