"""Issue 14 on Redis: each failure ends the run in a named error within a deadline.

Real redis-server processes of each test's own (they get flushed, restarted, starved of
memory), real ``graflow supervisor`` nodes and real producer processes killed with SIGKILL.
Waits poll against deadlines; a run's own ``timeout_s`` bounds it should the promise break
(the test then fails on the error's type).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

import graflow
from graflow import parallel, workflow
from graflow.core.task import TaskWrapper
from graflow.exceptions import (
    DeadLettered,
    RunCanceled,
    RunLost,
    WorkflowTimeoutError,
)
from graflow.redis import keys
from tests.conftest import RedisNode, RedisServer

DEADLINE_S = 60.0
RUN_TIMEOUT_S = 90.0


def wait_for(predicate: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, without persistence (it may lose everything)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def _queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def _counted(name: str, marks: Path, body: Callable[[], Any] = lambda: None) -> TaskWrapper:
    """A task that leaves one marker file per execution, then runs ``body``."""

    def run() -> Any:
        (marks / f"{name}.{uuid.uuid4().hex[:8]}").touch()
        return body()

    return TaskWrapper(name, run)


def _executions(marks: Path, name: str) -> int:
    return len(list(marks.glob(f"{name}.*")))


def _sleeper(name: str, marks: Path, seconds: float) -> TaskWrapper:
    return _counted(name, marks, lambda: time.sleep(seconds))


def _run_in_background(
    pool: ThreadPoolExecutor, target: Any, node: RedisNode, **kwargs: Any
) -> Future[Any]:
    return pool.submit(
        graflow.run, target, redis=node.url, queue=node.queue, timeout_s=RUN_TIMEOUT_S, **kwargs
    )


# -- point 2: dead letters reach the producer --------------------------------------------------
def test_a_secret_mismatch_fails_the_run_saying_so(redis_node: RedisNode, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with pytest.raises(DeadLettered) as info:
        graflow.run(
            _counted("t", marks),
            redis=redis_node.url,
            queue=redis_node.queue,
            secret="a-secret-that-no-node-was-given",
            timeout_s=RUN_TIMEOUT_S,
        )
    assert info.value.reason == "signature"
    assert "different secrets" in str(info.value)
    assert _executions(marks, "t") == 0


# -- point 3: nobody serves the queue; a node that starts before Redis ---------------------------
def test_a_run_without_a_node_says_so_and_records_the_wait(
    redis_server: RedisServer,
    tmp_path: Path,
    pool: ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = _queue()
    marks = tmp_path / "marks"
    marks.mkdir()
    caplog.set_level("WARNING", logger="graflow.redis.watch")
    future = pool.submit(
        graflow.run,
        _counted("t", marks),
        redis=redis_server.url,
        queue=queue,
        timeout_s=RUN_TIMEOUT_S,
    )
    warnings = wait_for(
        lambda: [
            r.getMessage() for r in caplog.records if "no graflow node serves" in r.getMessage()
        ],
        "the producer's warning",
    )
    assert repr(queue) in warnings[0] and f"127.0.0.1:{redis_server.port}" in warnings[0]
    node = RedisNode(redis_server.url, queue).start()
    try:
        result = future.result(timeout=RUN_TIMEOUT_S)
    finally:
        node.stop()
    assert result.waited_for_node_s > 0
    assert _executions(marks, "t") == 1


def test_a_run_timeout_without_a_node_names_the_queue(redis_server: RedisServer) -> None:
    queue = _queue()
    with pytest.raises(WorkflowTimeoutError) as info:
        graflow.run(TaskWrapper("t", lambda: 1), redis=redis_server.url, queue=queue, timeout_s=8)
    assert "no graflow node served queue" in str(info.value) and queue in str(info.value)


def test_a_node_started_before_redis_waits_for_it(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    directory = tmp_path / "late"
    directory.mkdir()
    server = RedisServer(binary, directory)  # not started yet: nothing listens on its port
    queue = _queue()
    log = tmp_path / "node.log"
    with log.open("wb") as stderr:
        node = subprocess.Popen(
            [
                sys.executable, "-m", "graflow", "supervisor", "--redis", server.url,
                "--queue", queue, "--processes", "1", "--wait-redis-s", "60",
            ],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "does not answer yet" in log.read_text(), "the node saying it waits")
        assert node.poll() is None, log.read_text()
        server.start()
        result = graflow.run(
            TaskWrapper("t", lambda: 7), redis=server.url, queue=queue, timeout_s=RUN_TIMEOUT_S
        )
        assert result.value == 7
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
        server.stop(kill=True)


# -- point 4: Redis lost the run ------------------------------------------------------------------
def _lose_everything_by_flushing(server: RedisServer) -> None:
    server.client().flushall()


def _lose_everything_by_restarting(server: RedisServer) -> None:
    server.restart(kill=True)  # no persistence: it comes back empty


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "lose", [_lose_everything_by_flushing, _lose_everything_by_restarting], ids=["flush", "restart"]
)
def test_a_run_that_redis_lost_fails_with_run_lost(
    own_redis: RedisServer,
    tmp_path: Path,
    pool: ThreadPoolExecutor,
    lose: Callable[[RedisServer], None],
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    node = RedisNode(own_redis.url, _queue(), processes=1).start()
    try:
        future = _run_in_background(pool, _sleeper("long", marks, 30), node)
        wait_for(lambda: _executions(marks, "long") == 1, "the task to start")
        lose(own_redis)
        with pytest.raises(RunLost) as info:
            future.result(timeout=RUN_TIMEOUT_S)
    finally:
        node.stop(kill=True)
    assert "rerun the workflow" in str(info.value)


# -- point 11: a producer SIGKILLed mid-run; graflow cancel ---------------------------------------
_PRODUCER = textwrap.dedent(
    """
    import sys
    import time
    import uuid
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


