"""In-process engine overhead: what graflow costs per task, against plain Python.

Two measurements, each the median of ``--runs`` runs (at least 5), both sides timed in the
same process one after the other:

* chain: 1,000 no-op tasks ``t0 >> t1 >> ... >> t999`` run with ``wf.execute()``, in
  microseconds per hop, against a plain loop making 1,000 calls of a no-op function;
* group: one parallel group of 10,000 no-op tasks run with ``wf.execute()``, in tasks per
  second, against ``concurrent.futures.ThreadPoolExecutor.map`` over 10,000 no-op calls
  (executor start and shutdown included, as the engine's thread start is).

Building the graphs is not timed. No assertions: this prints figures (and writes them as
JSON with ``--json PATH``); see perf/README.md.

Run: python perf/bench_core.py [--runs 7] [--json perf/core.json]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from graflow.core.task import Executable, ParallelGroup, TaskWrapper
from graflow.core.workflow import WorkflowContext, workflow

CHAIN_LENGTH = 1_000
GROUP_SIZE = 10_000


def noop() -> None:
    """The task body and the baseline call: does nothing."""


def noop_item(_: int) -> None:
    """The baseline call for ``ThreadPoolExecutor.map``."""


def build_chain(length: int) -> WorkflowContext:
    """A workflow ``t0 >> t1 >> ... >> t<length-1>`` of no-op tasks."""
    with workflow("bench_chain") as wf:
        tasks = [TaskWrapper(f"t{i}", noop) for i in range(length)]
        for left, right in itertools.pairwise(tasks):
            left >> right
    return wf


def build_group(size: int) -> WorkflowContext:
    """A workflow holding one parallel group of ``size`` no-op tasks."""
    with workflow("bench_group") as wf:
        tasks: list[Executable] = [TaskWrapper(f"m{i}", noop) for i in range(size)]
        ParallelGroup(tasks, name="fan_out")
    return wf


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (after a full garbage collection)."""
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def plain_loop(calls: int) -> None:
    """The chain's baseline: ``calls`` plain function calls."""
    for _ in range(calls):
        noop()


def thread_pool_map(calls: int) -> None:
    """The group's baseline: ``calls`` no-op calls mapped over a default thread pool."""
    with ThreadPoolExecutor() as pool:
        for _ in pool.map(noop_item, range(calls)):
            pass


def bench_chain(runs: int) -> dict[str, Any]:
    """Median cost of one hop of a 1,000-task chain, and of one plain call."""
    wf = build_chain(CHAIN_LENGTH)
    wf.execute("t0")  # warm-up: first-run imports and caches
    engine_s: list[float] = []
    loop_s: list[float] = []
    for _ in range(runs):
        engine_s.append(timed(lambda: wf.execute("t0")))
        loop_s.append(timed(lambda: plain_loop(CHAIN_LENGTH)))
    hop_us = statistics.median(engine_s) / CHAIN_LENGTH * 1e6
    call_us = statistics.median(loop_s) / CHAIN_LENGTH * 1e6
    return {
        "tasks": CHAIN_LENGTH,
        "engine_us_per_hop": round(hop_us, 3),
        "plain_call_us": round(call_us, 4),
        "ratio": round(hop_us / call_us, 1),
        "engine_runs_s": [round(s, 6) for s in engine_s],
        "plain_runs_s": [round(s, 7) for s in loop_s],
    }


def bench_group(runs: int) -> dict[str, Any]:
    """Median throughput of a 10,000-member group, and of a thread pool's map."""
    wf = build_group(GROUP_SIZE)
    wf.execute("fan_out")
    engine_s: list[float] = []
    pool_s: list[float] = []
    for _ in range(runs):
        engine_s.append(timed(lambda: wf.execute("fan_out")))
        pool_s.append(timed(lambda: thread_pool_map(GROUP_SIZE)))
    engine_rate = GROUP_SIZE / statistics.median(engine_s)
    pool_rate = GROUP_SIZE / statistics.median(pool_s)
    return {
        "tasks": GROUP_SIZE,
        "engine_tasks_per_s": round(engine_rate),
        "thread_pool_calls_per_s": round(pool_rate),
        "ratio": round(engine_rate / pool_rate, 3),
        "engine_runs_s": [round(s, 4) for s in engine_s],
        "thread_pool_runs_s": [round(s, 4) for s in pool_s],
    }


def print_table(report: dict[str, Any]) -> None:
    """The figures as a small table."""
    chain = report["chain"]
    group = report["group"]
    print(
        f"graflow core, in-process: median of {report['runs']} runs, "
        f"Python {report['python']}, {report['cpus']} CPUs"
    )
    rows = [
        ("benchmark", "graflow", "baseline", "ratio"),
        (
            f"chain of {chain['tasks']:,} no-op tasks",
            f"{chain['engine_us_per_hop']:.2f} us/hop",
            f"{chain['plain_call_us']:.3f} us/call (loop)",
            f"{chain['ratio']:.0f}x the call's cost",
        ),
        (
            f"group of {group['tasks']:,} no-op tasks",
            f"{group['engine_tasks_per_s']:,} tasks/s",
            f"{group['thread_pool_calls_per_s']:,} calls/s (pool)",
            f"{group['ratio']:.2f}x the pool's rate",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both benchmarks; print them and optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (>= 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "chain": bench_chain(args.runs),
        "group": bench_group(args.runs),
    }
    print_table(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
