"""``RedisCoordinator``: the barrier a parallel group's driver waits on while nodes run its members.

Who writes what (keys of group ``g`` in run ``r``, all from ``keys.barrier_*``, all with a TTL)::

    driver   create_barrier   ──▶ expected = n; members, results deleted
    worker   record_completion ─▶ one Lua script: SADD members <task>; if new, HSET results
                                   <task> <signed record>; if |members| >= expected,
                                   PUBLISH done "complete"
    driver   wait_barrier     ◀── SUBSCRIBE done first, then compare |members| with expected
                                   after every message or poll (0.01 s doubling to 0.5 s)
    driver   get_results, cleanup_barrier (UNLINK every key of the barrier)

A member id is counted once however often its completion is redelivered, and pub/sub is
only a wake-up: a lost message delays the driver by at most one poll, never forever.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson
import redis
from redis.client import PubSub

from graflow.core.handler import TaskResult
from graflow.exceptions import BackendError, BackendUnavailable, BarrierTimeout, PoisonMessage
from graflow.redis import keys
from graflow.redis.channel import DEFAULT_TTL_S
from graflow.redis.connect import OUTAGE_ERRORS, RedisClient, binary_client
from graflow.redis.signing import Signer, load_secret

__all__ = ["RedisCoordinator", "record_task_completion"]

logger = logging.getLogger(__name__)

_FIRST_POLL_S: Final = 0.01
_MAX_POLL_S: Final = 0.5

# KEYS: members, expected, results. ARGV: task id, signed record, TTL in ms, pub/sub channel.
# Returns {1 if this completion was new else 0, members counted}.
_RECORD_LUA: Final = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
if added == 1 then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
local count = redis.call('SCARD', KEYS[1])
local expected = tonumber(redis.call('GET', KEYS[2]))
if added == 1 and expected and count >= expected then
  redis.call('PUBLISH', ARGV[4], 'complete')
end
return {added, count}
"""


class RedisCoordinator:
    """Barriers of one run's parallel groups in Redis, safe to use from many processes.

    ``record_completion`` is idempotent per member; ``wait_barrier`` blocks the calling
    thread. Records are signed with ``signer`` (default: the local secret, ``load_secret()``)
    so a forged "success" is rejected. ``max_outage_s`` bounds how long a wait rides out a
    Redis that cannot be reached before raising ``BackendUnavailable``.
    """

    def __init__(
        self,
        redis_client: RedisClient,
        run_id: str,
        *,
        signer: Signer | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        max_outage_s: float = 30.0,
    ) -> None:
        keys.run_prefix(run_id)
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        self.run_id = run_id
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.max_outage_s = max_outage_s
        self._client = binary_client(redis_client)
        self._signer = signer if signer is not None else Signer(load_secret())
        self._record_script = self._client.register_script(_RECORD_LUA)

    def __repr__(self) -> str:
        return f"RedisCoordinator(run_id={self.run_id!r})"

    def create_barrier(self, group_id: str, expected: int) -> None:
        """Start a barrier waiting for ``expected`` members, forgetting any earlier one."""
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
            raise ValueError(f"expected must be a non-negative int, got {expected!r}")
        pipe = self._client.pipeline(transaction=True)
        pipe.unlink(
            keys.barrier_members(self.run_id, group_id),
            keys.barrier_results(self.run_id, group_id),
        )
        pipe.set(keys.barrier_expected(self.run_id, group_id), expected, px=self.ttl_ms)
        self._call(pipe.execute)

    def record_completion(
        self, group_id: str, task_id: str, success: bool, error_message: str | None = None
    ) -> bool:
        """Count member ``task_id`` as finished; True if new, False for a repeated report."""
        record = {
            "task_id": task_id,
            "success": bool(success),
            "error_message": error_message,
            "timestamp": time.time(),
        }
        reply = self._call(
            self._record_script,
            keys=[
                keys.barrier_members(self.run_id, group_id),
                keys.barrier_expected(self.run_id, group_id),
                keys.barrier_results(self.run_id, group_id),
            ],
            args=[
                task_id,
                self._signer.sign(orjson.dumps(record)),
                self.ttl_ms,
                keys.barrier_channel(self.run_id, group_id),
            ],
        )
        added, count = int(reply[0]), int(reply[1])
        logger.debug(
            "run %s group %s: task %s completed (new=%s, %d counted)",
            self.run_id,
            group_id,
            task_id,
            bool(added),
            count,
        )
        return added == 1

    def wait_barrier(self, group_id: str, timeout_s: float | None = None) -> None:
        """Block until every expected member completed; ``BarrierTimeout`` after ``timeout_s``.

        ``timeout_s=None`` waits as long as it takes. ``BackendError`` if the barrier does not
        exist (never created, cleaned up or expired), ``BackendUnavailable`` if Redis stays
        unreachable for ``max_outage_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waiter = _Waiter(self, group_id)
        try:
            delay = _FIRST_POLL_S
            while not waiter.is_complete():
                wait_s = delay
                if deadline is not None:
                    wait_s = min(delay, deadline - time.monotonic())
                    if wait_s <= 0:
                        raise BarrierTimeout(
                            f"barrier of group {group_id!r} in run {self.run_id!r} not reached "
                            f"within {timeout_s:g} s ({waiter.progress()})"
                        )
                waiter.sleep(wait_s)
                delay = min(delay * 2, _MAX_POLL_S)
        finally:
            waiter.close()

    def get_results(self, group_id: str) -> dict[str, TaskResult]:
        """The recorded outcome of every member that completed, by task id."""
        raw = self._call(self._client.hgetall, keys.barrier_results(self.run_id, group_id))
        results: dict[str, TaskResult] = {}
        for field, blob in raw.items():
            task_id = field.decode()
            try:
                record = orjson.loads(self._signer.verify(blob))
                results[task_id] = TaskResult(
                    task_id=str(record["task_id"]),
                    success=bool(record["success"]),
                    error_message=record["error_message"],
                    timestamp=float(record["timestamp"]),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise PoisonMessage(
                    f"completion of task {task_id!r} in group {group_id!r} is malformed"
                ) from exc
        return results

    def cleanup_barrier(self, group_id: str) -> None:
        """Delete every key of the barrier."""
        self._call(
            self._client.unlink,
            keys.barrier_members(self.run_id, group_id),
            keys.barrier_expected(self.run_id, group_id),
            keys.barrier_results(self.run_id, group_id),
        )

    def count(self, group_id: str) -> tuple[int, int | None]:
        """Members counted so far, and the number expected (None: no such barrier)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.scard(keys.barrier_members(self.run_id, group_id))
        pipe.get(keys.barrier_expected(self.run_id, group_id))
        counted, expected = self._call(pipe.execute)
        return int(counted), None if expected is None else int(expected)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with Redis errors turned into backend errors."""
        try:
            return function(*args, **kwargs)
        except OUTAGE_ERRORS as exc:
            raise BackendUnavailable(
                f"Redis unreachable in run {self.run_id!r}", cause=exc
            ) from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis failed in run {self.run_id!r}", cause=exc) from exc

    def _subscribe(self, group_id: str) -> PubSub:
        """A pub/sub connection subscribed to the barrier's channel."""
        pubsub: PubSub = self._client.pubsub(  # type: ignore[no-untyped-call,unused-ignore]  # unannotated before redis-py 6
            ignore_subscribe_messages=True
        )
        try:
            pubsub.subscribe(keys.barrier_channel(self.run_id, group_id))
        except redis.RedisError:
            pubsub.close()
            raise
        return pubsub


