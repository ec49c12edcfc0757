"""Redis runs on real nodes: several supervisors, dead letters, at-least-once, keys, signing.

Every test talks to a real redis-server (the session's, see tests/conftest.py) and to real
``graflow supervisor`` process groups (``RedisNode``), each serving a queue of its own. Task
bodies are closures built by this module's factories, so they travel by value and the nodes
never import the tests. A task appends the pid of the process that ran it to a marker file
named after the task: that is how a test tells where, and how often, a task ran.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import pickle
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import graflow
from graflow import parallel, workflow
from graflow.core import codec
from graflow.core.spec import WorkItem
from graflow.core.task import TaskWrapper
from graflow.exceptions import GraflowError, GraflowRuntimeError, PoisonMessage, WorkerLost
from graflow.redis import keys
from graflow.redis.signing import Signer, load_secret
from tests.bad_values import LockedError, TwoArgError, Unloadable
from tests.by_parameter import taking_previous
from tests.conftest import RedisNode, RedisServer

DEADLINE_S = 30.0
RUN_TIMEOUT_S = 45.0
OTHER_SECRET = b"a secret that no graflow node here holds"


class Canary:
    """Unpickling it creates the file at ``path``: what a hostile pickle would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def canary_pickle(path: Path) -> bytes:
    """A plain, unsigned pickle that creates ``path`` when it is loaded."""
    return pickle.dumps(Canary(path))


def test_the_canary_pickle_is_live(tmp_path: Path) -> None:
    # The tests below prove a canary file is never created; this proves they could be.
    proof = tmp_path / "proof"
    pickle.loads(canary_pickle(proof))
    assert proof.exists()


def node_secret() -> bytes:
    """The secret the nodes sign with (the per-user default file, as ``graflow.run`` uses)."""
    return load_secret(create_default=False)


def envelope(secret: bytes, python: tuple[int, int], version: str, payload: bytes) -> bytes:
    """A blob in the signed envelope of graflow/redis/signing.py, for any header."""
    raw_version = version.encode("ascii")
    header = b"GFS" + bytes([1, python[0], python[1], len(raw_version)]) + raw_version
    mac = hmac.new(secret, header, hashlib.sha256)
    mac.update(payload)
    return header + mac.digest() + payload


