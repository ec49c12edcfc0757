"""Text and JSON views of ``graflow status`` and ``graflow dlq`` (pure: data in, text out)."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from graflow.redis.dlq import DeadLetter
from graflow.redis.status import ClusterStatus, NodeStatus, QueueStatus

__all__ = [
    "dead_letter_json",
    "dead_letter_text",
    "dead_letters_text",
    "status_json",
    "status_text",
]


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch_s))


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def status_json(status: ClusterStatus) -> str:
    """The status as one JSON object."""
    data = dataclasses.asdict(status)
    data["rate_per_s"] = round(status.rate_per_s, 3)
    return json.dumps(data)


def _queue_lines(queues: list[QueueStatus]) -> list[str]:
    if not queues:
        return ["queues: none (no task was ever queued in this Redis)"]
    rows = [["QUEUE", "WAITING", "IN FLIGHT", "OLDEST IN FLIGHT", "DEAD LETTERS"]]
    for q in queues:
        oldest = max(q.oldest_in_flight, key=lambda e: e.age_s, default=None)
        rows.append(
            [
                q.name,
                str(q.waiting),
                str(q.in_flight),
                f"{_age(oldest.age_s)} ({oldest.consumer})" if oldest else "-",
                str(q.dead_letters),
            ]
        )
    lines = ["queues:", *_table(rows)]
    flights = [(q.name, e) for q in queues for e in q.oldest_in_flight]
    if flights:
        rows = [["QUEUE", "ENTRY", "WORKER", "AGE", "IDLE", "DELIVERIES"]]
        rows += [
            [name, e.entry_id, e.consumer, _age(e.age_s), _age(e.idle_s), str(e.deliveries)]
            for name, e in flights
        ]
        lines += ["", "in flight (oldest first):", *_table(rows)]
    return lines


def _node_lines(nodes: list[NodeStatus], gone: int, rate: float) -> list[str]:
    head = f"nodes: {len(nodes)} live, {gone} gone; throughput {rate:.1f} tasks/s"
    if not nodes:
        return [head]
    rows = [["NODE / WORKER", "QUEUE", "LAST SEEN", "DONE", "FAILED", "RATE"]]
    for node in nodes:
        rows.append([node.node_id, "", "", "", "", ""])
        for w in node.workers:
            seen = f"{_age(w.seen_age_s)} ago" + (" (stale)" if w.stale else "")
            rate_text = f"{w.rate_per_s:.1f}/s" if w.rate_per_s is not None else "-"
            rows.append(
                [f"  {w.consumer}", w.queue or "-", seen, str(w.done), str(w.failed), rate_text]
            )
    return [head, *_table(rows)]


def status_text(status: ClusterStatus) -> str:
    """The status as aligned text tables."""
    lines = _queue_lines(status.queues)
    lines += ["", *_node_lines(status.nodes, status.gone_nodes, status.rate_per_s)]
    if status.locks:
        lines += ["", "run locks:"]
        lines += [
            f"  {lock.name}: held by {lock.holder}, expires in {_age(lock.ttl_s)}"
            for lock in status.locks
        ]
    return "\n".join(lines)


def dead_letter_json(letter: DeadLetter, items: Any = None) -> dict[str, Any]:
    """A dead letter as a JSON-ready dict (the payload's size, not its bytes)."""
    data: dict[str, Any] = {
        "id": letter.entry_id,
        "dead_at": _when(letter.dead_at),
        "reason": letter.reason,
        "run_id": letter.run_id,
        "original_id": letter.original_id,
        "deliveries": letter.deliveries,
        "payload_bytes": len(letter.blob) if letter.blob is not None else None,
        "raw": letter.raw,
    }
    if items is not None:
        data["items"] = items
    return data


def dead_letters_text(queue: str, total: int, letters: list[DeadLetter]) -> str:
    """A table of dead letters."""
    head = f"{total} dead letter(s) in queue {queue!r}"
    if not letters:
        return head
    if len(letters) < total:
        head += f" (showing the oldest {len(letters)})"
    rows = [["ID", "DEAD AT", "RUN", "DELIVERIES", "REASON"]]
    for d in letters:
        deliveries = str(d.deliveries) if d.deliveries is not None else "-"
        reason = d.reason if len(d.reason) <= 80 else d.reason[:77] + "..."
        rows.append([d.entry_id, _when(d.dead_at), d.run_id or "-", deliveries, reason])
    return "\n".join([head, *_table(rows)])


def dead_letter_text(letter: DeadLetter, items: Any) -> str:
    """One dead letter, field by field, with the work items of its payload."""
    data = dead_letter_json(letter)
    lines = [f"{key}: {'-' if value is None else value}" for key, value in data.items()]
    if isinstance(items, list):
        lines.append("items:")
        lines += [
            f"  task {i['task_id']!r} (seq {i['seq']}, attempt {i['attempt']})" for i in items
        ]
    elif items is not None:
        lines.append(f"items: {items}")
    return "\n".join(lines)
