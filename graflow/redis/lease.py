"""The producer's lease on its run: nodes run a run's items only while its producer lives.

    producer ─ SET graflow:{run}:producer HOLDER PX lease ──────── at start, then every lease/4
               (a thread; renewed with XX, so a key that vanished is noticed, not recreated)
    node     ─ EXISTS graflow:{run}:producer (cached lease/4 per run) ─ gone: skip the item
    graflow cancel RUN ─ SET graflow:{run}:canceled WHO ; DEL graflow:{run}:producer

A producer SIGKILLed mid-run stops renewing: within a lease its queued items are skipped
(acknowledged and removed, not run) and its control keys deleted; the channel keys stay to
their TTL so that a resumed checkpoint finds them (#14). When the renewal finds the key gone,
the run was canceled (the canceled key says by whom) or Redis lost it (restarted without
persistence, flushed, failed over without the writes): the producer raises ``RunCanceled`` or
``RunLost`` at its next wait. Redis refusing the renewal (out of memory) for longer than
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
        self.client.set(self.key, self.holder, px=self.lease_ms)
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
            self.client.delete(self.key)
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
        by = self.client.get(keys.canceled(self.run_id))
        if by is not None:
            text = by.decode(errors="replace") if isinstance(by, bytes) else str(by)
            self.failure = RunCanceled(self.run_id, text)
        else:
            self.failure = RunLost(self.run_id, "the run's lease key is gone")

    def _refused(self, exc: redis.ResponseError) -> None:
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
            logger.warning("run %s: Redis refuses writes (%s)", self.run_id, exc)
        elif now - self._refused_since >= self.refused_limit_s:
            self.failure = WriteRefused(f"{exc} (for {now - self._refused_since:.0f} s)")


class LiveRuns:
    """A node's view of which runs lost their producer (one round trip per run per interval)."""

    def __init__(self, client: Any, interval_s: float = PRODUCER_LEASE_S / 4) -> None:
        self.client = client
        self.interval_s = interval_s
        self._seen: dict[str, tuple[float, bool]] = {}

    def is_orphaned(self, run_id: str) -> bool:
        """True if the run exists (or was canceled) but its producer holds no lease.

        A run Redis knows nothing of is not orphaned: the caller reports it as unknown.
        Cached for ``interval_s``.
        """
        now = time.monotonic()
        seen = self._seen.get(run_id)
        if seen is not None and now < seen[0]:
            return seen[1]
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys.producer(run_id))
        pipe.exists(keys.canceled(run_id))
        pipe.exists(keys.graph(run_id))
        leased, canceled, known = pipe.execute()
        orphaned = not leased and bool(canceled or known)
        if len(self._seen) > 1024:
            self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
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
    pipe.delete(keys.graph(run_id), keys.handlers(run_id), keys.nodes(run_id), keys.done(run_id))
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