def wait_for(predicate: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def marking_task(
    name: str,
    marks: Path,
    *,
    sleep_s: float = 0.0,
    hold: Path | None = None,
    crash: bool = False,
) -> TaskWrapper:
    """A task that appends ``<pid> <run id>`` to ``marks/<task id>``, then does its work.

    It waits for the file ``hold`` to exist when given, sleeps ``sleep_s``, exits its process
    when ``crash``, and returns a value that depends on its id only.
    """
    marks_dir = str(marks)
    hold_path = None if hold is None else str(hold)

    def body(ctx: Any) -> int:
        with open(os.path.join(marks_dir, ctx.task_id), "a") as out:
            out.write(f"{os.getpid()} {ctx.session_id}\n")
        if crash:
            os._exit(1)
        if hold_path is not None:
            deadline = time.monotonic() + 60
            while not os.path.exists(hold_path) and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(sleep_s)
        return sum(map(ord, ctx.task_id))

    return TaskWrapper(name, body, inject_context=True)


def summing_task(name: str, members: list[str]) -> TaskWrapper:
    """A task that returns the sum of the results of ``members``."""

    def body(ctx: Any) -> int:
        return sum(ctx.get_result(member) for member in members)

    return TaskWrapper(name, body, inject_context=True)


def expected_value(task_id: str) -> int:
    return sum(map(ord, task_id))


def _mark_lines(path: Path) -> list[str]:
    """The complete lines of a marker file (a task may be writing the next one)."""
    return path.read_text().split("\n")[:-1]


def executions(marks: Path) -> dict[str, list[int]]:
    """Task id to the pids of the processes that ran it, once per execution."""
    ran = {
        path.name: [int(line.split()[0]) for line in _mark_lines(path)] for path in marks.iterdir()
    }
    return {task: pids for task, pids in ran.items() if pids}


def wait_for_start(marks: Path, task_id: str) -> str:
    """Wait until ``task_id`` has started; the id of its run."""
    wait_for(lambda: task_id in executions(marks), f"task {task_id} to start")
    return _mark_lines(marks / task_id)[0].split()[1]


@contextlib.contextmanager
def serving_nodes(
    url: str, queue: str, count: int, *, processes: int = 1, lease_s: float = 1.0
) -> Iterator[list[RedisNode]]:
    """``count`` nodes serving ``queue``, stopped (drained) on the way out."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for _ in range(count):
            node = RedisNode(url, queue, processes=processes, lease_s=lease_s)
            stack.callback(node.stop)
            nodes.append(node.start())
        yield nodes


def wait_until_serving(client: redis.Redis, nodes: list[RedisNode]) -> None:
    """Wait until every worker of ``nodes`` has sent its first heartbeat (it then serves).

    A node's id is ``<host>-<supervisor pid>-<random>`` and each worker writes
    ``<node id>:<index>:seen`` into the node's heartbeat hash as it starts serving.
    """

    def serving(node: RedisNode) -> bool:
        assert node.process is not None
        pattern = f"{keys.node('*')[: -len('*')]}*-{node.process.pid}-*"
        seen = 0
        for name in client.scan_iter(match=pattern, count=1000):
            seen += sum(field.endswith(b":seen") for field in client.hkeys(name))
        return seen >= node.processes

    wait_for(lambda: all(serving(node) for node in nodes), "the nodes' workers to serve")


def dead_letters(client: redis.Redis, queue: str) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in client.xrange(keys.dead_letters(queue))]


def submit_raw(client: redis.Redis, queue: str, run_id: str, blob: bytes) -> bytes:
    """XADD one entry straight into the queue's stream; its entry id."""
    entry_id: bytes = client.xadd(keys.queue_stream(queue), {b"r": run_id.encode(), b"b": blob})
    return entry_id


def in_background(fn: Callable[[], Any]) -> tuple[ThreadPoolExecutor, Future[Any]]:
    pool = ThreadPoolExecutor(max_workers=1)
    return pool, pool.submit(fn)


# -- several nodes serve one run ------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("count", [2, 3])
def test_several_nodes_serve_one_run(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path, count: int
) -> None:
    queue = f"q-{uuid.uuid4().hex[:12]}"
    names = [f"t{i:02d}" for i in range(30)]
    with serving_nodes(redis_server.url, queue, count) as nodes:
        wait_until_serving(redis_client, nodes)
        node_of = {pid: index for index, node in enumerate(nodes) for pid in node.worker_pids()}
        with workflow("several-nodes") as wf:
            members = [marking_task(name, tmp_path, sleep_s=0.1) for name in names]
            parallel(*members) >> summing_task("total", names)
        result = graflow.run(wf, redis=redis_server.url, queue=queue, timeout_s=RUN_TIMEOUT_S)

    assert result.value == sum(map(expected_value, names))
    assert {name: result.results[name] for name in names} == {
        name: expected_value(name) for name in names
    }
    assert result.results["total"] == result.value
    ran = executions(tmp_path)
    assert sorted(ran) == names
    pids = {pid for pids in ran.values() for pid in pids}
    assert pids <= set(node_of), "a task ran outside the nodes' worker processes"
    assert {node_of[pid] for pid in pids} == set(range(count)), "a node took no part"


# -- keys ----------------------------------------------------------------------------------


def _scan_run_keys(client: redis.Redis, run_id: str) -> dict[bytes, int]:
    """Every key of the run (SCAN on its prefix) and its TTL in seconds."""
    found = client.scan_iter(match=f"{keys.run_prefix(run_id)}*", count=1000)
    return {name: int(client.ttl(name)) for name in found}


def _assert_in_run_slot(run_id: str, found: dict[bytes, int]) -> None:
    slot = key_slot(keys.run_prefix(run_id).encode())
    tag = f"graflow:{{{run_id}}}:".encode()
    for name, ttl in found.items():
        assert name.startswith(tag), name
        assert key_slot(name) == slot, name
        assert ttl > 0, f"{name!r} has no TTL ({ttl})"


@pytest.mark.timeout(60)
def test_run_keys_share_the_run_hash_slot_and_expire(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    marks = tmp_path / "marks"
    marks.mkdir()
    held = marking_task("held", marks, hold=release)

    with workflow("keys") as wf:

        @graflow.task(inject_context=True)
        def first(ctx: Any) -> int:
            channel = ctx.get_channel()
            channel.set("word", "hello")
            channel.append("items", "a")
            channel.atomic_add("count", 2)
            channel.atomic_add("ratio", 0.5)
            with channel.lock("guard"):
                pass
            ctx.next_task(held)  # a task created at run time: the run's node list
            return 1

    pool, future = in_background(
        lambda: graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    )
    with pool:
        try:
            run_id = wait_for_start(marks, "held")
            during = _scan_run_keys(redis_client, run_id)
        finally:
            release.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert result.run_id == run_id
    assert result.results == {"first": 1, "held": expected_value("held")}
    control = {
        keys.graph(run_id).encode(),
        keys.handlers(run_id).encode(),
        keys.nodes(run_id).encode(),
        keys.done(run_id).encode(),
    }
    assert control <= set(during), "the run's control keys were not where keys.py says"
    _assert_in_run_slot(run_id, during)

    after = _scan_run_keys(redis_client, run_id)
    assert not control & set(after), "control keys outlived the run"
    assert keys.channel(run_id, "word").encode() in after
    assert keys.channel(run_id, "first.__result__").encode() in after
    _assert_in_run_slot(run_id, after)
    assert key_slot(keys.queue_stream(redis_node.queue).encode()) == key_slot(
        keys.dead_letters(redis_node.queue).encode()
    )


# -- dead letters ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_version_skewed_entries_are_dead_lettered_and_never_unpickled(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path, run_id: str
) -> None:
    pids = sorted(redis_node.worker_pids())
    secret = node_secret()
    python = (sys.version_info.major, sys.version_info.minor)
    items = codec.dumps([WorkItem(0, "t").as_tuple()])
    skews = {
        "other python": envelope(secret, (python[0], 99), graflow.__version__, items),
        "other graflow": envelope(secret, python, "0.0.1", items),
        "both, canary": envelope(secret, (2, 7), "0.0.1", canary_pickle(tmp_path / "canary")),
    }
    ids = {submit_raw(redis_client, redis_node.queue, run_id, blob): k for k, blob in skews.items()}
    # The same envelope with this process's versions is accepted: only the header differs.
    assert Signer(secret).loads(envelope(secret, python, graflow.__version__, items))

    wait_for(lambda: redis_client.xlen(keys.dead_letters(redis_node.queue)) >= 3, "dead letters")
    letters = {fields[b"id"]: fields for fields in dead_letters(redis_client, redis_node.queue)}
    assert set(letters) == set(ids)
    reasons = {ids[entry]: fields[b"reason"].decode() for entry, fields in letters.items()}
    for kind, reason in reasons.items():
        assert "version skew" in reason, (kind, reason)
    assert f"Python {python[0]}.99" in reasons["other python"]
    assert "graflow 0.0.1" in reasons["other graflow"]
    assert "Python 2.7 / graflow 0.0.1" in reasons["both, canary"]
    assert not (tmp_path / "canary").exists()
    assert redis_client.xlen(keys.queue_stream(redis_node.queue)) == 0
    assert sorted(redis_node.worker_pids()) == pids, "a worker died"


@pytest.mark.timeout(60)
def test_a_task_that_kills_its_worker_every_time_ends_in_worker_lost(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with workflow("crash") as wf:
        marking_task("crash", tmp_path, crash=True)

    with pytest.raises(WorkerLost) as caught:
        graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=RUN_TIMEOUT_S)

    assert caught.value.task_id == "crash"
    assert caught.value.deliveries == 3  # the supervisor's default --max-deliveries
    assert len(executions(tmp_path)["crash"]) == 3
    # The run is told first, then the entry moves to the dead letters.
    wait_for(lambda: redis_client.xlen(keys.dead_letters(redis_node.queue)) >= 1, "dead letter")
    letters = dead_letters(redis_client, redis_node.queue)
    assert len(letters) == 1
    assert letters[0][b"reason"] == b"delivered 3 times; its workers kept dying"
    assert redis_client.xlen(keys.queue_stream(redis_node.queue)) == 0
    # The node replaced its dead workers and still serves the queue.
    wait_for(lambda: len(redis_node.worker_pids()) == 2, "the node to restart its workers")
    with workflow("after") as after:
        marking_task("fine", tmp_path)
    result = graflow.run(after, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    assert result.value == expected_value("fine")


# -- at-least-once ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_task_leaves_redis_only_with_its_completion(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    marks = tmp_path / "marks"
    marks.mkdir()
    stream = keys.queue_stream(redis_node.queue)
    with workflow("held") as wf:
        marking_task("held", marks, hold=release)

    pool, future = in_background(
        lambda: graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    )
    with pool:
        try:
            wait_for_start(marks, "held")
            # Claimed and running: still in the stream, pending for its worker.
            assert redis_client.xlen(stream) == 1
            assert redis_client.xpending(stream, keys.queue_group)["pending"] == 1
            first_pid = executions(marks)["held"][0]
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: first_pid not in redis_node.worker_pids(), "the worker to be gone")
            # Its worker is dead: the entry stays until another worker completes it.
            assert redis_client.xlen(stream) == 1
            wait_for(lambda: len(executions(marks)["held"]) == 2, "the task to be redelivered")
        finally:
            release.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert result.value == expected_value("held")
    second_pid = executions(marks)["held"][1]
    assert second_pid != first_pid
    assert redis_client.xlen(stream) == 0
    assert redis_client.xpending(stream, keys.queue_group)["pending"] == 0
    assert dead_letters(redis_client, redis_node.queue) == []


# -- signing ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_forged_graph_is_never_unpickled(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path, run_id: str
) -> None:
    pids = sorted(redis_node.worker_pids())
    graph_canary, handlers_canary = tmp_path / "graph", tmp_path / "handlers"
    other = Signer(OTHER_SECRET)
    redis_client.set(keys.graph(run_id), canary_pickle(graph_canary), ex=60)
    redis_client.set(keys.handlers(run_id), other.sign(canary_pickle(handlers_canary)), ex=60)
    # The entry itself is genuine: only the run's graph and handlers are forged.
    items = Signer(node_secret()).dumps([WorkItem(0, "t").as_tuple()])
    entry = submit_raw(redis_client, redis_node.queue, run_id, items)

    wait_for(lambda: redis_client.xlen(keys.dead_letters(redis_node.queue)) >= 1, "dead letter")
    (letter,) = dead_letters(redis_client, redis_node.queue)
    assert letter[b"id"] == entry
    assert letter[b"reason"] == f"run {run_id} is unknown or expired".encode()
    assert not graph_canary.exists()
    assert not handlers_canary.exists()
    assert sorted(redis_node.worker_pids()) == pids, "a worker died"


