"""Chaos on Redis runs: SIGKILLed workers and nodes, Redis killed and stopped, poison, SIGTERM.

Every test uses real processes: a redis-server (the session's, or a private one for tests that
kill or stop it), ``graflow supervisor`` nodes (``RedisNode``) and real signals. A killed run
must end exactly like an unkilled one: each task completed, the same results and channel as a
reference run in this process. Side effects can happen more than once (a task whose worker
dies after running it is run again), so tasks write their channel keys with ``set``.

Each task appends its worker's pid to ``started/<task id>`` when it begins and to
``finished/<task id>`` when its work is done; the chaos waits on those files to land its
blows mid-run, and the run's last task waits for a gate file the test creates only once the
chaos is over, so the run cannot end before it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

import graflow
from graflow import parallel, workflow
from graflow.core.spec import WorkItem
from graflow.core.task import TaskWrapper
from graflow.core.workflow import WorkflowContext
from graflow.redis import keys
from graflow.redis.signing import Signer, load_secret
from graflow.runner import RunResult
from tests.conftest import RedisNode, RedisServer

DEADLINE_S = 30.0
RUN_TIMEOUT_S = 50.0
AOF = ("--appendonly", "yes", "--appendfsync", "always")
OTHER_SECRET = b"a secret that no graflow node here holds"


# -- helpers -------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Marks:
    """The marker directories of one run (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.started = root / "started"
        self.finished = root / "finished"
        self.gate = root / "gate"
        self.started.mkdir(parents=True)
        self.finished.mkdir()

    def pids(self, which: Path) -> dict[str, list[int]]:
        """Task id to the pid of each process that reached ``which`` for it."""
        # Only complete lines: a task may be writing its mark right now.
        marked = {path.name: path.read_text().split("\n")[:-1] for path in which.iterdir()}
        return {task: [int(line) for line in lines] for task, lines in marked.items() if lines}

    def finished_count(self) -> int:
        return len(self.pids(self.finished))

    def wait_finished(self, count: int) -> None:
        wait_for(lambda: self.finished_count() >= count, f"{count} finished tasks")

    def busy(self, pids: list[int]) -> list[int]:
        """Those of ``pids`` that are running a task now (started it, not finished yet)."""
        started, finished = self.pids(self.started), self.pids(self.finished)
        running = {p[-1] for task, p in started.items() if len(finished.get(task, ())) < len(p)}
        return [pid for pid in pids if pid in running]

    def report_reruns(self) -> None:
        """Print (only) how many tasks ran more than once: at-least-once allows it."""
        reruns = {task: len(p) for task, p in self.pids(self.started).items() if len(p) > 1}
        print(f"tasks started more than once: {len(reruns)} {sorted(reruns.items())[:10]}")


def member(name: str, marks: Marks | None, sleep_s: float) -> TaskWrapper:
    """A task of the chaos workflow: marks, sleeps, sets ``v:<id>`` and returns its value."""
    started = None if marks is None else str(marks.started)
    finished = None if marks is None else str(marks.finished)

    def body(ctx: Any) -> int:
        if started is not None:
            with open(os.path.join(started, ctx.task_id), "a") as out:
                out.write(f"{os.getpid()}\n")
        time.sleep(sleep_s)
        value = sum(map(ord, ctx.task_id)) * 7
        ctx.get_channel().set(f"v:{ctx.task_id}", value)
        if finished is not None:
            with open(os.path.join(finished, ctx.task_id), "a") as out:
                out.write(f"{os.getpid()}\n")
        return value

    return TaskWrapper(name, body, inject_context=True)


def closing(names: list[str], gate: Path | None) -> TaskWrapper:
    """The last task: waits for the gate (the chaos is over), then sums the members."""
    gate_path = None if gate is None else str(gate)

    def body(ctx: Any) -> int:
        deadline = time.monotonic() + 120
        while gate_path is not None and not os.path.exists(gate_path):
            if time.monotonic() > deadline:
                raise TimeoutError("the chaos never opened the gate")
            time.sleep(0.01)
        return sum(ctx.get_result(name) for name in names)

    return TaskWrapper("total", body, inject_context=True)


def chaos_workflow(count: int, marks: Marks | None, sleep_s: float) -> WorkflowContext:
    """``head >> parallel(t000 ... ) >> total``; with ``marks=None`` the unkilled reference."""
    names = [f"t{i:03d}" for i in range(count)]
    with workflow("chaos") as wf:
        head = member("head", marks, 0.0)
        group = parallel(*(member(name, marks, sleep_s) for name in names))
        group.set_group_name("members")
        head >> group >> closing(["head", *names], None if marks is None else marks.gate)
    return wf


def reference_run(count: int) -> RunResult:
    """The unkilled run: the same tasks in this process, without sleeps or markers."""
    return graflow.run(chaos_workflow(count, None, 0.0), start="head", processes=0)


def assert_same_run(result: RunResult, reference: RunResult) -> None:
    """``result`` completed every task once, with the results and channel of ``reference``."""
    assert sorted(result.completed) == sorted(reference.completed)
    assert len(result.completed) == len(set(result.completed))
    assert result.value == reference.value
    assert result.results == reference.results
    assert {k: v for k, v in result.channel.items() if k.startswith("v:")} == {
        k: v for k, v in reference.channel.items() if k.startswith("v:")
    }


def start_run(
    url: str, queue: str, count: int, marks: Marks, sleep_s: float
) -> tuple[ThreadPoolExecutor, Future[RunResult]]:
    """``graflow.run`` of the chaos workflow in a thread (it retries through Redis outages)."""
    wf = chaos_workflow(count, marks, sleep_s)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(
        graflow.run, wf, start="head", redis=url, queue=queue, timeout_s=RUN_TIMEOUT_S
    )
    return pool, future


@contextlib.contextmanager
def chaos_run(
    url: str, queue: str, count: int, marks: Marks, sleep_s: float
) -> Iterator[Future[RunResult]]:
    """A run in a thread; the gate opens on the way out (also when the chaos failed)."""
    pool, future = start_run(url, queue, count, marks, sleep_s)
    with pool:
        try:
            yield future
        finally:
            marks.gate.touch()
            with contextlib.suppress(Exception):
                future.result(timeout=RUN_TIMEOUT_S)


def new_queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, with ``appendonly yes`` and ``appendfsync always``."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    server.start(*AOF)
    try:
        yield server
    finally:
        server.stop(kill=True)


@contextlib.contextmanager
def node(url: str, queue: str, *, processes: int = 2, lease_s: float = 1.0) -> Iterator[RedisNode]:
    """A node serving ``queue``, killed on the way out; its log is printed (shown on failure)."""
    started = RedisNode(url, queue, processes=processes, lease_s=lease_s)
    try:
        yield started.start()
    finally:
        if not started.log.closed:  # the test may have stopped the node itself
            started.log.seek(0)
            print(f"-- log of the node serving {queue}:")
            print(started.log.read().decode(errors="replace")[-4000:])
        started.stop(kill=True)


# -- SIGKILL ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_sigkill_of_single_workers_mid_run_loses_no_task(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    count = 120
    marks = Marks(tmp_path)
    killed: list[int] = []
    with (
        node(redis_server.url, new_queue()) as served,
        chaos_run(served.url, served.queue, count, marks, 0.03) as future,
    ):
        for progress in (15, 45, 75):
            marks.wait_finished(progress)
            pids = served.worker_pids()
            victim = random.choice(marks.busy(pids) or pids)  # mid-task, if one is
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_for(
                lambda victim=victim: (
                    victim not in served.worker_pids() and len(served.worker_pids()) == 2
                ),
                "the node to replace the killed worker",
            )
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)
        assert served.process is not None and served.process.poll() is None

    assert_same_run(result, reference_run(count))
    assert len(marks.pids(marks.finished)) == count + 1  # every member and the head
    ran_on = {pid for pids in marks.pids(marks.started).values() for pid in pids}
    assert set(killed) & ran_on, "no killed worker had run a task"
    marks.report_reruns()


