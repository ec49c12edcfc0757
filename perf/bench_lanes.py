"""Benchmarks of the io and async lanes, against the standard library, in one invocation.

    python perf/bench_lanes.py [--processes 2] [--threads 16] [--repeat 3] [--only W5,W6,W7]
                               [--redis] [--json out.json]

Workloads (baselines run in the same invocation, on the same machine):
  W5 io      400 @task(io=True) tasks that each time.sleep(0.2)           s
             baselines: ThreadPoolExecutor(processes x threads), ProcessPoolExecutor(processes)
  W6 async   2,000 async tasks that each await asyncio.sleep(0.2)         s
             baseline: asyncio.gather of the same coroutines in one process
  W7 mixed   4 CPU tasks of ~0.5 s beside 100 io tasks of 0.2 s           s
             baseline: the 4 CPU tasks alone on the same pool
With --redis, W5 and W6 also run on one `graflow supervisor` node of --processes worker
processes (its own redis-server on a free port). Medians of --repeat runs; nothing here
asserts: figures go to perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import graflow
from graflow.core.task import ParallelGroup, TaskWrapper
from graflow.core.workflow import workflow

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_redis import start_server

IO_TASKS = 400
ASYNC_TASKS = 2000
SLEEP_S = 0.2


def wait_io() -> int:
    time.sleep(SLEEP_S)
    return 1


async def wait_async() -> int:
    await asyncio.sleep(SLEEP_S)
    return 1


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate_burn(target_s: float) -> int:
    n = 200_000
    while True:
        start = time.perf_counter()
        burn(n)
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            return int(n * target_s / elapsed)
        n *= 2


def _median(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def io_workflow() -> Any:
    with workflow("w5") as wf:
        members = [TaskWrapper(f"io{i}", wait_io, io=True) for i in range(IO_TASKS)]
        ParallelGroup(members, name="g")
    return wf


def async_workflow() -> Any:
    with workflow("w6") as wf:
        ParallelGroup([TaskWrapper(f"a{i}", wait_async) for i in range(ASYNC_TASKS)], name="g")
    return wf


def mixed_workflow(n: int, with_io: bool) -> Any:
    with workflow("w7") as wf:
        members = [TaskWrapper(f"cpu{i}", lambda n=n: burn(n)) for i in range(4)]
        if with_io:
            members += [TaskWrapper(f"io{i}", wait_io, io=True) for i in range(100)]
        ParallelGroup(members, name="g")
    return wf


def baseline_threads(workers: int) -> float:
    with cf.ThreadPoolExecutor(workers) as pool:
        return _timed(lambda: list(pool.map(lambda _: wait_io(), range(IO_TASKS))))


def baseline_processes(processes: int) -> float:
    with cf.ProcessPoolExecutor(processes) as pool:
        list(pool.map(burn, [1] * processes))  # started before the clock
        return _timed(lambda: list(pool.map(_sleep_arg, range(IO_TASKS), chunksize=8)))


def _sleep_arg(_: int) -> int:
    return wait_io()


def baseline_gather() -> float:
    async def main() -> None:
        await asyncio.gather(*(wait_async() for _ in range(ASYNC_TASKS)))

    return _timed(lambda: asyncio.run(main()))


def pool_figures(args: argparse.Namespace, only: set[str], out: dict[str, Any]) -> None:
    rep = args.repeat
    with graflow.Supervisor(args.processes, threads=args.threads) as sup:
        sup.run(mixed_workflow(1000, with_io=True), start="g")  # warm up
        if "W5" in only:
            g5 = _median(rep, lambda: _timed(lambda: sup.run(io_workflow(), start="g")))
            t5 = _median(rep, lambda: baseline_threads(args.processes * args.threads))
            p5 = _median(1, lambda: baseline_processes(args.processes))  # 40 s: once
            out.update(w5_s=g5, w5_threads_s=t5, w5_processes_s=p5)
            print(
                f"W5 {IO_TASKS} io tasks x {SLEEP_S} s   graflow {g5:6.2f} s   "
                f"ThreadPoolExecutor({args.processes * args.threads}) {t5:6.2f} s   "
                f"ProcessPoolExecutor({args.processes}) {p5:6.2f} s"
            )
        if "W6" in only:
            g6 = _median(rep, lambda: _timed(lambda: sup.run(async_workflow(), start="g")))
            b6 = _median(rep, baseline_gather)
            out.update(w6_s=g6, w6_gather_s=b6)
            print(
                f"W6 {ASYNC_TASKS} async tasks x {SLEEP_S} s graflow {g6:6.2f} s   "
                f"asyncio.gather in one process {b6:6.2f} s"
            )
        if "W7" in only:
            n = calibrate_burn(0.5)
            alone = _median(
                rep, lambda: _timed(lambda: sup.run(mixed_workflow(n, False), start="g"))
            )
            mixed = _median(
                rep, lambda: _timed(lambda: sup.run(mixed_workflow(n, True), start="g"))
            )
            out.update(w7_s=mixed, w7_cpu_alone_s=alone)
            print(
                f"W7 4 CPU x 0.5 s + 100 io   graflow {mixed:6.2f} s   "
                f"the 4 CPU tasks alone {alone:6.2f} s   (x{mixed / alone:.2f})"
            )


def redis_figures(args: argparse.Namespace, only: set[str], out: dict[str, Any]) -> None:
    server, url = start_server()
    node = subprocess.Popen(
        [sys.executable, "-m", "graflow", "supervisor", "--redis", url,
         "--processes", str(args.processes), "--threads", str(args.threads)],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    rep = args.repeat
    try:
        time.sleep(1.0)
        graflow.run(mixed_workflow(1000, with_io=True), start="g", redis=url)  # warm up
        if "W5" in only:
            r5 = _median(
                rep, lambda: _timed(lambda: graflow.run(io_workflow(), start="g", redis=url))
            )
            out.update(w5_redis_s=r5)
            print(f"W5 on one Redis node         graflow {r5:6.2f} s")
        if "W6" in only:
            r6 = _median(
                rep, lambda: _timed(lambda: graflow.run(async_workflow(), start="g", redis=url))
            )
            out.update(w6_redis_s=r6)
            print(f"W6 on one Redis node         graflow {r6:6.2f} s")
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(30)
        server.terminate()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="W5,W6,W7", help="comma-separated workloads")
    parser.add_argument("--redis", action="store_true", help="also W5/W6 on a Redis node")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    only = {name.strip().upper() for name in args.only.split(",")}
    out: dict[str, Any] = {
        "processes": args.processes,
        "threads": args.threads,
        "repeat": args.repeat,
    }
    sizes = f"{args.processes} processes x {args.threads} threads"
    print(f"graflow lanes: {sizes}, median of {args.repeat}")
    pool_figures(args, only, out)
    if args.redis:
        redis_figures(args, only, out)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
