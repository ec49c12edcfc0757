"""Fan-out / fan-in: fetch >> (traffic | errors | latency) >> report.

``fetch`` loads an access log once; the three members of the parallel group each read it
through a parameter named ``fetch`` and compute one statistic concurrently; ``report`` runs
once, after all three, and receives their results through parameters named after them.

Run: python examples/fan_out_fan_in.py
"""

from __future__ import annotations

import random
import statistics
import sys
from collections import Counter
from typing import Any

from graflow import task, workflow

Request = tuple[str, int, float]  # (path, HTTP status, latency in ms)

PATHS = ["/", "/search", "/cart", "/checkout", "/api/items"]


def access_log(size: int = 400, seed: int = 7) -> list[Request]:
    """A deterministic synthetic access log."""
    rng = random.Random(seed)
    log = []
    for _ in range(size):
        path = rng.choices(PATHS, weights=[8, 5, 3, 1, 6])[0]
        status = 500 if rng.random() < 0.04 else (404 if rng.random() < 0.03 else 200)
        latency = round(rng.lognormvariate(3.2, 0.5) * (3 if path == "/checkout" else 1), 1)
        log.append((path, status, latency))
    return log


def say(line: str) -> None:
    """Print one line in a single write, so that lines from parallel members never mix."""
    sys.stdout.write(line + "\n")


def main() -> dict[str, Any]:
    """Run the fan-out/fan-in workflow; return the combined report."""
    with workflow("access_log_report") as wf:

        @task
        def fetch() -> list[Request]:
            log = access_log()
            say(f"fetch:   {len(log)} requests loaded")
            return log

        @task
        def traffic(fetch: list[Request]) -> dict[str, int]:
            counts = dict(Counter(path for path, _, _ in fetch).most_common())
            say(f"traffic: {len(counts)} paths counted")
            return counts

        @task
        def errors(fetch: list[Request]) -> dict[str, Any]:
            failed = [status for _, status, _ in fetch if status >= 500]
            not_found = [status for _, status, _ in fetch if status == 404]
            say(f"errors:  {len(failed)} server errors, {len(not_found)} not found")
            return {
                "server_errors": len(failed),
                "not_found": len(not_found),
                "error_rate": round(len(failed) / len(fetch), 4),
            }

        @task
        def latency(fetch: list[Request]) -> dict[str, float]:
            values = sorted(ms for _, _, ms in fetch)
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            say(f"latency: {len(values)} samples")
            return {"p50_ms": round(cuts[49], 1), "p95_ms": round(cuts[94], 1)}

        @task
        def report(
            traffic: dict[str, int], errors: dict[str, Any], latency: dict[str, float]
        ) -> dict[str, Any]:
            say("report:  combining 3 partial results")
            return {
                "requests": sum(traffic.values()),
                "top_path": next(iter(traffic)),
                "traffic": traffic,
                **errors,
                **latency,
            }

        fetch >> (traffic | errors | latency) >> report
        # The group's members have no predecessor of their own: name the start node.
        result: dict[str, Any] = wf.execute("fetch")
    return result


if __name__ == "__main__":
    summary = main()
    print(f"Requests: {summary['requests']}  top path: {summary['top_path']}")
    print("Traffic:  " + ", ".join(f"{p} {n}" for p, n in summary["traffic"].items()))
    print(
        f"Errors:   {summary['server_errors']} server errors "
        f"(rate {summary['error_rate']:.2%}), {summary['not_found']} not found"
    )
    print(f"Latency:  p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms")
