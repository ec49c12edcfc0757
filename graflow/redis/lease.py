"""The producer's lease on its run: nodes run a run's items only while its producer lives.

    producer ─ SET graflow:{run}:leased, SET graflow:{run}:producer HOLDER PX lease ── at start,
               then every lease/4 (a thread; renewed with XX: a vanished key is noticed)
    node     ─ EXISTS producer, canceled, leased (cached lease/4 per run) ─ leased but the
               lease gone, or canceled: skip the item
    graflow cancel RUN ─ SET graflow:{run}:canceled WHO ; DEL graflow:{run}:producer

A producer SIGKILLed mid-run stops renewing: one more lease after its lease ran out (time
for a producer to retake a lease that expired while Redis was away), its queued items are
skipped (acknowledged and removed, not run) and its control keys deleted; the channel keys
stay to their TTL so that a resumed checkpoint finds them (#14). When the renewal finds the
lease gone, the run was canceled (the canceled key says by whom), or the lease ran out during
an outage (``leased`` is still there: taken again), or Redis lost the run (restarted without
persistence, flushed, failed over without the writes): the producer raises ``RunCanceled``
or ``RunLost`` at its next wait. Redis refusing the renewal (out of memory) for longer than
``refused_limit_s`` fails the run with ``WriteRefused``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from graflow.exceptions import GraflowRuntimeError, RunCanceled, RunLost, WriteRefused
from graflow.redis import keys
from graflow.redis.connect import OUTAGE_ERRORS

__all__ = [
    "PRODUCER_LEASE_S",
    "LiveRuns",
    "ProducerLease",
    "cancel_run",
    "drop_orphaned_run",
    "max_value_bytes",
]

logger = logging.getLogger(__name__)

PRODUCER_LEASE_S = 10.0
"""How long a run outlives its producer's last renewal (nodes then skip its items)."""
_REFUSED_LIMIT_S = 10.0
_CANCELED_TTL_S = 7 * 24 * 3600
_DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024
_ORPHAN_MARK_TTL_S = 24 * 3600


class ProducerLease:
    """The lease a producer holds on its run while it runs (a renewal thread)."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        lease_s: float = PRODUCER_LEASE_S,
        refused_limit_s: float = _REFUSED_LIMIT_S,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.key = keys.producer(run_id)
        self.lease_ms = max(1, int(lease_s * 1000))
        self.refused_limit_s = refused_limit_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.failure: GraflowRuntimeError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused_since: float | None = None

    def start(self) -> None:
        """Take the lease (before any item is queued) and start renewing it."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.leased(self.run_id), self.holder, ex=_CANCELED_TTL_S)
        pipe.set(self.key, self.holder, px=self.lease_ms)
        pipe.execute()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"graflow-lease-{self.run_id}", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raise what the renewal found (RunCanceled, RunLost, WriteRefused), if anything."""
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        """Stop renewing and give the lease up (the run ended)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        try:
            self.client.delete(self.key, keys.leased(self.run_id))
        except redis.RedisError as exc:
            logger.debug("run %s: could not give up its lease: %s", self.run_id, exc)

    def _renew_until_stopped(self) -> None:
        interval = self.lease_ms / 4000
        while not self._stop.wait(interval) and self.failure is None:
            try:
                self._renew()
            except OUTAGE_ERRORS as exc:  # the wait loop reports outages; try again later
                logger.debug("run %s: lease renewal failed: %s", self.run_id, exc)
            except redis.ResponseError as exc:
                self._refused(exc)

    def _renew(self) -> None:
        if self.client.set(self.key, self.holder, px=self.lease_ms, xx=True):
            self._refused_since = None
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.get(keys.canceled(self.run_id))
        pipe.exists(keys.leased(self.run_id))
        by, kept = pipe.execute()
        if by is not None:
            text = by.decode(errors="replace") if isinstance(by, bytes) else str(by)
            self.failure = RunCanceled(self.run_id, text)
        elif kept:
            # The lease ran out while Redis was unreachable (its TTL runs on the server's
            # clock): Redis still has the run, so take the lease again.
            logger.warning("run %s: its lease expired during an outage; taken again", self.run_id)
            self.client.set(self.key, self.holder, px=self.lease_ms)
        else:
            self.failure = RunLost(self.run_id, "the run's keys are gone")

    def _refused(self, exc: redis.ResponseError) -> None:
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
            logger.warning("run %s: Redis refuses writes (%s)", self.run_id, exc)
        elif now - self._refused_since >= self.refused_limit_s:
            self.failure = WriteRefused(f"{exc} (for {now - self._refused_since:.0f} s)")


