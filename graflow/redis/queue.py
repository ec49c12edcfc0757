"""The Redis work queue: one stream per queue name, at-least-once delivery to workers.

    producer ──XADD──▶ graflow:{q:<queue>}:tasks ──XREADGROUP──▶ worker (entry now pending)
    worker ──XADD completion──▶ graflow:{<run>}:done ──XACK+XDEL──▶ entry leaves Redis
    worker heartbeat: XCLAIM <own pending ids> JUSTID   (keeps its lease: idle time reset)
    any worker: XPENDING IDLE > lease ──XCLAIM──▶ redelivered (delivery count + 1)
                delivered >= max_deliveries ──▶ graflow:{q:<queue>}:dead, entry removed

Claiming an entry and marking it in flight is one server-side step (XREADGROUP puts it in
the group's pending list). An entry is removed only after its completion was written, so
a worker or node that dies loses nothing: its entries are reclaimed once their lease
expires. A completion written twice (a reclaimed task that had in fact finished) is
ignored by the producer, which applies the first completion of each work item only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from graflow.redis import keys
from graflow.redis.connect import RedisClient

__all__ = ["QueueEntry", "RedisTaskQueue", "execute_then_wait"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueEntry:
    """One stream entry: a signed work item of a run."""

    entry_id: bytes
    run_id: str
    blob: bytes
    deliveries: int = 1


class RedisTaskQueue:
    """The stream of one queue name, seen by producers and workers."""

    def __init__(
        self,
        client: RedisClient,
        queue: str = "default",
        *,
        max_deliveries: int = 3,
        lease_ms: int = 30_000,
    ) -> None:
        # Typed loosely on purpose: redis-py's stubs type replies as unions over both
        # decode modes; this queue always uses a non-decoding client (bytes replies).
        self.client: Any = client
        self.queue = queue
        self.stream = keys.queue_stream(queue)
        self.dead = keys.dead_letters(queue)
        self.group = keys.queue_group
        self.max_deliveries = max_deliveries
        self.lease_ms = lease_ms

    # -- producer side ----------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist yet."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def submit(self, run_id: str, blobs: list[bytes]) -> None:
        """Append signed work items of ``run_id`` (one pipelined round trip)."""
        if not blobs:
            return
        pipe = self.client.pipeline(transaction=False)
        for blob in blobs:
            pipe.xadd(self.stream, {b"r": run_id.encode(), b"b": blob})
        pipe.execute()

    def submit_and_read(
        self,
        run_id: str,
        blobs: list[bytes],
        stream: str,
        last_id: bytes,
        block_ms: int,
        on_submitted: Callable[[], None],
    ) -> Any:
        """``submit`` the blobs and XREAD ``stream`` after ``last_id`` in one round trip.

        The read blocks up to ``block_ms``; its reply is returned as ``xread`` returns it.
        ``on_submitted`` is called once Redis has confirmed every XADD and before the wait,
        so an error while waiting (Redis going away) does not make the caller submit the
        items again.
        """
        pipe = self.client.pipeline(transaction=False)
        for blob in blobs:
            pipe.xadd(self.stream, {b"r": run_id.encode(), b"b": blob})
        pipe.xread({stream: last_id}, count=1000, block=block_ms)

        def submitted(replies: list[Any]) -> None:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            on_submitted()

        return execute_then_wait(self.client, pipe, submitted)

    def depth(self) -> int:
        """Entries in the stream (waiting or in flight)."""
        return int(self.client.xlen(self.stream))

    # -- worker side ------------------------------------------------------------------
    def fetch(self, consumer: str, count: int, block_ms: int) -> list[QueueEntry]:
        """Claim up to ``count`` new entries, blocking up to ``block_ms`` for the first."""
        reply = self.client.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return self.entries(reply)

    def queue_fetch(self, pipe: Any, consumer: str, count: int, block_ms: int) -> None:
        """Queue on ``pipe`` the claim that ``fetch`` makes (``entries`` reads its reply)."""
        pipe.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count, block=block_ms)

    def entries(self, reply: Any) -> list[QueueEntry]:
        """The entries of an XREADGROUP reply; malformed ones are dead-lettered."""
        entries: list[QueueEntry] = []
        for _stream, messages in reply or ():
            for entry_id, fields in messages:
                self._collect(entries, entry_id, fields, 1)
        return entries

    def _collect(
        self, entries: list[QueueEntry], entry_id: bytes, fields: Any, deliveries: int
    ) -> None:
        try:
            entries.append(_entry(entry_id, fields, deliveries))
        except MalformedEntry:
            self.dead_letter_raw(entry_id, fields, "malformed entry: no run id or payload")

    def ack(self, entry_ids: list[bytes]) -> None:
        """The entries' completions are recorded: remove them from Redis."""
        if not entry_ids:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, *entry_ids)
        pipe.xdel(self.stream, *entry_ids)
        pipe.execute()

    def queue_ack(self, pipe: Any, entry_ids: list[bytes]) -> None:
        """Queue on ``pipe`` the acknowledgement of ``entry_ids`` (the caller executes it)."""
        if entry_ids:
            pipe.xack(self.stream, self.group, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)

    def extend_lease(self, consumer: str, entry_ids: list[bytes]) -> None:
        """Heartbeat: reset the idle time of entries this consumer is still working on."""
        if entry_ids:
            self.client.xclaim(self.stream, self.group, consumer, 0, entry_ids, justid=True)

    def hand_back(self, entries: list[QueueEntry]) -> None:
        """Put claimed entries back at the tail, available to any worker at once."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry in entries:
            pipe.xadd(self.stream, {b"r": entry.run_id.encode(), b"b": entry.blob})
        ids = [e.entry_id for e in entries]
        pipe.xack(self.stream, self.group, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()

    def reclaim(self, consumer: str, count: int = 32) -> list[QueueEntry]:
        """Take over entries whose lease expired (their worker or node died)."""
        pending = self.client.xpending_range(
            self.stream, self.group, min="-", max="+", count=count, idle=self.lease_ms
        )
        if not pending:
            return []
        deliveries = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        claimed = self.client.xclaim(
            self.stream, self.group, consumer, self.lease_ms, list(deliveries)
        )
        entries: list[QueueEntry] = []
        for entry_id, fields in claimed:
            if fields is None:
                continue  # deleted meanwhile
            self._collect(entries, entry_id, fields, deliveries.get(entry_id, 1) + 1)
        return entries

    def dead_letter(self, entry: QueueEntry | None, reason: str, raw: Any = None) -> None:
        """Move an entry to the dead-letter stream with the reason, and remove it."""
        fields: dict[bytes, bytes] = {b"reason": reason.encode()[:2000]}
        if entry is not None:
            fields[b"r"] = entry.run_id.encode()
            fields[b"b"] = entry.blob
            fields[b"id"] = entry.entry_id
            fields[b"deliveries"] = str(entry.deliveries).encode()
        elif raw is not None:
            fields[b"raw"] = repr(raw).encode()[:2000]
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead, fields, maxlen=100_000, approximate=True)
        if entry is not None:
            pipe.xack(self.stream, self.group, entry.entry_id)
            pipe.xdel(self.stream, entry.entry_id)
        pipe.execute()
        logger.warning("dead-lettered an entry of queue %s: %s", self.queue, reason)

    def dead_letter_raw(self, entry_id: bytes, fields: Any, reason: str) -> None:
        """Dead-letter an entry whose fields could not even be parsed."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.dead,
            {b"reason": reason.encode()[:2000], b"raw": repr(fields).encode()[:4000]},
            maxlen=100_000,
            approximate=True,
        )
        pipe.xack(self.stream, self.group, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()
        logger.warning("dead-lettered a malformed entry of queue %s: %s", self.queue, reason)

    def pending_count(self) -> int:
        """Entries claimed by a worker and not yet acknowledged."""
        with contextlib.suppress(redis.ResponseError):
            info = self.client.xpending(self.stream, self.group)
            return int(info["pending"])
        return 0


def execute_then_wait(client: Any, pipe: Any, on_written: Callable[[list[Any]], None]) -> Any:
    """Send ``pipe``'s commands in one round trip, the last one a blocking read; its reply.

    ``on_written`` gets the replies of the other commands (errors in place) as soon as they
    are in, before the wait: what they did is known even if the wait then fails. Without a
    connection pool (Redis Cluster), it is called once the whole pipeline returns.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        everything = pipe.execute(raise_on_error=False)
        on_written(everything[:-1])
        if isinstance(everything[-1], Exception):
            raise everything[-1]
        return everything[-1]
    stack = pipe.command_stack
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands([args for args, _ in stack]))
        replies: list[Any] = []
        for args, options in stack[:-1]:
            try:
                replies.append(client.parse_response(conn, args[0], **options))
            except redis.ResponseError as exc:
                replies.append(exc)
        on_written(replies)
        args, options = stack[-1]
        return client.parse_response(conn, args[0], **options)
    except redis.ResponseError:
        raise  # the last reply was read: the connection is in step
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)
        pipe.reset()


class MalformedEntry(ValueError):
    """Raised when a stream entry lacks the fields of a work item."""

    def __init__(self, entry_id: bytes, fields: Any) -> None:
        super().__init__(f"malformed queue entry {entry_id!r}")
        self.entry_id = entry_id
        self.fields = fields


def _entry(entry_id: bytes, fields: Any, deliveries: int) -> QueueEntry:
    try:
        run = fields[b"r"].decode()
        blob = fields[b"b"]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise MalformedEntry(entry_id, fields) from None
    return QueueEntry(entry_id, run, blob, deliveries)
