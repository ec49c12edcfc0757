"""Benchmarks of graflow on Redis (loopback), against a bare redis-py loop in the same run.

    python perf/bench_redis.py [--processes 2] [--repeat 3] [--only W1,W3,W4] [--json out.json]

Starts its own redis-server on a free port and one `graflow supervisor` node with
--processes worker processes. Baseline: a bare redis-py producer/consumer pair moving
the same number of messages with one LPUSH and one BRPOP each (for W3, one round trip
per hop: LPUSH a request, BRPOP the reply; for W4, one plain redis-py SET and one GET of
the same 100 MB), in the same invocation.
  W1  10,000 no-op tasks in one parallel group       tasks/s
  W3  a chain of 1,000 dependent no-op tasks          us/hop
  W4  task A returns 100 MB, task B receives it       s
Medians of --repeat runs; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

import graflow
from graflow.core.task import ParallelGroup, TaskWrapper, chain
from graflow.core.workflow import workflow


def noop() -> None:
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """A fresh redis-server on a free loopback port (stop it with ``terminate``), its URL."""
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="graflow-bench-")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return server, url


def _median(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _echo_consumer(url: str, n: int, reply: bool) -> None:
    client = redis.Redis.from_url(url)
    for _ in range(n):
        _, msg = client.brpop(["bench:req"])
        if reply:
            client.lpush("bench:rep", msg)


def baseline_throughput(url: str, n: int, consumers: int) -> float:
    client = redis.Redis.from_url(url)
    ctx = mp.get_context("fork")
    per = n // consumers
    procs = [ctx.Process(target=_echo_consumer, args=(url, per, False)) for _ in range(consumers)]
    for proc in procs:
        proc.start()
    start = time.perf_counter()
    for i in range(per * consumers):
        client.lpush("bench:req", i)
    for proc in procs:
        proc.join()
    return per * consumers / (time.perf_counter() - start)


def baseline_latency(url: str, hops: int) -> float:
    client = redis.Redis.from_url(url)
    proc = mp.get_context("fork").Process(target=_echo_consumer, args=(url, hops, True))
    proc.start()
    start = time.perf_counter()
    for i in range(hops):
        client.lpush("bench:req", i)
        client.brpop(["bench:rep"])
    elapsed = time.perf_counter() - start
    proc.join()
    return elapsed / hops * 1e6


def baseline_transfer(url: str, size: int) -> float:
    client = redis.Redis.from_url(url)
    value = b"x" * size
    start = time.perf_counter()
    client.set("bench:value", value)
    received = client.get("bench:value")
    elapsed = time.perf_counter() - start
    assert received is not None and len(received) == size
    client.delete("bench:value")
    return elapsed


def w1(url: str, n: int) -> float:
    with workflow("w1") as wf:
        ParallelGroup([TaskWrapper(f"t{i}", noop) for i in range(n)], name="g")
    start = time.perf_counter()
    graflow.run(wf, start="g", redis=url)
    return n / (time.perf_counter() - start)


def w3(url: str, hops: int) -> float:
    with workflow("w3") as wf:
        chain(*[TaskWrapper(f"h{i}", noop) for i in range(hops)])
    start = time.perf_counter()
    graflow.run(wf, start="h0", redis=url)
    return (time.perf_counter() - start) / hops * 1e6


def w4(url: str, size: int) -> float:
    with workflow("w4") as wf:
        a = TaskWrapper("a", lambda: b"x" * size)
        b = TaskWrapper("b", lambda a: len(a))
        a >> b
    start = time.perf_counter()
    result = graflow.run(wf, start="a", redis=url)
    elapsed = time.perf_counter() - start
    assert result.value == size
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="W1,W3,W4", help="comma-separated workloads")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    server, url = start_server()
    node = subprocess.Popen(
        [sys.executable, "-m", "graflow", "supervisor", "--redis", url,
         "--processes", str(args.processes)],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    out: dict[str, Any] = {"processes": args.processes, "repeat": args.repeat}
    try:
        time.sleep(1.0)
        w3(url, 50)  # warm up: node connected, code imported
        rep = args.repeat
        only = {name.strip().upper() for name in args.only.split(",")}
        print(f"graflow on Redis: {args.processes} worker processes, median of {rep}")
        if "W1" in only:
            g1 = _median(rep, lambda: w1(url, 10_000))
            b1 = _median(rep, lambda: baseline_throughput(url, 10_000, args.processes))
            out.update(w1_tps=g1, baseline_tps=b1)
            print(
                f"W1 10,000 no-op tasks   {g1:>10,.0f} tasks/s   bare LPUSH/BRPOP {b1:>10,.0f}/s"
                f"  (x{g1 / b1:.2f})"
            )
        if "W3" in only:
            g3 = _median(rep, lambda: w3(url, 1000))
            b3 = _median(rep, lambda: baseline_latency(url, 1000))
            out.update(w3_us=g3, baseline_us=b3)
            print(
                f"W3 chain of 1,000       {g3:>10.0f} us/hop    bare round trip {b3:>10.0f} us"
                f"  (x{g3 / b3:.2f})"
            )
        if "W4" in only:
            g4 = _median(rep, lambda: w4(url, 100 * 1024 * 1024))
            b4 = _median(rep, lambda: baseline_transfer(url, 100 * 1024 * 1024))
            out.update(w4_s=g4, baseline_s=b4)
            print(
                f"W4 100 MB A -> B        {g4:>10.3f} s         bare SET + GET  {b4:>10.3f} s"
                f"   (x{g4 / b4:.2f})"
            )
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(30)
        server.terminate()
        server.wait()
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
