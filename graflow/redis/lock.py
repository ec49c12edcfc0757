"""A run lock in Redis: one holder at a time per name, across hosts (``graflow run --lock``).

    acquire:  SET graflow:{lock:<name>} <token> NX PX <ttl>     (fails: LockHeld)
    renew:    every ttl/3, PEXPIRE only if the value is still our token (Lua)
    release:  DEL only if the value is still our token (Lua)

The token names the holder (host, pid) and is random past that, so one run never renews
or deletes another's lock. A holder that dies without releasing (kill -9, lost host) keeps
the lock until its lease runs out: at most ``ttl_ms`` later the name is free again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from types import TracebackType
from typing import Any

import redis

from graflow.exceptions import BackendUnavailable, LockHeld
from graflow.redis import keys

__all__ = ["RedisRunLock"]

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisRunLock:
    """A named lease in Redis, renewed by a daemon thread until released.

    Not reentrant; use one instance per run, from one thread (the renewal thread is its own).
    """

    def __init__(self, client: redis.Redis, name: str, *, ttl_ms: int = 30_000) -> None:
        self.client: Any = client
        self.name = name
        self.key = keys.run_lock(name)
        self.ttl_ms = ttl_ms
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock; LockHeld if another run has it, BackendUnavailable if Redis is away."""
        try:
            taken = self.client.set(self.key, self.token, nx=True, px=self.ttl_ms)
            holder = None if taken else self.client.get(self.key)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"cannot take lock {self.name!r}: {exc}", cause=exc) from exc
        if not taken:
            who = holder.decode(errors="replace") if holder else "expiring now"
            raise LockHeld(self.name, f"Redis key {self.key}, holder {who}")
        self._renewer = threading.Thread(
            target=self._renew_until_released, name="graflow-run-lock", daemon=True
        )
        self._renewer.start()
        logger.debug("lock %r taken in Redis (%s)", self.name, self.key)

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5.0)
            self._renewer = None
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            logger.warning(
                "lock %r: could not release it (%s); it expires within %d ms",
                self.name,
                exc,
                self.ttl_ms,
            )

    def _renew_until_released(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                still_ours = self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
            except redis.RedisError as exc:
                logger.warning("lock %r: renewal failed (%s); retrying", self.name, exc)
                continue
            if not still_ours:
                logger.error(
                    "lock %r was lost (expired while Redis was unreachable?): another run "
                    "may start now",
                    self.name,
                )
                return

    def __enter__(self) -> RedisRunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
