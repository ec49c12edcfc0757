"""The Redis half of the chaos report: each failure of issue 14, and what the run made of it.

    python perf/chaos_report.py --redis [--repeat 3]

Every case gets a redis-server of its own (on a free loopback port, no persistence) and one
``graflow supervisor`` node of 2 worker processes (lease 1 s), then does to the run what
the case says: a producer whose secret the nodes do not know, Redis flushed or restarted
empty under a running task, a result over a lowered proto-max-bulk-len, Redis out of memory
under noeviction, the producer SIGKILLed with 300 items queued, ``graflow cancel``. For each
it measures the seconds from the fault to the named error (or, for the killed producer, to
the queue being empty), the executions per task (from marker files), and the keys of the run
left in Redis afterwards (channel keys included). Medians over ``--repeat`` runs. Nothing
here asserts; tests/chaos/test_failure_model_redis.py asserts the outcomes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's tests

import graflow
from graflow import parallel, workflow
from graflow.core.task import TaskWrapper
from tests.conftest import RedisNode, RedisServer

RUN_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    """One case, once."""

    error: str
    seconds: float
    executions: list[int]
    keys_left: int


def _counted(name: str, marks: Path, body: Callable[[], Any] = lambda: None) -> TaskWrapper:
    def run() -> Any:
        (marks / f"{name}.{uuid.uuid4().hex[:8]}").touch()
        return body()

    return TaskWrapper(name, run)


def _executions(marks: Path, names: list[str]) -> list[int]:
    return [len(list(marks.glob(f"{name}.*"))) for name in names]


def _run_keys(server: RedisServer) -> int:
    """Keys of runs left in Redis (not queues, nodes or dead letters)."""
    client = server.client()
    found = [k for k in client.scan_iter(match="graflow:{*") if not k.startswith(b"graflow:{q:")]
    return len([k for k in found if not k.startswith(b"graflow:{nodes}")])


def _wait(predicate: Callable[[], Any], deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the case never got to its fault")
        time.sleep(0.02)


def _outcome(future: Future[Any], fault_at: float) -> tuple[str, float]:
    try:
        future.result(timeout=RUN_TIMEOUT_S)
        name = "succeeded"
    except Exception as exc:  # noqa: BLE001 - what the run raised is the figure
        name = type(exc).__name__
    return name, time.monotonic() - fault_at


def _run(pool: ThreadPoolExecutor, target: Any, node: RedisNode, **kw: Any) -> Future[Any]:
    return pool.submit(
        graflow.run, target, redis=node.url, queue=node.queue, timeout_s=RUN_TIMEOUT_S, **kw
    )


def case_secret(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
    with workflow("signed") as wf:
        parallel(*[_counted(f"t{i}", marks) for i in range(20)]).set_group_name("g")
    started = time.monotonic()
    future = _run(pool, wf, node, start="g", secret="a-secret-that-no-node-was-given")
    error, seconds = _outcome(future, started)
    return Outcome(error, seconds, _executions(marks, [f"t{i}" for i in range(20)]), 0)


def _lost(lose: Callable[[RedisServer], None]) -> Callable[..., Outcome]:
    def case(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
        future = _run(pool, _counted("long", marks, lambda: time.sleep(30)), node)
        _wait(lambda: _executions(marks, ["long"])[0] >= 1)
        fault = time.monotonic()
        lose(server)
        error, seconds = _outcome(future, fault)
        return Outcome(error, seconds, _executions(marks, ["long"]), _run_keys(server))

    return case


def case_too_large(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
    server.client().config_set("proto-max-bulk-len", 1024 * 1024)
    big = _counted("big", marks, lambda: os.urandom(3 * 1024 * 1024))
    started = time.monotonic()
    error, seconds = _outcome(_run(pool, big, node), started)
    return Outcome(error, seconds, _executions(marks, ["big"]), _run_keys(server))


def case_out_of_memory(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
    admin = server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    names = [f"m{i}" for i in range(40)]
    with workflow("hungry") as wf:
        members = [_counted(n, marks, lambda: os.urandom(256 * 1024)) for n in names]
        parallel(*members).set_group_name("g")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 3 * 1024 * 1024)
    started = time.monotonic()
    error, seconds = _outcome(_run(pool, wf, node, start="g"), started)
    admin.config_set("maxmemory", 0)
    return Outcome(error, seconds, _executions(marks, names), _run_keys(server))


_PRODUCER = textwrap.dedent(
    """
    import sys, time, uuid
    from pathlib import Path
    import graflow
    from graflow import parallel, workflow
    from graflow.core.task import TaskWrapper

    url, queue, marks = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    def member(i):
        def body():
            (marks / f"m{i}.{uuid.uuid4().hex[:8]}").touch()
            time.sleep(0.2)
        return TaskWrapper(f"m{i}", body)

    if __name__ == "__main__":
        with workflow("many") as wf:
            parallel(*[member(i) for i in range(300)]).set_group_name("g")
        graflow.run(wf, start="g", redis=url, queue=queue)
    """
)


def case_producer_killed(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
    script = marks.parent / "producer.py"
    script.write_text(_PRODUCER)
    producer = subprocess.Popen(
        [sys.executable, str(script), server.url, node.queue, str(marks)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    _wait(lambda: len(list(marks.iterdir())) >= 4)
    producer.kill()
    producer.wait()
    fault = time.monotonic()
    client = server.client()
    _wait(lambda: client.xlen(f"graflow:{{q:{node.queue}}}:tasks") == 0, RUN_TIMEOUT_S)
    seconds = time.monotonic() - fault
    names = [f"m{i}" for i in range(300)]
    return Outcome("queue empty", seconds, _executions(marks, names), _run_keys(server))


def case_cancel(server: RedisServer, node: RedisNode, marks: Path, pool: Any) -> Outcome:
    names = [f"s{i}" for i in range(40)]
    with workflow("slow") as wf:
        parallel(*[_counted(n, marks, lambda: time.sleep(1.0)) for n in names]).set_group_name("g")
    future = _run(pool, wf, node, start="g")
    _wait(lambda: list(marks.iterdir()))
    client = server.client()
    (graph,) = list(client.scan_iter(match="graflow:{*}:graph"))
    run_id = graph.decode().split("{", 1)[1].split("}", 1)[0]
    subprocess.run(
        [sys.executable, "-m", "graflow", "cancel", run_id, "--redis", server.url],
        check=True,
        capture_output=True,
    )
    error, seconds = _outcome(future, time.monotonic())  # from when the cancel took effect
    return Outcome(error, seconds, _executions(marks, names), _run_keys(server))


CASES: dict[str, Callable[..., Outcome]] = {
    "2 secret mismatch (20 tasks)": case_secret,
    "4 Redis flushed under a task": _lost(lambda s: s.client().flushall()),
    "4 Redis restarted empty under a task": _lost(lambda s: s.restart(kill=True)),
    "5 result over proto-max-bulk-len": case_too_large,
    "5 Redis out of memory (40 x 256 KB)": case_out_of_memory,
    "11 producer SIGKILLed (300 queued)": case_producer_killed,
    "11 graflow cancel (40 queued)": case_cancel,
}


def run_case(case: Callable[..., Outcome]) -> Outcome:
    """One case on a fresh redis-server and node."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        directory = Path(tmp, "redis")
        directory.mkdir()
        server = RedisServer(binary, directory)
        server.start()
        marks = Path(tmp, "marks")
        marks.mkdir()
        node = RedisNode(server.url, f"q-{uuid.uuid4().hex[:8]}", processes=2).start()
        try:
            return case(server, node, marks, pool)
        finally:
            node.stop(kill=True)
            server.stop(kill=True)


def report(repeat: int, only: str | None = None) -> None:
    """Print one markdown table row per case (medians over ``repeat`` runs)."""
    print("| Case | Outcome | Seconds to it (median) | Executions per task (max) | Keys left |")
    print("| --- | --- | --- | --- | --- |")
    for name, case in CASES.items():
        if only and only not in name:
            continue
        outcomes = [run_case(case) for _ in range(repeat)]
        errors = sorted({o.error for o in outcomes})
        seconds = statistics.median(o.seconds for o in outcomes)
        most = max(max(o.executions, default=0) for o in outcomes)
        ran = statistics.median(sum(o.executions) for o in outcomes)
        keys_left = max(o.keys_left for o in outcomes)
        print(
            f"| {name} | {', '.join(errors)} | {seconds:.1f} | {most} ({ran:g} run in all) | "
            f"{keys_left} |",
            flush=True,
        )
    assert not [t for t in threading.enumerate() if t.name.startswith("graflow-lease-")]
