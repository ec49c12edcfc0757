"""What a producer watches while its run waits: dead letters of its items, serving nodes.

    node ──dead-letters an entry of the run──▶ graflow:{q:<queue>}:dead  (r=run, b=blob)
    producer ◀── XREAD every second ── matches b against the entries it queued ──▶ the
                 items fail with DeadLettered (the reason, and what to do about it)
    producer ── no completion for a few seconds ── node heartbeats: none serves the queue?
                 ──▶ a warning on stderr (queue, Redis URL without password), every 30 s

Both checks run between two waits of the scheduler, at most once a second (#14). An entry is
known by a digest of its signed blob, which a dead letter carries as it was queued: no
dead-lettered payload is ever unpickled here (it may be forged).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from graflow.core.spec import Completion
from graflow.exceptions import DeadLettered
from graflow.redis import keys
from graflow.redis.status import serving_workers

__all__ = ["DeadLetterWatch", "NodeWatch"]

logger = logging.getLogger(__name__)

_POLL_S = 1.0
# Node-side outcomes that already reach the run as completions (WorkerLost, TaskError).
_REPORTED_BY_NODES = ("delivered ", "the worker could not load", "run ")
_HINTS = {
    "signature": "the producer and the nodes sign with different secrets: give every producer "
    "and node the same GRAFLOW_SECRET or GRAFLOW_SECRET_FILE",
    "version": "the nodes run another Python or graflow version than the producer: run the "
    "same versions everywhere",
    "unsigned": "the entry was not signed by a graflow producer",
}


def _digest(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=16).digest()


def _reason_of(text: str) -> str:
    for token in ("signature", "version", "unsigned", "truncated", "format"):
        if token in text:
            return token
    return "undecodable"


class DeadLetterWatch:
    """Turns the dead letters of one run's entries into failed completions of their items."""

    def __init__(self, client: Any, queue: str, run_id: str) -> None:
        self.client = client
        self.stream = keys.dead_letters(queue)
        self.run_id = run_id.encode()
        self.cursor: bytes | str = "0-0"
        self.sent: dict[bytes, list[tuple[int, str]]] = {}
        self.next_poll = 0.0

    def start(self) -> None:
        """Note where the dead-letter stream ends now: only later letters can be this run's."""
        last = self.client.xrevrange(self.stream, "+", "-", count=1)
        self.cursor = last[0][0] if last else "0-0"

    def note_sent(self, entries: Iterable[tuple[bytes, list[tuple[Any, ...]]]]) -> None:
        """Remember the items of each entry queued, by the digest of its signed blob."""
        for blob, raws in entries:
            self.sent[_digest(blob)] = [(raw[0], raw[1]) for raw in raws]

    def forget_finished(self, outstanding: set[int]) -> None:
        """Drop entries none of whose items is still outstanding (keeps the book small)."""
        if len(self.sent) > 2 * len(outstanding) + 1024:
            self.sent = {
                d: items
                for d, items in self.sent.items()
                if any(s in outstanding for s, _ in items)
            }

    def poll(self, outstanding: set[int]) -> list[Completion]:
        """Failed completions for the outstanding items of newly dead-lettered entries."""
        now = time.monotonic()
        if now < self.next_poll or not outstanding:
            return []
        self.next_poll = now + _POLL_S
        reply = self.client.xread({self.stream: self.cursor}, count=500)
        failed: list[Completion] = []
        for _stream, messages in reply or ():
            for entry_id, fields in messages:
                self.cursor = entry_id
                failed.extend(self._failures(entry_id, fields, outstanding))
        return failed

    def _failures(self, entry_id: Any, fields: Any, outstanding: set[int]) -> list[Completion]:
        if fields.get(b"r") != self.run_id or b"b" not in fields:
            return []
        text = fields.get(b"reason", b"").decode(errors="replace")
        if text.startswith(_REPORTED_BY_NODES):
            return []
        items = self.sent.get(_digest(fields[b"b"]), [])
        reason = _reason_of(text)
        letter = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        hint = _HINTS.get(reason, f"see 'graflow dlq show {letter} --redis URL'")
        logger.error(
            "run %s: a node dead-lettered %d of its task(s) (%s): %s",
            self.run_id.decode(),
            len(items),
            text,
            hint,
        )
        return [
            Completion(seq, task_id, False, None, DeadLettered(task_id, reason, text, hint))
            for seq, task_id in items
            if seq in outstanding
        ]


class NodeWatch:
    """Says on stderr, at a low rate, that no node serves the queue the run waits on."""

    def __init__(
        self,
        client: Any,
        queue: str,
        run_id: str,
        where: str,
        quiet_s: float = 3.0,
        repeat_s: float = 30.0,
    ) -> None:
        self.client = client
        self.queue = queue
        self.run_id = run_id
        self.where = where
        self.quiet_s = quiet_s
        self.repeat_s = repeat_s
        self.last_progress = time.monotonic()
        self.next_check = 0.0
        self.next_warning = 0.0
        self.alone_since: float | None = None
        self.waited_s = 0.0
        """Seconds the run waited with no node serving its queue (so far)."""

    def progressed(self) -> None:
        """A completion came in: nodes are serving."""
        self.last_progress = time.monotonic()
        self._served(self.last_progress)

    def check(self, waiting: bool) -> None:
        """Call between waits; ``waiting``: items are out and none has come back."""
        now = time.monotonic()
        if not waiting or now - self.last_progress < self.quiet_s or now < self.next_check:
            return
        self.next_check = now + 2.0
        if serving_workers(self.client, self.queue):
            self._served(now)
            return
        if self.alone_since is None:
            self.alone_since = self.last_progress  # waiting since the last completion
        if now >= self.next_warning:
            self.next_warning = now + self.repeat_s
            logger.warning(
                "run %s: no graflow node serves queue %r on %s; waiting (%.0f s so far). "
                "Start one: graflow supervisor --redis URL --queue %s",
                self.run_id,
                self.queue,
                self.where,
                self.total_s(now),
                self.queue,
            )

    def total_s(self, now: float | None = None) -> float:
        """Seconds waited without a node, including a wait still going on."""
        now = time.monotonic() if now is None else now
        ongoing = now - self.alone_since if self.alone_since is not None else 0.0
        return self.waited_s + ongoing

    def _served(self, now: float) -> None:
        if self.alone_since is not None:
            self.waited_s += now - self.alone_since
            self.alone_since = None
            logger.info("run %s: a node serves queue %r now", self.run_id, self.queue)
