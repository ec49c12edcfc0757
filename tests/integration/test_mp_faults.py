"""Fault handling of the process pool: dead workers, timeouts, unpicklable values, recycling.

Every test has its own Supervisor (or ``graflow.run`` call) and its own tmp_path, so they
run side by side under xdist. A worker that dies is seen by the supervisor on its process
sentinel; a task that kills its worker every time must end in WorkerLost, and a hang is a
failure (pytest-timeout). Nothing here asserts on timings.

Crashing tasks write one line per delivery to a file in tmp_path before they crash: that is
how a test counts deliveries in processes that do not survive.
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import os
import re
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import graflow
from graflow import chain, parallel, task, workflow
from graflow.core.task import TaskWrapper
from graflow.exceptions import (
    ParallelGroupError,
    RetryLimitExceededError,
    TaskError,
    TaskTimeoutError,
    WorkerLost,
    WorkflowTimeoutError,
)
from graflow.mp import shm
from tests.bad_values import LockedError, TwoArgError, Unloadable

_SEGMENT = re.compile(r"graflow_(\d+)_[0-9a-f]+")
DEATHS = ["exit", "sigkill", "segfault"]


def _die(how: str) -> None:
    """End this process abruptly, the way a buggy task or the OOM killer would."""
    if how == "exit":
        os._exit(1)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        faulthandler.disable()  # no traceback dump on stderr for an expected crash
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # and no core file
        ctypes.string_at(0)
    raise AssertionError(f"unknown way to die: {how}")


def _count_delivery(path: Path) -> int:
    """Record one delivery in ``path``; return how many there were, this one included."""
    with path.open("a") as f:
        f.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def _segments_of(pids: set[int]) -> list[str]:
    """graflow shared-memory segments in /dev/shm created by any of ``pids``."""
    names = os.listdir(shm.SHM_DIR)
    return sorted(
        n for n in names if (m := _SEGMENT.fullmatch(n)) is not None and int(m.group(1)) in pids
    )


def _crasher_wf(how: str, log: Path, max_retries: int | None = None) -> Any:
    with workflow("crash") as wf:

        @task(max_retries=max_retries)
        def crasher() -> None:
            _count_delivery(log)
            _die(how)

    return wf


# -- worker death -------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", DEATHS)
def test_persistent_crash_ends_in_worker_lost(how: str, tmp_path: Path) -> None:
    log = tmp_path / "deliveries"
    with graflow.Supervisor(2) as sup, pytest.raises(WorkerLost) as info:
        sup.run(_crasher_wf(how, log))
    err = info.value
    assert err.task_id == "crasher"
    assert err.deliveries == 3
    assert "crasher" in str(err)
    assert len(log.read_text().splitlines()) == 3
    assert len(set(log.read_text().split())) == 3  # each delivery on a fresh worker


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", DEATHS)
def test_crash_on_first_delivery_only_succeeds_on_redelivery(how: str, tmp_path: Path) -> None:
    log = tmp_path / "deliveries"
    with workflow("once") as wf:

        @task
        def first() -> int:
            return 20

        @task
        def flaky(first: int) -> int:
            if _count_delivery(log) == 1:
                _die(how)
            return first + 1

        @task
        def last(flaky: int) -> int:
            return flaky * 2

        first >> flaky >> last

    with graflow.Supervisor(2) as sup:
        before = sup.worker_pids
        result = sup.run(wf)
        after = sup.worker_pids
    assert result.value == 42
    assert result.results == {"first": 20, "flaky": 21, "last": 42}
    assert result.completed == ["first", "flaky", "last"]
    assert result.stats.worker_deaths == 1
    assert result.stats.failures == 0
    assert len(log.read_text().splitlines()) == 2
    assert len(set(before) & set(after)) == 1  # the dead worker was replaced


@pytest.mark.timeout(60)
def test_spawned_workers_are_replaced_and_persistent_crash_is_lost(tmp_path: Path) -> None:
    once = tmp_path / "once"
    with workflow("once") as wf:

        @task
        def flaky() -> str:
            if _count_delivery(once) == 1:
                _die("exit")
            return "ok"

    with graflow.Supervisor(2, start_method="spawn") as sup:
        assert sup.run(wf).value == "ok"
        always = tmp_path / "always"
        with pytest.raises(WorkerLost) as info:
            sup.run(_crasher_wf("sigkill", always))
    assert info.value.deliveries == 3
    assert len(always.read_text().splitlines()) == 3


@pytest.mark.timeout(60)
def test_max_deliveries_is_configurable(tmp_path: Path) -> None:
    log = tmp_path / "deliveries"
    with graflow.Supervisor(1, max_deliveries=1) as sup, pytest.raises(WorkerLost) as info:
        sup.run(_crasher_wf("exit", log))
    assert info.value.deliveries == 1
    assert len(log.read_text().splitlines()) == 1


@pytest.mark.timeout(90)
def test_worker_lost_goes_through_the_retry_path(tmp_path: Path) -> None:
    log = tmp_path / "deliveries"
    with graflow.Supervisor(2) as sup, pytest.raises(RetryLimitExceededError) as info:
        sup.run(_crasher_wf("exit", log, max_retries=1))
    err = info.value
    assert (err.task_id, err.retry_count, err.max_retries) == ("crasher", 2, 1)
    assert isinstance(err.cause, WorkerLost)
    assert err.cause.deliveries == 3
    assert len(log.read_text().splitlines()) == 6  # two attempts, three deliveries each


def _group_with_crasher(policy: str, log: Path) -> Any:
    with workflow("groups") as wf:

        @task
        def ok1() -> int:
            return 1

        @task
        def ok2() -> int:
            return 2

        @task
        def crasher() -> None:
            _count_delivery(log)
            _die("sigkill")

        @task
        def after() -> str:
            return "after ran"

        (ok1 | ok2 | crasher).set_group_name("g").with_execution(policy=policy) >> after
    return wf


@pytest.mark.timeout(60)
def test_worker_lost_goes_through_the_group_policy(tmp_path: Path) -> None:
    with graflow.Supervisor(2) as sup:
        result = sup.run(_group_with_crasher("best_effort", tmp_path / "a"), start="g")
        assert result.value == "after ran"
        assert {"ok1", "ok2", "after"} <= set(result.results)
        assert "crasher" not in result.results

        with pytest.raises(ParallelGroupError) as info:
            sup.run(_group_with_crasher("strict", tmp_path / "b"), start="g")
    err = info.value
    assert sorted(err.successful_tasks) == ["ok1", "ok2"]
    assert [t for t, _ in err.failed_tasks] == ["crasher"]
    assert "worker process died" in (err.failed_tasks[0][1] or "")


@pytest.mark.timeout(60)
def test_dead_lock_holder_releases_the_channel_lock(tmp_path: Path) -> None:
    log = tmp_path / "holder"
    with workflow("locks") as wf:

        @task(inject_context=True)
        def holder(ctx: Any) -> None:
            ch = ctx.get_channel()
            with ch.lock("k"):
                if _count_delivery(log) == 1:
                    _die("sigkill")  # dies holding the lock
                ch.atomic_add("n", 1)

        def waiter(ctx: Any) -> None:
            ch = ctx.get_channel()
            with ch.lock("k"):
                ch.atomic_add("n", 1)

        waiters = [TaskWrapper(f"w{i}", waiter, inject_context=True) for i in range(4)]
        parallel(holder, *waiters)

    with graflow.Supervisor(2) as sup:
        result = sup.run(wf)
    assert result.channel["n"] == 5
    assert result.stats.worker_deaths == 1


# -- timeouts -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_task_timeout_kills_the_worker_and_the_pool_keeps_working(start_method: str) -> None:
    with workflow("slow") as wf:

        @task(timeout_s=0.5)
        def slow() -> None:
            time.sleep(60)

    with workflow("fine") as wf2:

        @task(timeout_s=30)
        def quick() -> int:
            return 1

        @task
        def plain(quick: int) -> int:
            return quick + 1

        quick >> plain

    with graflow.Supervisor(2, start_method=start_method) as sup:
        before = sup.worker_pids
        with pytest.raises(TaskTimeoutError) as info:
            sup.run(wf)
        after = sup.worker_pids
        assert sup.run(wf2).value == 2
        assert sup.run(wf2).results == {"quick": 1, "plain": 2}
    err = info.value
    assert (err.task_id, err.timeout_s) == ("slow", 0.5)
    assert "slow" in str(err)
    assert len(set(before) & set(after)) == 1  # the timed-out worker was replaced


@pytest.mark.timeout(60)
def test_task_timeout_goes_through_the_retry_path(tmp_path: Path) -> None:
    log = tmp_path / "deliveries"
    with workflow("slow") as wf:

        @task(timeout_s=0.3, max_retries=1)
        def slow() -> None:
            _count_delivery(log)
            time.sleep(60)

    with graflow.Supervisor(2) as sup, pytest.raises(RetryLimitExceededError) as info:
        sup.run(wf)
    assert isinstance(info.value.cause, TaskTimeoutError)
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.timeout(60)
def test_whole_run_timeout_raises_workflow_timeout() -> None:
    with workflow("slow") as wf:

        @task
        def slow() -> None:
            time.sleep(60)

    with pytest.raises(WorkflowTimeoutError) as info:
        graflow.run(wf, processes=2, timeout_s=0.5)
    assert info.value.timeout_s == 0.5


# -- values that cannot cross a process boundary ------------------------------------------


def _failing_wf(kind: str) -> Any:
    with workflow("bad") as wf:
        if kind == "result":

            @task
            def bad() -> Any:
                return threading.Lock()

        elif kind == "exception":

            @task
            def bad() -> Any:
                raise LockedError("with a lock inside")

        elif kind == "unloadable_exception":

            @task
            def bad() -> Any:
                raise TwoArgError("left", "right")

        elif kind == "unloadable_result":

            @task
            def bad() -> Any:
                return Unloadable()

    return wf


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind", ["result", "exception", "unloadable_exception", "unloadable_result"]
)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_unpicklable_value_becomes_task_error(kind: str, start_method: str) -> None:
    with graflow.Supervisor(2, start_method=start_method) as sup:
        with pytest.raises(TaskError) as info:
            sup.run(_failing_wf(kind))
        assert sup.run(_group_of_fine_tasks(10)).channel["n"] == 10  # the pool still works
    err = info.value
    assert err.task_id == "bad"
    assert "'bad'" in str(err)
    assert not isinstance(err, WorkerLost)


def test_unpicklable_exception_message_names_the_original_error() -> None:
    with pytest.raises(TaskError) as info:
        graflow.run(_failing_wf("exception"), processes=1)
    assert "LockedError" in str(info.value)
    assert "with a lock inside" in str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make_bad", [threading.Lock, Unloadable])
def test_bad_result_fails_only_its_own_task_in_a_batch(make_bad: Any) -> None:
    with workflow("mixed") as wf:

        def fine(i: int = 0) -> dict[str, list[int]]:
            return {"seven": [7]}

        @task
        def bad() -> Any:
            return make_bad()

        members = [TaskWrapper(f"fine{i}", fine) for i in range(20)]
        group = parallel(*members[:10], bad, *members[10:]).set_group_name("g")

        @task
        def after() -> str:
            return "after ran"

        group.with_execution(policy="best_effort") >> after

    result = graflow.run(wf, processes=2, start="g")
    assert result.value == "after ran"
    assert [result.results[f"fine{i}"] for i in range(20)] == [{"seven": [7]}] * 20
    assert "bad" not in result.results


@pytest.mark.timeout(60)
def test_unpicklable_argument_becomes_task_error() -> None:
    with workflow("arg") as wf:

        @task
        def uses(guard: Any) -> int:
            return 1

    with pytest.raises(TaskError) as info:
        graflow.run(wf, processes=2, initial_channel={"guard": threading.Lock()})
    assert info.value.task_id == "uses"
    assert "arguments could not be sent" in str(info.value)


# -- recycling and reuse ------------------------------------------------------------------


def _group_of_fine_tasks(count: int) -> Any:
    with workflow("many") as wf:

        def member(ctx: Any) -> int:
            ctx.get_channel().atomic_add("n", 1)
            return os.getpid()

        parallel(*[TaskWrapper(f"m{i}", member, inject_context=True) for i in range(count)])
    return wf


@pytest.mark.timeout(90)
def test_workers_recycle_after_max_tasks() -> None:
    with graflow.Supervisor(2, max_tasks_per_worker=50) as sup:
        before = set(sup.worker_pids)
        result = sup.run(_group_of_fine_tasks(500))
        after = set(sup.worker_pids)
    assert result.channel["n"] == 500
    assert {f"m{i}" for i in range(500)} <= set(result.results)
    pids = {result.results[f"m{i}"] for i in range(500)}
    assert len(pids) > 2
    assert before != after
    assert result.stats.worker_deaths == 0  # retiring is not dying


@pytest.mark.timeout(90)
def test_workers_recycle_above_rss_limit() -> None:
    with graflow.Supervisor(2, max_rss_mb=1) as sup:
        before = set(sup.worker_pids)
        result = sup.run(_group_of_fine_tasks(50))
        after = set(sup.worker_pids)
    assert result.channel["n"] == 50
    assert len({result.results[f"m{i}"] for i in range(50)}) > 2
    assert before.isdisjoint(after)
    assert result.stats.worker_deaths == 0


@pytest.mark.timeout(60)
def test_reused_supervisor_keeps_its_workers() -> None:
    with graflow.Supervisor(2) as sup:
        pids = sup.worker_pids
        for count in (3, 30, 300):
            result = sup.run(_group_of_fine_tasks(count))
            assert result.channel["n"] == count
            assert {result.results[f"m{i}"] for i in range(count)} <= set(pids)
            assert sup.worker_pids == pids


# -- shared memory ------------------------------------------------------------------------

_BLOB = bytes(range(256)) * 4096  # 1 MiB


def _large_values_wf() -> Any:
    with workflow("large") as wf:

        @task(inject_context=True)
        def make_bytes(ctx: Any) -> bytes:
            ctx.get_channel().append("pids", os.getpid())
            return bytes(range(256)) * 4096

        @task(inject_context=True)
        def make_array(ctx: Any, make_bytes: bytes) -> Any:
            ctx.get_channel().append("pids", os.getpid())
            return np.frombuffer(make_bytes, dtype=np.uint8).astype(np.float64)

        @task(inject_context=True)
        def check(ctx: Any, make_bytes: bytes, make_array: Any) -> tuple[int, str, float]:
            ctx.get_channel().append("pids", os.getpid())
            digest = hashlib.sha256(make_bytes).hexdigest()
            return len(make_bytes), digest, float(make_array.sum())

        make_bytes >> make_array >> check
    return wf


def _assert_large_results(result: Any) -> None:
    assert result.results["make_bytes"] == _BLOB
    expected = np.frombuffer(_BLOB, dtype=np.uint8).astype(np.float64)
    assert np.array_equal(result.results["make_array"], expected)
    assert result.value == (len(_BLOB), hashlib.sha256(_BLOB).hexdigest(), float(expected.sum()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes,start_method", [(0, None), (2, "fork"), (2, "spawn")])
def test_large_values_round_trip_through_shared_memory(
    processes: int, start_method: str | None
) -> None:
    if processes == 0:
        result = graflow.run(_large_values_wf(), processes=0)
        _assert_large_results(result)
        return
    with graflow.Supervisor(processes, start_method=start_method) as sup:
        pids = {os.getpid(), *sup.worker_pids}
        result = sup.run(_large_values_wf())
        assert _segments_of(pids | set(result.channel["pids"])) == []
    _assert_large_results(result)
    assert _segments_of(pids | set(result.channel["pids"])) == []


@pytest.mark.timeout(60)
def test_no_segment_left_when_worker_dies_while_returning_a_large_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker is killed between writing its result to a segment and sending the segment's
    # name: only the supervisor's sweep can remove that segment. Forked workers inherit the
    # patch; the driver (which also writes segments for large arguments) is spared.
    victims = tmp_path / "victims"
    driver = os.getpid()
    real_store = shm._store  # every segment is written by it (shared results, message buffers)

    def store_then_die(*args: Any, **kwargs: Any) -> Any:
        refs = real_store(*args, **kwargs)
        if os.getpid() != driver and not victims.exists():
            victims.write_text(f"{os.getpid()}\n")
            assert _segments_of({os.getpid()}) != []
            os.kill(os.getpid(), signal.SIGKILL)
        return refs

    monkeypatch.setattr(shm, "_store", store_then_die)
    with graflow.Supervisor(2, start_method="fork") as sup:
        pids = {driver, *sup.worker_pids}
        result = sup.run(_large_values_wf())
        pids |= set(sup.worker_pids) | set(result.channel["pids"])
    victim = int(victims.read_text())
    _assert_large_results(result)
    assert result.stats.worker_deaths == 1
    assert _segments_of(pids | {victim}) == []


# -- the channel across processes ---------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes,start_method", [(0, None), (3, "fork"), (2, "spawn")])
def test_channel_lock_is_exclusive_across_workers(processes: int, start_method: str | None) -> None:
    with workflow("counter") as wf:

        def bump(ctx: Any) -> None:
            ch = ctx.get_channel()
            for _ in range(5):
                with ch.lock("k"):
                    value = ch.get("n", 0)
                    time.sleep(0.002)  # widen the race the lock must close
                    ch.set("n", value + 1)

        parallel(*[TaskWrapper(f"bump{i}", bump, inject_context=True) for i in range(8)])

    result = graflow.run(wf, processes=processes, start_method=start_method)
    assert result.channel["n"] == 40


def _wait_until_dead(pid: int) -> None:
    """Poll until ``pid`` has exited (a zombie, since its parent has not reaped it yet)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not die")