def _run_keys(client: redis.Redis, run_id: str) -> list[bytes]:
    control = [keys.graph(run_id), keys.handlers(run_id), keys.nodes(run_id), keys.done(run_id)]
    return [k for k in control if client.exists(k)]


def _run_ids(client: redis.Redis) -> list[str]:
    found = client.scan_iter(match="graflow:{*}:graph")
    return [k.decode().split("{", 1)[1].split("}", 1)[0] for k in found]


@pytest.mark.timeout(180)
def test_graflow_cancel_stops_a_run(
    own_redis: RedisServer, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    client = own_redis.client()
    with workflow("slow") as wf:
        parallel(*[_sleeper(f"s{i}", marks, 1.0) for i in range(40)]).set_group_name("g")
    node = RedisNode(own_redis.url, _queue(), processes=1).start()
    try:
        future = _run_in_background(pool, wf, node, start="g")
        wait_for(lambda: list(marks.iterdir()), "the run to start")
        (run_id,) = _run_ids(client)
        cancel = subprocess.run(
            [sys.executable, "-m", "graflow", "cancel", run_id, "--redis", own_redis.url],
            capture_output=True, text=True, timeout=DEADLINE_S,
        )  # fmt: skip
        assert cancel.returncode == 0, cancel.stderr
        assert "canceled" in cancel.stdout
        with pytest.raises(RunCanceled) as info:
            future.result(timeout=RUN_TIMEOUT_S)
    finally:
        node.stop(kill=True)
    assert "graflow cancel" in str(info.value)


def test_cancel_of_an_unknown_run_says_there_is_no_producer(redis_server: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "graflow", "cancel", "no-such-run", "--redis", redis_server.url],
        capture_output=True, text=True, timeout=DEADLINE_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no live producer" in done.stdout


# Threads of this module's runs must not outlive it.
def teardown_module() -> None:
    assert all(not t.name.startswith("graflow-lease") for t in threading.enumerate())
