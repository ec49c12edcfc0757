"""Shared-memory transport against plain pickle, for one 100 MB value.

For a 100 MB ``bytes`` value and a 100 MB numpy array, prints the median seconds over
``--runs`` runs of ``graflow.mp.shm`` encode, decode and both, and of ``pickle.dumps``,
``pickle.loads`` and both (protocol 5, in band), all in this one process. Also printed: one
fresh copy of 100 MB (``bytes(memoryview(x))``), the floor for any decode that must return
``bytes``, and, for the array, decode followed by reading one byte per page, since a mapped
array faults its pages in on first use. No pipe is involved and nothing is asserted.

Run: python perf/bench_shm.py [--runs 7]
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from graflow.mp import shm

SIZE_BYTES = 100 * 1024 * 1024
PAGE_BYTES = 4096


def median_s(
    step: Callable[[Any], Any], runs: int, prepare: Callable[[], Any] = lambda: None
) -> float:
    """Median seconds of ``step(prepare())`` over ``runs`` runs, after one warm-up run.

    Neither ``prepare`` nor freeing what ``step`` returns is timed; a result whose refs were
    never decoded is released untimed.
    """
    times = []
    for run in range(runs + 1):
        gc.collect()
        arg = prepare()
        start = time.perf_counter()
        result = step(arg)
        elapsed = time.perf_counter() - start
        if run:
            times.append(elapsed)
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
            shm.release(result[1])
        del arg, result
    return statistics.median(times)


def bench_value(label: str, value: Any, runs: int) -> None:
    """Print the shm and pickle figures for one value."""
    rows = [
        ("shm encode", median_s(lambda _: shm.encode(value), runs)),
        ("shm decode", median_s(lambda e: shm.decode(*e), runs, lambda: shm.encode(value))),
        ("shm encode+decode", median_s(lambda _: shm.decode(*shm.encode(value)), runs)),
        ("pickle dumps", median_s(lambda _: pickle.dumps(value, protocol=5), runs)),
        (
            "pickle loads",
            median_s(pickle.loads, runs, lambda: pickle.dumps(value, protocol=5)),
        ),
        (
            "pickle dumps+loads",
            median_s(lambda _: pickle.loads(pickle.dumps(value, protocol=5)), runs),
        ),
    ]
    if isinstance(value, np.ndarray):
        step = PAGE_BYTES // value.itemsize
        rows.append(
            (
                "shm decode+touch pages",
                median_s(lambda e: shm.decode(*e)[::step].sum(), runs, lambda: shm.encode(value)),
            )
        )
    else:
        rows.append(("one fresh 100 MB copy", median_s(lambda _: bytes(memoryview(value)), runs)))
    print(f"{label}:")
    for name, seconds in rows:
        print(f"  {name:<24} {seconds:8.4f} s")


def main() -> None:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (>= 1)")
    args = parser.parse_args()
    runs = max(args.runs, 1)
    print(f"median of {runs} runs, {SIZE_BYTES // (1024 * 1024)} MiB values, pid {os.getpid()}")
    bench_value("bytes", os.urandom(SIZE_BYTES), runs)
    bench_value("numpy float64", np.random.default_rng(0).random(SIZE_BYTES // 8), runs)


if __name__ == "__main__":
    main()