@pytest.mark.timeout(60)
def test_no_segment_left_when_a_large_graph_is_sent_to_a_dead_worker() -> None:
    # The graph (a task captures a large constant) goes to each worker through a segment the
    # driver writes; the send fails, the worker being gone: the driver must remove it.
    with workflow("big") as wf:
        constant = _BLOB

        def size(blob: bytes) -> int:
            return len(blob) + len(constant)

        parallel(*[TaskWrapper(f"m{i}", size) for i in range(4)])

    with graflow.Supervisor(2) as sup:
        victim = sup.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        _wait_until_dead(victim)
        result = sup.run(wf, initial_channel={"blob": _BLOB})
        assert _segments_of({os.getpid()}) == []
    assert {result.results[f"m{i}"] for i in range(4)} == {2 * len(_BLOB)}
    assert result.stats.worker_deaths == 1
    assert _segments_of({os.getpid(), victim}) == []


@pytest.mark.timeout(60)
def test_no_segment_left_when_a_worker_dies_with_unread_arguments(tmp_path: Path) -> None:
    # While one worker runs a slow task, batches with a large argument keep being sent to
    # both workers; the slow one dies with some of them still unread in its pipe.
    log = tmp_path / "deliveries"
    with workflow("unread") as wf:

        def warm() -> int:
            return 0

        @task
        def slow() -> int:
            time.sleep(0.5)
            if _count_delivery(log) == 1:
                _die("exit")
            return 1

        def size(blob: bytes) -> int:
            return len(blob)

        members = [chain(*[TaskWrapper(f"m{i}_{j}", size) for j in range(4)]) for i in range(200)]
        warmup = chain(*[TaskWrapper(f"w{i}", warm) for i in range(30)])
        warmup >> parallel(slow, *members).set_group_name("g")

    with graflow.Supervisor(2) as sup:
        result = sup.run(wf, start="w0", initial_channel={"blob": _BLOB})
        assert _segments_of({os.getpid()}) == []
    assert result.results["slow"] == 1
    assert {result.results[f"m{i}_3"] for i in range(200)} == {len(_BLOB)}
    assert _segments_of({os.getpid()}) == []


class _Bomb:
    """A value that pickles, and kills the process that unpickles it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))


@pytest.mark.timeout(60)
def test_argument_that_kills_its_worker_when_decoded_ends_in_worker_lost() -> None:
    with workflow("bomb") as wf:

        @task
        def defuse(bomb: Any) -> None:
            return None

    with graflow.Supervisor(2) as sup, pytest.raises(WorkerLost) as info:
        sup.run(wf, initial_channel={"bomb": _Bomb()})
    assert info.value.task_id == "defuse"
    assert info.value.deliveries == 3
