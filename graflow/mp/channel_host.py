"""The run's channel as served by the supervisor to its worker processes.

Workers send channel operations as requests; the supervisor applies them to the run's one
channel, in arrival order, on its single thread: that is what makes ``atomic_add`` atomic
across processes and a write visible to every task that starts after the writer finished.
``lock`` is a per-key re-entrant lock owned by one thread (or coroutine) of one worker; a
request that cannot be granted is parked (its caller waits for the reply) until the lock is
released or its timeout ends. Several threads of a worker may have requests out at once:
each reply names the request it answers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from graflow.channels.base import Channel

__all__ = ["ChannelHost"]

Caller = tuple[int, Any, int]
"""Who asked: (worker index, the asking thread or coroutine in it, request number)."""
Reply = Callable[[Caller, bool, Any], None]  # (caller, ok, value or exception)

_ABSENT = object()

_PLAIN_OPS = frozenset(
    {"set", "get", "delete", "exists", "keys", "clear", "append", "prepend", "atomic_add"}
)


class ChannelHost:
    """Applies workers' channel requests to one channel and arbitrates its locks."""

    def __init__(self, channel: Channel, reply: Reply) -> None:
        self.channel = channel
        self._reply = reply
        self._owners: dict[str, tuple[Caller, int]] = {}  # key -> (caller, depth)
        self._waiters: dict[str, deque[tuple[Caller, float]]] = {}  # key -> (caller, deadline)
        self._peek: Callable[..., Any] | None = getattr(channel, "peek", None)

    def handle(self, worker: Caller, op: str, args: tuple[Any, ...]) -> None:
        """Serve one request of a caller (replies now, or later for a parked lock)."""
        if op in _PLAIN_OPS:
            try:
                value = getattr(self.channel, op)(*args)
            except Exception as exc:  # noqa: BLE001 - the error belongs to the calling task
                self._reply(worker, False, exc)
                return
            self._reply(worker, True, value)
        elif op == "lookup":  # get, telling "missing" apart from any default the caller has
            # A large result still in shared memory goes back by name: the worker maps it
            # (graflow.mp.shared_value) instead of receiving a copy through the pipe.
            value = (self._peek or self.channel.get)(args[0], _ABSENT)
            self._reply(worker, True, (False, None) if value is _ABSENT else (True, value))
        elif op == "snapshot":
            self._reply(worker, True, self.channel.snapshot())
        elif op == "lock_acquire":
            self._acquire(worker, args[0], float(args[1]))
        elif op == "lock_release":
            self._release(worker, args[0])
            self._reply(worker, True, None)
        else:
            self._reply(worker, False, ValueError(f"unknown channel operation {op!r}"))

    def _acquire(self, worker: Caller, key: str, timeout_s: float) -> None:
        owner = self._owners.get(key)
        if owner is None or _same_owner(owner[0], worker):
            self._owners[key] = (worker, (owner[1] if owner else 0) + 1)
            self._reply(worker, True, None)
            return
        self._waiters.setdefault(key, deque()).append((worker, time.monotonic() + timeout_s))

    def _release(self, worker: Caller, key: str) -> None:
        owner = self._owners.get(key)
        if owner is None or not _same_owner(owner[0], worker):
            return
        if owner[1] > 1:
            self._owners[key] = (owner[0], owner[1] - 1)
            return
        del self._owners[key]
        self._grant_next(key)

    def _grant_next(self, key: str) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            worker, deadline = waiters.popleft()
            if deadline >= time.monotonic():
                self._owners[key] = (worker, 1)
                self._reply(worker, True, None)
                return
            self._reply(worker, False, TimeoutError(f"could not acquire lock on '{key}'"))
        self._waiters.pop(key, None)

    @property
    def has_waiters(self) -> bool:
        """True while some lock request is parked."""
        return bool(self._waiters)

    def expire_waiters(self) -> float | None:
        """Fail lock requests past their timeout; return seconds to the next deadline."""
        now = time.monotonic()
        nearest: float | None = None
        for key, waiters in list(self._waiters.items()):
            kept: deque[tuple[Caller, float]] = deque()
            for worker, deadline in waiters:
                if deadline < now:
                    self._reply(worker, False, TimeoutError(f"could not acquire lock on '{key}'"))
                else:
                    kept.append((worker, deadline))
                    nearest = deadline if nearest is None else min(nearest, deadline)
            if kept:
                self._waiters[key] = kept
            else:
                del self._waiters[key]
        return None if nearest is None else max(0.0, nearest - now)

    def forget_worker(self, worker: int) -> None:
        """A worker died: drop its locks (granting them onward) and its parked requests."""
        for key, waiters in list(self._waiters.items()):
            self._waiters[key] = deque(w for w in waiters if w[0][0] != worker)
        for key, (owner, _depth) in list(self._owners.items()):
            if owner[0] == worker:
                del self._owners[key]
                self._grant_next(key)


def _same_owner(a: Caller, b: Caller) -> bool:
    """The same thread (or coroutine) of the same worker, whatever the request."""
    return a[0] == b[0] and a[1] == b[1]
