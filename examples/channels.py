"""Channels: the key-value store that the tasks of one run share.

``setup >> (worker_0 | worker_1 | worker_2 | worker_3) >> report``, where:

* ``setup`` stores a short-lived API token (``set`` with ``ttl``), a stock level, and starts
  an audit log with ``prepend``;
* each worker counts 500 requests with ``atomic_add`` (the four branches run concurrently
  and the total is exact), reserves widgets with a read-modify-write guarded by
  ``lock``, sends a sensor reading through a typed channel (a ``TypedDict`` schema), and
  adds a line to the audit log with ``append``;
* ``report`` (which receives ``setup``'s result, the token it saw) waits for the token to
  expire and gathers everything.

Run: python examples/channels.py
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from graflow import TaskExecutionContext, task, workflow
from graflow.core.task import TaskWrapper

WORKERS = 4
REQUESTS_PER_WORKER = 500
RESERVATIONS_PER_WORKER = 25
STOCK = 80
TOKEN_TTL_S = 0.3


class Reading(TypedDict):
    """A sensor reading, as the typed channel accepts it."""

    sensor: str
    celsius: float
    ok: bool


def main() -> dict[str, Any]:
    """Run the channel tour; return what ``report`` gathered."""
    with workflow("channel_tour") as wf:

        @task(inject_context=True)
        def setup(ctx: TaskExecutionContext) -> str | None:
            channel = ctx.get_channel()
            channel.set("api_token", "tok-5f2a", ttl=TOKEN_TTL_S)
            channel.set("stock", {"widgets": STOCK})
            channel.append("audit_log", "setup: stock loaded")
            channel.prepend("audit_log", "audit log opened")
            token: str | None = channel.get("api_token")
            print(f"setup:  api_token={token!r} (ttl {TOKEN_TTL_S} s)")
            return token

        def worker(index: int) -> TaskWrapper:
            @task(id=f"worker_{index}", inject_context=True)
            def serve(ctx: TaskExecutionContext) -> int:
                channel = ctx.get_channel()
                for _ in range(REQUESTS_PER_WORKER):
                    channel.atomic_add("requests", 1)
                reserved = 0
                for _ in range(RESERVATIONS_PER_WORKER):
                    # get + set is two steps: without the lock two workers could both read
                    # the same level and one reservation would be lost.
                    with channel.lock("stock"):
                        stock = channel.get("stock")
                        if stock["widgets"] > 0:
                            stock["widgets"] -= 1
                            channel.set("stock", stock)
                            reserved += 1
                channel.atomic_add("reserved", reserved)
                readings = ctx.get_typed_channel(Reading)
                readings.set(
                    f"reading:{index}",
                    {"sensor": f"s{index}", "celsius": 20.5 + index, "ok": True},
                )
                channel.append("audit_log", f"worker_{index} done")
                return reserved

            return serve

        @task(inject_context=True)
        def report(ctx: TaskExecutionContext, setup: str | None) -> dict[str, Any]:
            channel = ctx.get_channel()
            readings = ctx.get_typed_channel(Reading)
            not_a_reading: Any = {"sensor": "s9", "celsius": "warm", "ok": True}
            try:
                readings.set("reading:bad", not_a_reading)
                rejected = None
            except TypeError as exc:
                rejected = str(exc)
            time.sleep(TOKEN_TTL_S + 0.05)  # let the token expire
            return {
                "requests": channel.get("requests"),
                "reserved": channel.get("reserved"),
                "stock_left": channel.get("stock")["widgets"],
                "readings": {
                    key: readings.get(key)
                    for key in sorted(channel.keys())
                    if key.startswith("reading:")
                },
                "rejected": rejected,
                "audit_log": channel.get("audit_log"),
                "token_before_expiry": setup,
                "token_after_expiry": channel.get("api_token", "<expired>"),
            }

        setup >> (worker(0) | worker(1) | worker(2) | worker(3)) >> report
        result: dict[str, Any] = wf.execute("setup")
    return result


if __name__ == "__main__":
    out = main()
    expected = WORKERS * REQUESTS_PER_WORKER
    print(f"atomic_add: requests = {out['requests']} (expected {expected})")
    print(f"lock:       reserved = {out['reserved']}, stock left = {out['stock_left']}")
    print(
        f"typed:      {len(out['readings'])} readings stored, invalid one rejected: "
        f"{out['rejected']}"
    )
    for key, reading in out["readings"].items():
        print(f"            {key} = {reading}")
    log = out["audit_log"]
    print(f"append:     audit_log has {len(log)} entries, first {log[0]!r}")
    for line in sorted(log[1:]):
        print(f"            {line}")
    print(
        f"ttl:        api_token = {out['token_before_expiry']!r} before, "
        f"{out['token_after_expiry']!r} after {TOKEN_TTL_S} s"
    )
