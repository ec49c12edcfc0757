"""A reproducible chaos report for the process pool: random SIGKILLs under a 10,000-task run.

    python perf/chaos_report.py [--kills 50] [--seeds 1,2,3]
    python perf/chaos_report.py --redis [--repeat 3] [--only CASE]   (perf/chaos_report_redis.py)

For each seed: one calm run and one run under ``--kills`` SIGKILLs of random worker
processes (the workflow and the chaos thread of tests/chaos/test_mp_chaos.py: chains, wide
groups and a next_iteration cycle), then one line of counts: tasks in the run, kills
landed, worker deaths seen by the supervisor, tasks lost (completed in the calm run but not
in the killed one), results that differ, and whether the killed run's summary equals the
calm one. The test asserts the same outcome with 20 kills; this script is how the figures
in perf/RESULTS.md are regenerated. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's tests

import graflow
from tests.chaos import test_mp_chaos as chaos


def one_seed(seed: int, kills: int) -> str:
    wf = chaos._chaos_wf()
    with tempfile.TemporaryDirectory() as tmp:
        calm_dir, stormy_dir = Path(tmp, "calm"), Path(tmp, "stormy")
        calm_dir.mkdir()
        stormy_dir.mkdir()
        (calm_dir / "gate").touch()
        with graflow.Supervisor(2) as sup:
            calm = chaos._run(sup, wf, calm_dir)
        chaos.KILLS = kills
        started = time.perf_counter()
        with graflow.Supervisor(2) as sup, chaos._Chaos(sup, stormy_dir, seed=seed) as storm:
            stormy = chaos._run(sup, wf, stormy_dir)
        wall = time.perf_counter() - started
    calm_done, calm_results, calm_totals = chaos._summary(calm)
    done, results, totals = chaos._summary(stormy)
    lost = len(set(calm_done) - set(done))
    differ = sum(1 for k, v in calm_results.items() if results.get(k) != v)
    same = (done, results, totals) == (calm_done, calm_results, calm_totals)
    return (
        f"seed {seed}: {len(calm_done):,} tasks, {len(storm.killed)} kills landed, "
        f"{stormy.stats.worker_deaths} worker deaths, {lost} lost, {differ} results differ, "
        f"same outcome as calm: {same}, {wall:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--redis", action="store_true", help="the Redis failure cases instead (issue 14)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per Redis case")
    parser.add_argument("--only", help="only the Redis cases whose name contains this")
    args = parser.parse_args(argv)
    if args.redis:
        from perf.chaos_report_redis import report  # noqa: PLC0415 - needs redis-server only here

        report(args.repeat, args.only)
        return 0
    for seed in (int(s) for s in args.seeds.split(",")):
        print(one_seed(seed, args.kills), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
