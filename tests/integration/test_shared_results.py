"""Large bytes results on the process pool: kept in shared memory, forwarded by name.

A result of a megabyte or more stays in a segment the supervisor adopts; the tasks that
take it as an argument read it from there, the channel and RunResult get the same bytes,
and no segment is left in /dev/shm after the run, even when the worker that made the value
was killed before anybody read it.
"""

from __future__ import annotations

import gc
import mmap
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graflow
from graflow import parallel, workflow
from graflow.core.task import TaskWrapper
from graflow.mp import mapped, shm

_SEGMENT = re.compile(r"graflow_(\d+)_[0-9a-f]+")
SIZE = 3 * 1024 * 1024 + 17


def _segments_of(pids: set[int]) -> list[str]:
    return [
        name
        for name in os.listdir(shm.SHM_DIR)
        if (m := _SEGMENT.fullmatch(name)) is not None and int(m.group(1)) in pids
    ]


@pytest.fixture
def sup() -> Iterator[graflow.Supervisor]:
    _drop_dead_values()  # values of earlier tests would be inherited by the forked workers
    with graflow.Supervisor(2) as pool:
        yield pool


def _drop_dead_values() -> None:
    gc.collect()  # a run's scheduler is freed by the collector (it is part of a cycle)
    mapped.collect()