class LiveRuns:
    """A node's view of which runs lost their producer (one round trip per run per interval)."""

    def __init__(
        self,
        client: Any,
        interval_s: float = PRODUCER_LEASE_S / 4,
        grace_s: float = PRODUCER_LEASE_S,
    ) -> None:
        self.client = client
        self.interval_s = interval_s
        self.grace_s = grace_s
        """How long a lease must stay missing: a producer retakes one that ran out while
        Redis was away within this time."""
        self._seen: dict[str, tuple[float, bool]] = {}
        self._unleased_since: dict[str, float] = {}

    def is_orphaned(self, run_id: str) -> bool:
        """True if the run was canceled, or its producer took a lease and no longer holds it.

        A run Redis knows nothing of, or one queued without a lease, is not orphaned: the
        caller runs it or reports it as unknown. Cached for ``interval_s``.
        """
        now = time.monotonic()
        seen = self._seen.get(run_id)
        if seen is not None and now < seen[0]:
            return seen[1]
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys.producer(run_id))
        pipe.exists(keys.canceled(run_id))
        pipe.exists(keys.leased(run_id))
        held, canceled, was_leased = pipe.execute()
        orphaned = bool(canceled)
        if was_leased and not held:
            since = self._unleased_since.setdefault(run_id, now)
            orphaned = orphaned or now - since >= self.grace_s
        else:
            self._unleased_since.pop(run_id, None)
        if len(self._seen) > 1024:
            self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
            self._unleased_since = {
                k: v for k, v in self._unleased_since.items() if now - v < 10 * self.grace_s
            }
        self._seen[run_id] = (now + self.interval_s, orphaned)
        return orphaned


def cancel_run(client: Any, run_id: str, by: str) -> bool:
    """Stop run ``run_id`` on purpose; True if it was running (its producer held the lease).

    Its producer raises RunCanceled at its next renewal; nodes skip its queued items.
    """
    pipe = client.pipeline(transaction=True)
    pipe.exists(keys.producer(run_id))
    pipe.set(keys.canceled(run_id), by, ex=_CANCELED_TTL_S)
    pipe.delete(keys.producer(run_id))
    was_running, _, _ = pipe.execute()
    return bool(was_running)


def drop_orphaned_run(client: Any, run_id: str) -> None:
    """Delete the control keys of a run whose producer is gone, marking it so (its channel
    keys stay to their TTL: a checkpoint that resumes the run reads them)."""
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.canceled(run_id), "its producer is gone", nx=True, ex=_ORPHAN_MARK_TTL_S)
    pipe.delete(
        keys.graph(run_id),
        keys.handlers(run_id),
        keys.nodes(run_id),
        keys.done(run_id),
        keys.leased(run_id),
    )
    pipe.execute()


def max_value_bytes(client: Any) -> int:
    """The largest value this Redis takes (proto-max-bulk-len; 512 MB if it will not say)."""
    try:
        reply = client.config_get("proto-max-bulk-len")
    except redis.RedisError:  # CONFIG is often not allowed to an application's user
        return _DEFAULT_MAX_BULK_BYTES
    raw = reply.get("proto-max-bulk-len") or reply.get(b"proto-max-bulk-len")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return _DEFAULT_MAX_BULK_BYTES