class _Waiter:
    """One ``wait_barrier`` call: its subscription, and how long Redis has been unreachable."""

    def __init__(self, coordinator: RedisCoordinator, group_id: str) -> None:
        self.coordinator = coordinator
        self.group_id = group_id
        self.pubsub: PubSub | None = None
        self.outage_since: float | None = None
        self.last: tuple[int, int | None] = (0, None)

    def is_complete(self) -> bool:
        """True once every expected member is counted; subscribes first (no lost wake-up)."""
        try:
            if self.pubsub is None:
                self.pubsub = self.coordinator._subscribe(self.group_id)
            self.last = self.coordinator.count(self.group_id)
        except (*OUTAGE_ERRORS, BackendUnavailable) as exc:
            self._outage(exc)
            return False
        self.outage_since = None
        counted, expected = self.last
        if expected is None:
            raise BackendError(
                f"barrier of group {self.group_id!r} in run {self.coordinator.run_id!r} does "
                "not exist: never created, cleaned up or expired"
            )
        return counted >= expected

    def sleep(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for a message on the barrier's channel, or just wait."""
        if self.pubsub is not None:
            try:
                self.pubsub.get_message(timeout=wait_s)
                return
            except OUTAGE_ERRORS as exc:
                self._outage(exc)
        time.sleep(wait_s)

    def progress(self) -> str:
        """The last count seen, for messages."""
        counted, expected = self.last
        return f"{counted} of {expected if expected is not None else '?'} members done"

    def close(self) -> None:
        """Drop the subscription."""
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None

    def _outage(self, exc: BaseException) -> None:
        """Note that Redis could not be reached; raise once that lasted ``max_outage_s``."""
        self.close()
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
            logger.warning(
                "run %s group %s: Redis unreachable while waiting for the barrier: %s",
                self.coordinator.run_id,
                self.group_id,
                exc,
            )
        elif now - self.outage_since > self.coordinator.max_outage_s:
            raise BackendUnavailable(
                f"Redis unreachable for over {self.coordinator.max_outage_s:g} s while run "
                f"{self.coordinator.run_id!r} waited for group {self.group_id!r}",
                cause=exc,
            ) from exc


def record_task_completion(
    redis_client: RedisClient,
    run_id: str,
    task_id: str,
    group_id: str,
    success: bool,
    error_message: str | None = None,
    *,
    signer: Signer | None = None,
) -> bool:
    """Record a member's completion for the barrier of ``group_id`` (see ``record_completion``)."""
    coordinator = RedisCoordinator(redis_client, run_id, signer=signer)
    return coordinator.record_completion(group_id, task_id, success, error_message)
