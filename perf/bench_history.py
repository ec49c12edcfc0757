"""What recording the run history costs: W1 of bench_mp.py with and without it, interleaved.

    python perf/bench_history.py [--processes 2] [--repeat 15] [--tasks 10000]

One Supervisor serves every run; runs alternate between ``history="off"`` and a SQLite file
in a temporary directory, so both see the same machine load. Prints the median tasks/s of
each and their ratio (and the time until the last record is written, which happens after
the run returned, in the writer thread). Nothing here asserts: figures go to RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import graflow
from graflow.core.task import ParallelGroup, TaskWrapper
from graflow.core.workflow import workflow
from graflow.history.store import SqliteHistory


def noop() -> None:
    return None


def w1(sup: graflow.Supervisor, n: int, history: str) -> tuple[float, str]:
    with workflow("w1") as wf:
        group = ParallelGroup([TaskWrapper(f"t{i}", noop) for i in range(n)], name="g")
    start = time.perf_counter()
    result = sup.run(wf, start=group.task_id, history=history)
    return n / (time.perf_counter() - start), result.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, graflow.Supervisor(args.processes) as sup:
        path = str(Path(tmp) / "history.db")
        store = SqliteHistory(path)
        w1(sup, args.tasks, "off")  # warm up the workers
        w1(sup, args.tasks, path)
        off: list[float] = []
        on: list[float] = []
        lag: list[float] = []
        for _ in range(args.repeat):
            off.append(w1(sup, args.tasks, "off")[0])
            rate, run_id = w1(sup, args.tasks, path)
            on.append(rate)
            returned = time.time()
            while True:
                detail = store.get_run(run_id)
                if detail is not None and detail.run.status != "running":
                    break
                time.sleep(0.005)
            lag.append(time.time() - returned)
        med_off, med_on = statistics.median(off), statistics.median(on)
        print(f"W1 {args.tasks} tasks, {args.processes} processes, {args.repeat} pairs")
        print(f"  history off: {med_off:,.0f} tasks/s (range {min(off):,.0f}-{max(off):,.0f})")
        print(f"  history on:  {med_on:,.0f} tasks/s (range {min(on):,.0f}-{max(on):,.0f})")
        print(f"  on/off: {med_on / med_off:.3f}")
        print(f"  record complete {statistics.median(lag) * 1000:.0f} ms after the run returned")


if __name__ == "__main__":
    main()