@pytest.mark.timeout(90)
def test_sigkill_of_a_whole_node_mid_run_loses_no_task(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    count = 120
    marks = Marks(tmp_path)
    queue = new_queue()
    with (
        node(redis_server.url, queue) as doomed,
        node(redis_server.url, queue) as survivor,
        chaos_run(redis_server.url, queue, count, marks, 0.03) as future,
    ):
        doomed_pids = set(doomed.worker_pids())

        def doomed_took_part() -> bool:
            started = marks.pids(marks.started).values()
            return any(pid in doomed_pids for pids in started for pid in pids)

        wait_for(doomed_took_part, "the doomed node to take tasks")
        marks.wait_finished(20)
        doomed.stop(kill=True)  # SIGKILL to its process group: supervisor and workers
        wait_for(lambda: not any(map(_alive, doomed_pids)), "the doomed workers to die")
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)
        survivor_pids = set(survivor.worker_pids())

    assert_same_run(result, reference_run(count))
    after_kill = {pid for pids in marks.pids(marks.finished).values() for pid in pids} - doomed_pids
    assert after_kill <= survivor_pids
    marks.report_reruns()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- Redis goes away -------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_redis_killed_and_restarted_with_aof_mid_run(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    count = 100
    marks = Marks(tmp_path / "marks")
    with (
        node(private_redis.url, new_queue()) as served,
        chaos_run(served.url, served.queue, count, marks, 0.03) as future,
    ):
        marks.wait_finished(20)
        private_redis.restart(*AOF, kill=True)
        done_at_restart = marks.finished_count()
        marks.wait_finished(done_at_restart + 10)  # the workers are back at work
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert_same_run(result, reference_run(count))
    marks.report_reruns()


@contextlib.contextmanager
def _stopped(server: RedisServer) -> Iterator[float]:
    """Redis away for 10 s: workers and the producer back off."""
    server.stop()
    yield 10.0
    server.start(*AOF)


@contextlib.contextmanager
def _out_of_memory(server: RedisServer) -> Iterator[float]:
    """Every write refused for 3 s ("OOM command not allowed ..."): workers, the producer
    and tasks writing the channel wait it out as they wait out an outage."""
    admin = redis.Redis.from_url(server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    with pytest.raises(redis.OutOfMemoryError):
        admin.set("probe", "x")
    yield 3.0
    admin.config_set("maxmemory", 0)
    admin.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("disruption", [_stopped, _out_of_memory], ids=["stopped", "oom"])
def test_redis_away_or_refusing_mid_run_then_the_run_resumes(
    private_redis: RedisServer, tmp_path: Path, disruption: Any
) -> None:
    count = 60
    marks = Marks(tmp_path / "marks")
    with (
        node(private_redis.url, new_queue()) as served,
        chaos_run(served.url, served.queue, count, marks, 0.03) as future,
    ):
        marks.wait_finished(15)
        pids = sorted(served.worker_pids())
        with disruption(private_redis) as lasting_s:
            until = time.monotonic() + lasting_s
            while time.monotonic() < until:  # workers back off, none dies
                assert sorted(served.worker_pids()) == pids, "a worker died during the disruption"
                time.sleep(0.2)
        done_then = marks.finished_count()
        marks.wait_finished(done_then + 10)  # the workers resumed
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)
        assert sorted(served.worker_pids()) == pids, "a worker died after Redis came back"

    assert_same_run(result, reference_run(count))
    marks.report_reruns()


@pytest.mark.timeout(60)
def test_workers_outlive_their_queue_stream_being_deleted(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    with node(redis_server.url, new_queue(), lease_s=3.0) as served:
        first = graflow.run(chaos_workflow(5, None, 0.0), start="head", redis=served.url,
                            queue=served.queue, timeout_s=RUN_TIMEOUT_S)  # fmt: skip
        pids = sorted(served.worker_pids())
        # The idle workers block on the stream: deleting it unblocks them with an error
        # ("UNBLOCKED the stream key no longer exists"), and after it NOGROUP.
        stream = keys.queue_stream(served.queue)
        for _ in range(3):
            assert admin.delete(stream) == 1
            time.sleep(0.3)
            wait_for(lambda: admin.exists(stream) == 1, "the workers to make the stream again")
        again = graflow.run(chaos_workflow(5, None, 0.0), start="head", redis=served.url,
                            queue=served.queue, timeout_s=RUN_TIMEOUT_S)  # fmt: skip
        assert sorted(served.worker_pids()) == pids, "a worker died of its stream going"
    assert again.value == first.value


# -- poison ----------------------------------------------------------------------------------


class Canary:
    """Unpickling it creates the file at ``path``: what a hostile pickle would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def malformed_entries(signer: Signer, run_id: str) -> list[dict[bytes, bytes]]:
    """1,000 entries that are not work items (but none forged)."""
    items = signer.dumps([WorkItem(0, "t").as_tuple()])
    kinds: list[Callable[[int], dict[bytes, bytes]]] = [
        lambda i: {b"junk": b"%d" % i},  # none of the fields of an entry
        lambda i: {b"r": run_id.encode()},  # no payload
        lambda i: {b"b": items},  # no run id
        lambda i: {b"r": b"\xff\xfe%d" % i, b"b": items},  # a run id that is not text
        lambda i: {b"r": run_id.encode(), b"b": os.urandom(1 + i % 64)},  # garbage payload
        lambda i: {b"r": run_id.encode(), b"b": b"GFS\x01"},  # a truncated envelope
        lambda i: {b"r": run_id.encode(), b"b": b"GFS\x09" + os.urandom(48)},  # unknown format
        lambda i: {b"r": run_id.encode(), b"b": signer.dumps(i)},  # signed, not work items
        lambda i: {b"r": run_id.encode(), b"b": signer.dumps([("seq", i)])},  # bad items
        lambda i: {b"r": f"unknown-{i}".encode(), b"b": items},  # a run that does not exist
    ]
    return [kinds[i % len(kinds)](i) for i in range(1000)]


def forged_entries(secret: bytes, run_id: str, canary: Path) -> list[dict[bytes, bytes]]:
    """1,000 entries whose payload would create ``canary`` if a worker unpickled it."""
    hostile = pickle.dumps(Canary(canary))
    other = Signer(OTHER_SECRET)
    genuine = Signer(secret).dumps([WorkItem(0, "t").as_tuple()])
    header = genuine[: 7 + genuine[6]]  # magic, format, python, version length, version
    mac = genuine[len(header) : len(header) + 32]
    kinds: list[Callable[[int], bytes]] = [
        lambda i: hostile,  # unsigned
        lambda i: other.sign(hostile),  # signed with another secret
        lambda i: header + mac + hostile,  # a genuine header and MAC around another payload
        lambda i: header + os.urandom(32) + hostile,  # a guessed MAC
    ]
    run = run_id.encode()
    return [{b"r": run, b"b": kinds[i % len(kinds)](i)} for i in range(1000)]


@pytest.mark.timeout(90)
def test_1000_malformed_and_1000_forged_entries_are_dead_lettered_and_no_worker_dies(
    redis_server: RedisServer, redis_client: redis.Redis, run_id: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    marks = Marks(tmp_path / "marks")
    secret = load_secret(create_default=False)  # the nodes' secret (the default file)
    queue = new_queue()
    stream, dead = keys.queue_stream(queue), keys.dead_letters(queue)
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Canary(proof)))
    assert proof.exists(), "the hostile pickle is not live"
    with node(redis_server.url, queue) as served:
        pids = sorted(served.worker_pids())
        pipe = redis_client.pipeline(transaction=False)
        for fields in malformed_entries(Signer(secret), run_id):
            pipe.xadd(stream, fields)
        malformed_ids = set(pipe.execute())
        for fields in forged_entries(secret, run_id, canary):
            pipe.xadd(stream, fields)
        forged_ids = set(pipe.execute())

        wait_for(lambda: redis_client.xlen(dead) >= 2000, "2,000 dead letters")
        # A normal run on the same queue, after the poison.
        marks.gate.touch()
        result = graflow.run(
            chaos_workflow(20, marks, 0.0),
            start="head",
            redis=served.url,
            queue=queue,
            timeout_s=RUN_TIMEOUT_S,
        )
        assert sorted(served.worker_pids()) == pids, "a worker died"

    assert result.value == reference_run(20).value
    assert not canary.exists()
    letters = [fields for _id, fields in redis_client.xrange(dead)]
    assert len(letters) == 2000
    assert all(fields[b"reason"] for fields in letters)
    by_id = {fields[b"id"]: fields[b"reason"].decode() for fields in letters if b"id" in fields}
    unparsed = [fields for fields in letters if b"id" not in fields]
    # Entries without a usable run id or payload are kept raw; the others by their id.
    assert len(unparsed) == 400
    assert all(f[b"reason"].startswith(b"malformed entry") for f in unparsed)
    assert len(by_id) == 1600
    assert set(by_id) <= malformed_ids | forged_ids
    assert forged_ids <= set(by_id)
    for entry in forged_ids:
        reason = by_id[entry]
        assert "unsigned" in reason or "bad signature" in reason, reason
    assert redis_client.xlen(stream) == 0


# -- SIGTERM ---------------------------------------------------------------------------------


def held_member(name: str, marks: Marks, release: Path) -> TaskWrapper:
    """A task that marks its start, waits for ``release``, then marks its end."""
    started, finished, release_path = str(marks.started), str(marks.finished), str(release)

    def body(ctx: Any) -> int:
        with open(os.path.join(started, ctx.task_id), "a") as out:
            out.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + 60
        while not os.path.exists(release_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(os.path.join(finished, ctx.task_id), "a") as out:
            out.write(f"{os.getpid()}\n")
        return sum(map(ord, ctx.task_id))

    return TaskWrapper(name, body, inject_context=True)


@pytest.mark.timeout(60)
def test_sigterm_drains_a_node_mid_run_and_another_node_takes_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A lease of 60 s: the run can end within its timeout only if nothing waits for one.
    marks = Marks(tmp_path)
    release = tmp_path / "release"
    queue = new_queue()
    names = [f"h{i:02d}" for i in range(12)]
    with workflow("drain") as wf:
        parallel(*(held_member(name, marks, release) for name in names))
    with (
        node(redis_server.url, queue, lease_s=60) as drained,
        node(redis_server.url, queue, lease_s=60) as other,
    ):
        drained_pids = set(drained.worker_pids())
        pool = ThreadPoolExecutor(max_workers=1)
        with pool:
            future = pool.submit(graflow.run, wf, redis=redis_server.url, queue=queue, timeout_s=40)
            try:
                # All four workers hold a task; eight wait in the queue.
                wait_for(lambda: len(marks.pids(marks.started)) == 4, "four tasks in flight")
                in_hand = {
                    task
                    for task, pids in marks.pids(marks.started).items()
                    if pids[0] in drained_pids
                }
                process = drained.process
                assert process is not None
                os.killpg(process.pid, signal.SIGTERM)
            finally:
                release.touch()
            result = future.result(timeout=45)
            process.wait(timeout=30)
        other_pids = set(other.worker_pids())

    assert {name: result.results[name] for name in names} == {
        name: sum(map(ord, name)) for name in names
    }
    started, finished = marks.pids(marks.started), marks.pids(marks.finished)
    # The drained node finished what it held and claimed nothing more.
    assert {task for task, pids in started.items() if set(pids) & drained_pids} == in_hand
    assert all(finished[task] == started[task] for task in in_hand)
    assert {pid for task in set(names) - in_hand for pid in started[task]} <= other_pids


@pytest.mark.timeout(60)
def test_sigterm_hands_back_a_task_that_cannot_finish_before_the_deadline(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The task outlives the node's grace period (5 s) on its first run only. With a lease of
    # 60 s, the run ends within its timeout only if the entry was handed back at the deadline.
    marks = Marks(tmp_path)
    started = str(marks.started)

    def body(ctx: Any) -> str:
        path = os.path.join(started, ctx.task_id)
        first = not os.path.exists(path)
        with open(path, "a") as out:
            out.write(f"{os.getpid()}\n")
        if first:
            time.sleep(30)
        return "done"

    with workflow("slow") as wf:
        TaskWrapper("slow", body, inject_context=True)
    queue = new_queue()
    with node(redis_server.url, queue, lease_s=60) as drained:
        pool = ThreadPoolExecutor(max_workers=1)
        with pool:
            future = pool.submit(graflow.run, wf, redis=redis_server.url, queue=queue, timeout_s=25)
            wait_for(lambda: "slow" in marks.pids(marks.started), "the task to start")
            with node(redis_server.url, queue, lease_s=60) as other:
                drained.stop()  # SIGTERM, and wait: the supervisor kills at the deadline
                result = future.result(timeout=30)
                other_pids = set(other.worker_pids())

    assert result.value == "done"
    first, second = marks.pids(marks.started)["slow"]
    assert second in other_pids
    assert first != second
