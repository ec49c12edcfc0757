"""The dead-letter stream of a queue: list, show, requeue and purge its entries.

    worker ──dead_letter──▶ graflow:{q:<queue>}:dead   fields: reason, r (run id), b (blob),
                                                        id (original entry id), deliveries
                                                        (or reason, raw for unparseable ones)
    graflow dlq requeue ──(Lua: XADD r, b to the queue stream; XDEL the dead letter)──▶ tasks

A requeued entry is a new stream entry: its delivery count starts again at one. Both keys
carry the queue's hash tag, so the move is one atomic script, legal on a cluster, and
requeueing the same id twice moves it once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graflow.exceptions import ConfigError, PoisonMessage
from graflow.redis import keys
from graflow.redis.signing import Signer

__all__ = [
    "DeadLetter",
    "check_entry_id",
    "count_dead",
    "describe_blob",
    "list_dead",
    "purge",
    "read_dead",
    "requeue",
    "requeue_all",
]

_ENTRY_ID = re.compile(r"\d+(-\d+)?")
_PAGE = 200

_REQUEUE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local run, blob
for i = 1, #fields, 2 do
  if fields[i] == 'r' then run = fields[i + 1] elseif fields[i] == 'b' then blob = fields[i + 1] end
end
if not run or not blob then return -1 end
redis.call('XADD', KEYS[2], '*', 'r', run, 'b', blob)
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter entry."""

    entry_id: str
    reason: str
    run_id: str | None
    original_id: str | None
    deliveries: int | None
    blob: bytes | None
    raw: str | None
    """What could be read of an entry that had no run id or payload."""

    @property
    def dead_at(self) -> float:
        """When it was dead-lettered (seconds since the epoch, from its stream id)."""
        return int(self.entry_id.split("-", 1)[0]) / 1000

    @property
    def can_requeue(self) -> bool:
        """True if it has a run id and a payload to send again."""
        return self.run_id is not None and self.blob is not None


def check_entry_id(entry_id: str) -> str:
    """``entry_id`` if it looks like a stream id (``1700000000000-0``); else ConfigError."""
    if not _ENTRY_ID.fullmatch(entry_id):
        raise ConfigError(f"ID {entry_id!r} is not a stream entry id (like 1732700000000-0)")
    return entry_id


def _dead_letter(entry_id: Any, fields: dict[bytes, bytes]) -> DeadLetter:
    def text(name: bytes) -> str | None:
        value = fields.get(name)
        return value.decode(errors="replace") if value is not None else None

    deliveries = text(b"deliveries")
    return DeadLetter(
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        reason=text(b"reason") or "",
        run_id=text(b"r"),
        original_id=text(b"id"),
        deliveries=int(deliveries) if deliveries and deliveries.isdigit() else None,
        blob=fields.get(b"b"),
        raw=text(b"raw"),
    )


def count_dead(client: Any, queue: str) -> int:
    """How many dead letters ``queue`` has."""
    return int(client.xlen(keys.dead_letters(queue)))


def list_dead(client: Any, queue: str, count: int = 50) -> list[DeadLetter]:
    """The oldest ``count`` dead letters of ``queue``."""
    entries = client.xrange(keys.dead_letters(queue), "-", "+", count=count)
    return [_dead_letter(entry_id, fields) for entry_id, fields in entries]


def _all_ids(client: Any, queue: str) -> Iterator[str]:
    start = "-"
    while True:
        page = client.xrange(keys.dead_letters(queue), start, "+", count=_PAGE)
        for entry_id, _fields in page:
            yield entry_id.decode()
        if len(page) < _PAGE:
            return
        start = "(" + page[-1][0].decode()


def read_dead(client: Any, queue: str, entry_id: str) -> DeadLetter:
    """Dead letter ``entry_id`` of ``queue``; KeyError if there is none."""
    found = client.xrange(keys.dead_letters(queue), entry_id, entry_id)
    if not found:
        raise KeyError(entry_id)
    return _dead_letter(*found[0])


def requeue(client: Any, queue: str, entry_ids: list[str]) -> dict[str, str]:
    """Move entries back to the queue stream; ``{id: "requeued" | "missing" | "malformed"}``."""
    script = client.register_script(_REQUEUE)
    outcome = {}
    for entry_id in entry_ids:
        moved = int(
            script(keys=[keys.dead_letters(queue), keys.queue_stream(queue)], args=[entry_id])
        )
        outcome[entry_id] = {1: "requeued", 0: "missing"}.get(moved, "malformed")
    return outcome


def requeue_all(client: Any, queue: str) -> dict[str, str]:
    """Move every dead letter of ``queue`` that has a payload back to its stream."""
    return requeue(client, queue, list(_all_ids(client, queue)))


def purge(client: Any, queue: str) -> int:
    """Delete the dead-letter stream of ``queue``; returns how many entries it held."""
    pipe = client.pipeline(transaction=True)
    pipe.xlen(keys.dead_letters(queue))
    pipe.delete(keys.dead_letters(queue))
    count, _ = pipe.execute()
    return int(count)


def describe_blob(blob: bytes, signer: Signer) -> list[dict[str, Any]] | str:
    """The work items of a dead letter's payload, or why they cannot be read.

    Only a payload that verifies with ``signer``'s secret is unpickled.
    """
    try:
        items = signer.loads(blob)
        return [
            {"seq": item[0], "task_id": item[1], "attempt": item[2]}
            for item in items
            if isinstance(item, tuple | list) and len(item) >= 3
        ]
    except PoisonMessage as exc:
        return f"not readable with this secret: {exc}"
    except (TypeError, ValueError) as exc:
        return f"not a list of work items: {exc}"
