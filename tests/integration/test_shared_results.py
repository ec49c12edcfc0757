"""Large bytes results on the process pool: kept in shared memory, forwarded by name.

A result of a megabyte or more stays in a segment the supervisor adopts; the tasks that
take it as an argument read it from there, the channel and RunResult get the same bytes,
and no segment is left in /dev/shm after the run, even when the worker that made the value
was killed before anybody read it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import parallel, workflow
from graflow.core.task import TaskWrapper
from graflow.mp import shm

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
    with graflow.Supervisor(2) as pool:
        yield pool


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


def test_the_value_outlives_the_worker_that_made_it(
    sup: graflow.Supervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"

    def kill_my_worker_once() -> str:
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    with workflow("outlive") as wf:
        a = TaskWrapper("a", _payload)
        kill = TaskWrapper("kill", kill_my_worker_once)
        b = TaskWrapper("b", lambda a: len(a))
        a >> kill >> b
    result = sup.run(wf, start="a")
    assert result.stats.worker_deaths == 1
    assert result.value == len(_payload())
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
