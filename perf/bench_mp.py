"""Benchmarks of the process-pool engine against the standard library, in one invocation.

    python perf/bench_mp.py [--processes 2] [--repeat 3] [--json out.json] [--only W1,W3]

Workloads (each also run with concurrent.futures.ProcessPoolExecutor and
multiprocessing.Pool on the same machine, same number of processes, in this run):
  W1 throughput  a parallel group of 10,000 no-op tasks              tasks/s
  W2 scaling     8 pure-Python tasks of ~0.5 s: speedup vs 1 process  x
  W3 latency     a chain of 1,000 dependent no-op tasks               us/hop
  W3P data chain a chain of 1,000 tasks, each given its predecessor's  us/hop
                 result by parameter name (x + 1)
  W4 payload     task A returns 100 MB, task B receives it            s
  W4A array      the same with a 100 MB numpy array that B sums       s
  M  memory      1,000,000 no-op tasks through one pool               worker RSS growth MB
Medians of --repeat runs. Nothing here asserts: figures go to perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

import graflow
from graflow.core.task import ParallelGroup, TaskWrapper, chain
from graflow.core.workflow import workflow


def noop() -> None:
    return None


def noop_arg(_: Any) -> None:
    return None


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def make_payload(size: int) -> bytes:
    return b"x" * size


def take_len(data: bytes) -> int:
    return len(data)


def make_array(size: int) -> Any:
    return np.ones(size // 8, dtype=np.float64)


def take_sum(data: Any) -> float:
    return float(data.sum())


def median_of(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


def calibrate_burn(target_s: float) -> int:
    n = 200_000
    while True:
        start = time.perf_counter()
        burn(n)
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            return int(n * target_s / elapsed)
        n *= 2


# -- W1 ---------------------------------------------------------------------------------
def w1_graflow(sup: graflow.Supervisor, n: int) -> float:
    with workflow("w1") as wf:
        group = ParallelGroup([TaskWrapper(f"t{i}", noop) for i in range(n)], name="g")
    start = time.perf_counter()
    sup.run(wf, start=group.task_id)
    return n / (time.perf_counter() - start)


def w1_ppe(ex: cf.ProcessPoolExecutor, n: int) -> float:
    start = time.perf_counter()
    futures = [ex.submit(noop) for _ in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - start)


def w1_pool(pool: Any, n: int) -> float:
    start = time.perf_counter()
    pool.map(noop_arg, range(n), chunksize=1)
    return n / (time.perf_counter() - start)


# -- W2 ---------------------------------------------------------------------------------
def w2_graflow(processes: int, work: int) -> float:
    with workflow("w2") as wf:
        members = [TaskWrapper(f"b{i}", lambda w=work: burn(w)) for i in range(8)]
        group = ParallelGroup(members, name="burners")
    with graflow.Supervisor(processes) as sup:
        sup.run(wf, start=group.task_id)  # warm: fork + first run
        start = time.perf_counter()
        sup.run(wf, start=group.task_id)
        return time.perf_counter() - start


def w2_ppe(processes: int, work: int) -> float:
    with cf.ProcessPoolExecutor(processes) as ex:
        list(ex.map(burn, [1000] * processes))
        start = time.perf_counter()
        list(ex.map(burn, [work] * 8))
        return time.perf_counter() - start


# -- W3 ---------------------------------------------------------------------------------
def w3_graflow(sup: graflow.Supervisor, hops: int) -> float:
    with workflow("w3") as wf:
        chain(*[TaskWrapper(f"h{i}", noop) for i in range(hops)])
    start = time.perf_counter()
    sup.run(wf, start="h0")
    return (time.perf_counter() - start) / hops * 1e6


def w3_ppe(ex: cf.ProcessPoolExecutor, hops: int) -> float:
    start = time.perf_counter()
    for _ in range(hops):
        ex.submit(noop).result()
    return (time.perf_counter() - start) / hops * 1e6


def increment(x: int) -> int:
    return x + 1


def _takes(previous: str | None) -> Any:
    """A task function whose one parameter is named after its predecessor (the DSL's way of
    passing a result on); the first takes nothing."""
    if previous is None:
        return lambda: 0
    # A module name, as a function written in a file has (without, cloudpickle searches
    # every module for it).
    namespace: dict[str, Any] = {"increment": increment, "__name__": __name__}
    exec(f"def step({previous}):\n    return increment({previous})\n", namespace)
    return namespace["step"]


def w3p_graflow(sup: graflow.Supervisor, hops: int) -> float:
    with workflow("w3p") as wf:
        ids = [f"d{i}" for i in range(hops)]
        chain(*[TaskWrapper(t, _takes(ids[i - 1] if i else None)) for i, t in enumerate(ids)])
    start = time.perf_counter()
    result = sup.run(wf, start="d0")
    elapsed = time.perf_counter() - start
    assert result.value == hops - 1
    return elapsed / hops * 1e6


def w3p_ppe(ex: cf.ProcessPoolExecutor, hops: int) -> float:
    start = time.perf_counter()
    value = 0
    for _ in range(hops - 1):
        value = ex.submit(increment, value).result()
    elapsed = time.perf_counter() - start
    assert value == hops - 1
    return elapsed / hops * 1e6


def w3_pool(pool: Any, hops: int) -> float:
    start = time.perf_counter()
    for _ in range(hops):
        pool.apply(noop)
    return (time.perf_counter() - start) / hops * 1e6


# -- W4 ---------------------------------------------------------------------------------
def w4_graflow(sup: graflow.Supervisor, size: int, make: Any = None, take: Any = None) -> float:
    """A makes ``size`` bytes (``make``, default bytes), B gets them (``take``, default len)."""
    make, take = make or make_payload, take or take_len
    with workflow("w4") as wf:
        a = TaskWrapper("a", lambda: make(size))
        b = TaskWrapper("b", lambda a: take(a))
        a >> b
    start = time.perf_counter()
    result = sup.run(wf, start="a")
    elapsed = time.perf_counter() - start
    assert result.value == take(make(size))
    return elapsed


def w4_ppe(ex: cf.ProcessPoolExecutor, size: int, make: Any = None, take: Any = None) -> float:
    make, take = make or make_payload, take or take_len
    start = time.perf_counter()
    data = ex.submit(make, size).result()
    n = ex.submit(take, data).result()
    elapsed = time.perf_counter() - start
    assert n == take(make(size))
    return elapsed


# -- memory -----------------------------------------------------------------------------
def memory_growth(sup: graflow.Supervisor, total: int, per_run: int) -> float:
    with workflow("mem") as wf:
        group = ParallelGroup([TaskWrapper(f"m{i}", noop) for i in range(per_run)], name="g")
    sup.run(wf, start=group.task_id)

    def rss() -> int:
        return sum(psutil.Process(pid).memory_info().rss for pid in sup.worker_pids)

    before = rss()
    for _ in range(total // per_run):
        sup.run(wf, start=group.task_id)
    return (rss() - before) / (1024 * 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="W1,W2,W3,W3P,W4,W4A,M")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--memory-tasks", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    only = {w.strip().upper() for w in args.only.split(",")}
    procs, rep = args.processes, args.repeat
    ctx = mp.get_context("fork")
    out: dict[str, Any] = {"processes": procs, "repeat": rep, "cpus": os.cpu_count()}
    rows: list[tuple[str, str, str, str]] = []

    with (
        graflow.Supervisor(procs) as sup,
        cf.ProcessPoolExecutor(procs, mp_context=ctx) as ex,
        ctx.Pool(procs) as pool,
    ):
        w1_graflow(sup, 1000)
        list(ex.map(noop_arg, range(100)))
        if "W1" in only:
            g = median_of(rep, lambda: w1_graflow(sup, 10_000))
            p = median_of(rep, lambda: w1_ppe(ex, 10_000))
            m = median_of(rep, lambda: w1_pool(pool, 10_000))
            out["W1"] = {"graflow_tps": g, "ppe_tps": p, "pool_tps": m}
            rows.append(
                ("W1 tasks/s", f"{g:,.0f}", f"{p:,.0f} (x{g / p:.2f})", f"{m:,.0f} (x{g / m:.2f})")
            )
        if "W3" in only:
            g = median_of(rep, lambda: w3_graflow(sup, 1000))
            p = median_of(rep, lambda: w3_ppe(ex, 1000))
            m = median_of(rep, lambda: w3_pool(pool, 1000))
            out["W3"] = {"graflow_us": g, "ppe_us": p, "pool_us": m}
            rows.append(
                ("W3 us/hop", f"{g:.1f}", f"{p:.1f} (x{p / g:.2f})", f"{m:.1f} (x{m / g:.2f})")
            )
        if "W3P" in only:
            g = median_of(rep, lambda: w3p_graflow(sup, 1000))
            p = median_of(rep, lambda: w3p_ppe(ex, 1000))
            out["W3P"] = {"graflow_us": g, "ppe_us": p}
            rows.append(("W3P us/hop, result passed", f"{g:.1f}", f"{p:.1f} (x{p / g:.2f})", "-"))
        if "W4" in only:
            size = 100 * 1024 * 1024
            g = median_of(rep, lambda: w4_graflow(sup, size))
            p = median_of(rep, lambda: w4_ppe(ex, size))
            out["W4"] = {"graflow_s": g, "ppe_s": p}
            rows.append(("W4 100 MB A->B s", f"{g:.3f}", f"{p:.3f} (x{p / g:.2f})", "-"))
        if "W4A" in only:
            size = 100 * 1024 * 1024
            g = median_of(rep, lambda: w4_graflow(sup, size, make_array, take_sum))
            p = median_of(rep, lambda: w4_ppe(ex, size, make_array, take_sum))
            out["W4A"] = {"graflow_s": g, "ppe_s": p}
            rows.append(("W4A 100 MB array A->B s", f"{g:.3f}", f"{p:.3f} (x{p / g:.2f})", "-"))
        if "M" in only:
            growth = memory_growth(sup, args.memory_tasks, 10_000)
            out["memory_growth_mb"] = growth
            rows.append(
                (f"M RSS growth, {args.memory_tasks:,} tasks", f"{growth:.1f} MB", "-", "-")
            )
    if "W2" in only:
        work = calibrate_burn(0.5)
        g1 = median_of(rep, lambda: w2_graflow(1, work))
        gn = median_of(rep, lambda: w2_graflow(procs, work))
        p1 = median_of(rep, lambda: w2_ppe(1, work))
        pn = median_of(rep, lambda: w2_ppe(procs, work))
        out["W2"] = {"graflow_1": g1, "graflow_n": gn, "ppe_1": p1, "ppe_n": pn}
        rows.append(("W2 speedup 8x0.5s", f"x{g1 / gn:.2f}", f"x{p1 / pn:.2f}", "-"))

    print(f"graflow mp benchmarks: {procs} processes, median of {rep}, {os.cpu_count()} CPUs")
    print(f"{'workload':<34}{'graflow':>16}{'ProcessPoolExecutor':>26}{'mp.Pool':>22}")
    for name, g, p, m in rows:
        print(f"{name:<34}{g:>16}{p:>26}{m:>22}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