def _payload(kind: type = bytes) -> Any:
    data = bytes(range(256)) * (SIZE // 256) + b"tail"
    return data if kind is bytes else bytearray(data)


def test_a_large_result_reaches_every_consumer_and_the_result(sup: graflow.Supervisor) -> None:
    with workflow("fanout") as wf:
        a = TaskWrapper("a", _payload)
        left = TaskWrapper("left", lambda a: (type(a).__name__, len(a), a[-4:]))
        right = TaskWrapper("right", lambda a: hash(a))
        a >> parallel(left, right)
    result = sup.run(wf, start="a")
    expected = _payload()
    assert result.results["a"] == expected
    assert type(result.results["a"]) is bytes
    assert result.results["left"] == ("bytes", len(expected), b"tail")
    assert result.results["right"] == hash(expected)
    assert result.channel["a.__result__"] == expected
    pids = {os.getpid(), *sup.worker_pids}
    assert _segments_of(pids) == []


def test_a_bytearray_stays_a_bytearray(sup: graflow.Supervisor) -> None:
    with workflow("ba") as wf:
        a = TaskWrapper("a", lambda: _payload(bytearray))
        b = TaskWrapper("b", lambda a: (type(a).__name__, bytes(a[:3])))
        a >> b
    result = sup.run(wf, start="a")
    assert result.value == ("bytearray", b"\x00\x01\x02")
    assert result.results["a"] == _payload(bytearray)
    assert type(result.results["a"]) is bytearray


def test_a_large_final_value_and_a_read_through_the_context(sup: graflow.Supervisor) -> None:
    with workflow("final") as wf:
        a = TaskWrapper("a", _payload)
        probe = TaskWrapper(
            "probe", lambda ctx: len(ctx.get_channel().get("a.__result__")), inject_context=True
        )
        last = TaskWrapper("last", lambda probe: _payload())
        a >> probe >> last
    result = sup.run(wf, start="a")
    assert result.results["probe"] == len(_payload())
    assert result.value == _payload()
    assert type(result.value) is bytes


@pytest.mark.parametrize(
    "make, measure", [("bytes", lambda a: len(a)), ("array", lambda a: float(a.sum()))]
)
def test_the_value_outlives_the_worker_that_made_it(
    sup: graflow.Supervisor, tmp_path: Path, make: str, measure: Any
) -> None:
    marker = tmp_path / "killed"
    maker = _payload if make == "bytes" else _matrix

    def kill_my_worker_once() -> str:
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    with workflow("outlive") as wf:
        a = TaskWrapper("a", maker)
        kill = TaskWrapper("kill", kill_my_worker_once)
        b = TaskWrapper("b", measure)
        a >> kill >> b
    result = sup.run(wf, start="a")
    assert result.stats.worker_deaths == 1
    assert result.value == measure(maker())
    assert _segments_of({os.getpid(), *sup.worker_pids}) == []


def test_many_large_results_in_one_run_leave_nothing(sup: graflow.Supervisor) -> None:
    with workflow("many") as wf:
        makers = [TaskWrapper(f"m{i}", lambda i=i: bytes([i]) * SIZE) for i in range(6)]
        total = TaskWrapper("total", lambda ctx: 0, inject_context=True)
        parallel(*makers).set_group_name("makers") >> total
    result = sup.run(wf, start="makers")
    for i in range(6):
        assert result.results[f"m{i}"] == bytes([i]) * SIZE
    assert _segments_of({os.getpid(), *sup.worker_pids}) == []


# -- mapped, not copied (graflow.mp.mapped) ---------------------------------------------------
_KEPT: list[bytes] = []


def _keep(a: bytes) -> int:
    # Defined at module level: the worker runs this module's function, whose _KEPT lives on.
    _KEPT.append(a)
    return len(_KEPT)


def _reread() -> list[tuple[int, bytes, int]]:
    return [(len(v), v[-4:], hash(v)) for v in _KEPT]


def _graflow_mappings(pid: int) -> int:
    with open(f"/proc/{pid}/maps") as maps:
        return sum(1 for line in maps if _SEGMENT.search(line))


def _eventually(check: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_workers_unmap_values_once_their_tasks_are_done(sup: graflow.Supervisor) -> None:
    with workflow("unmap") as wf:
        a = TaskWrapper("a", _payload)
        b = TaskWrapper("b", lambda a: a[-4:])
        a >> b
    for _ in range(8):
        assert sup.run(wf, start="a").value == b"tail"
    for pid in sup.worker_pids:
        assert _eventually(lambda pid=pid: _graflow_mappings(pid) == 0), pid


def test_a_value_a_task_keeps_stays_valid_in_later_runs() -> None:
    _drop_dead_values()
    # Without chain lookahead: b would run right after a on the same worker and take a's own
    # object, where this test is about the mapped one.
    with graflow.Supervisor(1, chain_lookahead=0) as one:
        with workflow("keep") as wf:
            a = TaskWrapper("a", _payload)
            b = TaskWrapper("b", _keep)
            a >> b
        with workflow("reread") as later:
            TaskWrapper("c", _reread)
        assert one.run(wf, start="a").value == 1
        assert one.run(wf, start="a").value == 2
        (worker,) = one.worker_pids
        assert _segments_of({os.getpid(), worker}) == []  # the names went, the mappings stay
        expected = (len(_payload()), b"tail", hash(_payload()))
        assert one.run(later, start="c").value == [expected, expected]
        assert _graflow_mappings(worker) == 2
    assert _KEPT == []  # the driver's own list was never touched


def test_the_drivers_copy_stays_valid_after_the_pool_is_gone() -> None:
    _drop_dead_values()
    before = mapped.mapped_count()
    with graflow.Supervisor(1) as one:
        with workflow("driver") as wf:
            TaskWrapper("a", _payload)
        result = one.run(wf, start="a")
    value = result.results["a"]
    assert type(value) is bytes and value == _payload()
    assert mapped.mapped_count() == before + 1
    del value, result
    _drop_dead_values()
    assert mapped.mapped_count() == before


# -- numpy arrays: forwarded like bytes, mapped copy-on-write -----------------------------------


def _matrix(order: str = "C") -> Any:
    return np.asarray(np.arange(600 * 700, dtype=np.float64).reshape(600, 700), order=order)


def _array_wf(make: Any) -> Any:
    def consume(a: Any) -> tuple[Any, ...]:
        view = a.base  # array -> ... -> memoryview -> mmap: mapped, not copied
        while view is not None and not isinstance(view, mmap.mmap):
            view = view.obj if isinstance(view, memoryview) else getattr(view, "base", None)
        a[0, 0] = -1.0  # writable; the write stays in this task's copy
        return (
            type(a).__name__,
            a.dtype.str,
            a.shape,
            float(a.sum()),
            isinstance(view, mmap.mmap),
            _mapping_perms(a.ctypes.data),
        )

    with workflow("arrays") as wf:
        a = TaskWrapper("a", make)
        left = TaskWrapper("left", consume)
        right = TaskWrapper("right", consume)
        a >> parallel(left, right)
    return wf


def _mapping_perms(address: int) -> str:
    """The permissions of this process's mapping at ``address`` ("rw-p": private)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return perms
    return "?"


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_large_array_reaches_every_consumer_mapped(sup: graflow.Supervisor, order: str) -> None:
    result = sup.run(_array_wf(lambda: _matrix(order)), start="a")
    expected = _matrix(order)
    total = float(expected.sum()) - 0.0 - 1.0  # element [0, 0] is 0.0, then set to -1
    # Mapped copy-on-write ("p"): the segment A wrote, forwarded by the supervisor (what it
    # re-encoded would arrive through a shared mapping, "s").
    assert result.results["left"] == ("ndarray", "<f8", (600, 700), total, True, "rw-p")
    assert result.results["right"] == result.results["left"]
    value = result.results["a"]
    np.testing.assert_array_equal(value, expected)  # the consumers' writes stayed theirs
    assert value.flags.writeable and value.flags.f_contiguous == (order == "F")
    assert _segments_of({os.getpid(), *sup.worker_pids}) == []


def test_structured_and_strided_arrays_arrive_intact(sup: graflow.Supervisor) -> None:
    rec = np.dtype([("id", "<i8"), ("score", "<f4"), ("tag", "S6")])

    def make_both() -> dict[str, Any]:
        records = np.zeros(200_000, dtype=rec)
        records["id"] = np.arange(200_000)
        records["tag"] = b"row"
        return {"records": records, "strided": _matrix()[:, ::2]}

    with workflow("mixed2") as wf2:
        a2 = TaskWrapper("a", lambda: make_both()["records"])
        s2 = TaskWrapper("s", lambda a: make_both()["strided"])
        check2 = TaskWrapper(
            "check",
            lambda a, s: (a.dtype == rec, int(a["id"][-1]), bytes(a["tag"][5]), s.shape),
        )
        a2 >> s2 >> check2
    result = sup.run(wf2, start="a")
    assert result.value == (True, 199_999, b"row", (600, 350))
    np.testing.assert_array_equal(result.results["s"], _matrix()[:, ::2])


def _churn(a: bytes, i: int) -> tuple[int, int, bool]:
    # Keep some values past the task (module state of the worker), drop others: the next
    # collects must unmap exactly the dropped ones, and what is kept must stay readable.
    if i % 3 == 0:
        _KEPT.append(a)
        if len(_KEPT) > 4:
            del _KEPT[:2]
    intact = all(len(v) == len(a) and v[-4:] == b"tail" and v[i] == i for v in _KEPT)
    return len(a), a[i], intact


def test_many_runs_of_mapped_values_never_crash_a_worker(sup: graflow.Supervisor) -> None:
    with workflow("churn") as wf:
        a = TaskWrapper("a", _payload)
        consumers = [TaskWrapper(f"c{i}", lambda a, i=i: _churn(a, i)) for i in range(8)]
        a >> parallel(*consumers).set_group_name("consumers")
    deaths = 0
    for _ in range(25):
        result = sup.run(wf, start="a")
        deaths += result.stats.worker_deaths
        assert [result.results[f"c{i}"] for i in range(8)] == [
            (len(_payload()), i, True) for i in range(8)
        ]
    assert deaths == 0  # a read after an unmap would have killed a worker
    for pid in sup.worker_pids:
        # At most what the workers keep (4 each), once the last values were collected.
        assert _eventually(lambda pid=pid: _graflow_mappings(pid) <= 4), pid