@pytest.mark.timeout(60)
def test_a_forged_channel_value_fails_the_task_and_is_never_unpickled(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    marks = tmp_path / "marks"
    marks.mkdir()
    canary = tmp_path / "canary"
    with workflow("forged-channel") as wf:

        @graflow.task(inject_context=True)
        def read(ctx: Any) -> Any:
            return ctx.get_channel().get("payload")

        marking_task("held", marks, hold=release) >> read

    pool, future = in_background(
        lambda: graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    )
    with pool:
        try:
            run_id = wait_for_start(marks, "held")
            redis_client.set(keys.channel(run_id, "payload"), canary_pickle(canary), ex=60)
        finally:
            release.touch()
        with pytest.raises(GraflowRuntimeError) as caught:
            future.result(timeout=RUN_TIMEOUT_S)

    # The task failed on the forged value, as a task fails on what it raised.
    assert isinstance(caught.value.cause, PoisonMessage)
    assert "'payload'" in str(caught.value.cause)
    assert "unsigned" in str(caught.value.cause)
    assert not canary.exists()


@pytest.mark.timeout(60)
def test_forged_completions_are_ignored_by_the_producer(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    marks = tmp_path / "marks"
    marks.mkdir()
    canary = tmp_path / "canary"
    with workflow("forged-completions") as wf:
        marking_task("held", marks, hold=release) >> marking_task("next", marks)

    pool, future = in_background(
        lambda: graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    )
    with pool:
        try:
            run_id = wait_for_start(marks, "held")
            forged = [(seq, "held", True, "forged", None, None, 0.0, None) for seq in range(8)]
            for blob in (
                canary_pickle(canary),
                Signer(OTHER_SECRET).dumps(forged),
                Signer(OTHER_SECRET).sign(canary_pickle(canary)),
                b"garbage",
            ):
                redis_client.xadd(keys.done(run_id), {b"b": blob})
        finally:
            release.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert result.results == {"held": expected_value("held"), "next": expected_value("next")}
    assert not canary.exists()


# -- chain lookahead ------------------------------------------------------------------------


def chain_task(name: str, marks: Path, *, fail_first: bool = False, crash_first: bool = False,
               terminate: bool = False, retries: int = 0) -> TaskWrapper:  # fmt: skip
    """A marking task that, on its first execution, raises or kills its worker if told to,
    or ends the workflow (``terminate``)."""
    marks_dir = str(marks)

    def body(ctx: Any) -> int:
        path = os.path.join(marks_dir, ctx.task_id)
        first = not os.path.exists(path)
        with open(path, "a") as out:
            out.write(f"{os.getpid()} {ctx.session_id}\n")
        if first and crash_first:
            os._exit(1)
        if first and fail_first:
            raise RuntimeError(f"{ctx.task_id} fails once")
        if terminate:
            ctx.terminate_workflow("enough")
        return sum(map(ord, ctx.task_id))

    return TaskWrapper(name, body, inject_context=True, max_retries=retries)


@pytest.mark.timeout(60)
def test_a_plain_chain_runs_ahead_on_one_worker(redis_node: RedisNode, tmp_path: Path) -> None:
    with workflow("ahead") as wf:
        graflow.chain(*[chain_task(f"c{i}", tmp_path) for i in range(6)])
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    assert result.value == expected_value("c5")
    ran = executions(tmp_path)
    assert sorted(ran) == [f"c{i}" for i in range(6)]
    assert all(len(pids) == 1 for pids in ran.values())
    # The successors travelled with c0: one worker ran them all.
    assert len({pids[0] for pids in ran.values()}) == 1
    assert result.completed == [f"c{i}" for i in range(6)]


@pytest.mark.timeout(60)
def test_a_chain_stops_running_ahead_where_a_task_fails_or_ends_the_run(
    redis_node: RedisNode, tmp_path: Path
) -> None:
    failing, ending = tmp_path / "failing", tmp_path / "ending"
    failing.mkdir()
    ending.mkdir()
    with workflow("failing") as wf:
        graflow.chain(
            chain_task("a", failing),
            chain_task("b", failing, fail_first=True, retries=1),
            chain_task("c", failing),
            chain_task("d", failing),
        )
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    assert result.value == expected_value("d")
    assert {task: len(pids) for task, pids in executions(failing).items()} == {
        "a": 1, "b": 2, "c": 1, "d": 1,
    }  # fmt: skip
    assert result.completed == ["a", "b", "c", "d"]

    with workflow("ending") as wf:
        graflow.chain(
            chain_task("a", ending),
            chain_task("b", ending, terminate=True),
            chain_task("c", ending),
            chain_task("d", ending),
        )
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    assert sorted(executions(ending)) == ["a", "b"]
    assert result.completed == ["a", "b"]


@pytest.mark.timeout(90)
def test_a_worker_killed_inside_a_chain_that_ran_ahead_loses_no_task(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with workflow("killed") as wf:
        graflow.chain(
            chain_task("a", tmp_path),
            chain_task("b", tmp_path),
            chain_task("c", tmp_path, crash_first=True),
            chain_task("d", tmp_path),
            chain_task("e", tmp_path),
        )
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=60)
    assert result.value == expected_value("e")
    ran = executions(tmp_path)
    assert sorted(ran) == ["a", "b", "c", "d", "e"]
    assert len(ran["c"]) == 2  # the crash, then the run that counted
    assert result.completed == ["a", "b", "c", "d", "e"]
    assert redis_client.xlen(keys.queue_stream(redis_node.queue)) == 0
    assert dead_letters(redis_client, redis_node.queue) == []


@pytest.mark.timeout(60)
def test_a_chain_longer_than_the_lookahead_runs_each_task_once_in_order(
    redis_node: RedisNode, tmp_path: Path
) -> None:
    # Past the first entry, successors are held by the producer until their predecessor
    # is done, then travel with the next entry; c13 fails once inside such a stretch.
    names = [f"c{i}" for i in range(30)]
    with workflow("long") as wf:
        graflow.chain(*[chain_task(n, tmp_path, fail_first=n == "c13", retries=1) for n in names])
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=40)
    assert result.value == expected_value("c29")
    assert result.completed == names
    assert {task: len(pids) for task, pids in executions(tmp_path).items()} == {
        n: 2 if n == "c13" else 1 for n in names
    }


# -- values that cannot cross a process boundary ---------------------------------------------


_BAD_OUTCOMES: dict[str, Callable[[], Any]] = {
    "result": threading.Lock,
    "large_result": lambda: [threading.Lock(), b"x" * (256 * 1024)],
    "exception": lambda: (_ for _ in ()).throw(LockedError("with a lock inside")),
    "unloadable_exception": lambda: (_ for _ in ()).throw(TwoArgError("left", "right")),
    "unloadable_result": Unloadable,
    "large_unloadable_result": lambda: [Unloadable(), b"x" * (256 * 1024)],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(_BAD_OUTCOMES))
def test_an_outcome_that_cannot_travel_fails_its_task_and_the_worker_lives_on(
    redis_node: RedisNode, kind: str
) -> None:
    make_bad = _BAD_OUTCOMES[kind]
    workers = set(redis_node.worker_pids())
    with workflow("bad") as wf:
        bad = TaskWrapper("bad", lambda: make_bad())
        after = TaskWrapper("after", lambda: "never")
        bad >> after
    # A clear error that names the task; a large result that will not rebuild is found when
    # it is read (here: by the producer, collecting the run's results).
    with pytest.raises(GraflowError) as info:
        graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=RUN_TIMEOUT_S)
    err = info.value
    assert not isinstance(err, WorkerLost), err
    assert "'bad" in str(err)
    # The same worker processes serve the next run: none died of it.
    with workflow("fine") as ok:
        TaskWrapper("fine", lambda: "fine")
    result = graflow.run(ok, redis=redis_node.url, queue=redis_node.queue, timeout_s=RUN_TIMEOUT_S)
    assert result.value == "fine"
    assert set(redis_node.worker_pids()) == workers


def _sum_step(i: int, crash_marker: str | None, previous: int | None) -> int:
    if crash_marker is not None and not os.path.exists(crash_marker):
        Path(crash_marker).touch()
        os._exit(1)  # the worker dies inside a chain that ran ahead
    return (previous or 0) + i


def _summing_chain_task(i: int, crash_marker: str | None) -> TaskWrapper:
    """Task ``s<i>``, taking ``s<i-1>``'s result by parameter name."""
    body = functools.partial(_sum_step, i, crash_marker)
    return TaskWrapper(f"s{i}", taking_previous(f"s{i - 1}" if i else None, body))


@pytest.mark.timeout(90)
def test_a_chain_passing_results_runs_ahead_and_survives_a_killed_worker(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    marker = str(tmp_path / "crashed-once")
    with workflow("passing") as wf:
        graflow.chain(*[_summing_chain_task(i, marker if i == 3 else None) for i in range(8)])
    result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=60)
    assert result.value == sum(range(8))
    assert [result.results[f"s{i}"] for i in range(8)] == [sum(range(i + 1)) for i in range(8)]
    assert result.completed == [f"s{i}" for i in range(8)]
    assert os.path.exists(marker)
    assert dead_letters(redis_client, redis_node.queue) == []
