"""A run's channel snapshot on a Redis shared with many other keys: graflow against a SCAN.

    python perf/bench_redis_snapshot.py [--others 1000000] [--keys 100] [--repeat 5]

Starts its own redis-server on a free port, fills it with ``--others`` keys that belong to
nobody's run (an application sharing the database), then times, in the same run:

- graflow: ``RedisChannel.snapshot()`` of a run with ``--keys`` channel keys (what every run
  does at its end to build ``RunResult.channel``), which reads the run's key index;
- baseline: listing the same run's keys with ``SCAN MATCH`` over the keyspace (COUNT 10,000),
  without even reading their values: what a SCAN-based channel pays before its first read.

Prints medians and the ratio. Nothing here asserts: figures go to perf/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import redis
from bench_redis import start_server  # perf/ is this script's directory

from graflow.redis import keys
from graflow.redis.channel import RedisChannel
from graflow.redis.signing import Signer


def _median_ms(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    server, url = start_server()
    client = redis.Redis.from_url(url)
    try:
        for start in range(0, args.others, 10_000):
            stop = min(args.others, start + 10_000)
            client.mset({f"app:{i}": i for i in range(start, stop)})
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        channel = RedisChannel(run_id, url=url, signer=Signer(b"bench secret, 32 bytes long...."))
        channel.update({f"k{i}": i for i in range(args.keys)})
        assert len(channel.snapshot()) == args.keys
        pattern = keys.channel(run_id, "*")

        def scan() -> None:
            found = list(client.scan_iter(match=pattern, count=10_000))
            assert len(found) == args.keys

        ours = _median_ms(args.repeat, channel.snapshot)
        base = _median_ms(args.repeat, scan)
        print(f"{args.keys} channel keys beside {args.others:,} others, median of {args.repeat}")
        print(f"graflow snapshot (keys and values)  {ours:10.1f} ms")
        print(f"SCAN MATCH (key names only)         {base:10.1f} ms   (graflow x{base / ours:.0f})")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
