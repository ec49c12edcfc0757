"""Chaos for the async lane: a worker SIGKILLed while it holds 200 async tasks.

Every task must complete once in the results, with the values of a calm run: the dead
worker's tasks are redelivered (none of them is charged a delivery: none was the cpu item
that killed it), and the run does not wait for them longer than it takes to notice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import parallel, workflow
from graflow.core.task import TaskWrapper

TASKS = 400
_DEADLINE_S = 60.0


def _member(i: int, marks: str) -> TaskWrapper:
    async def body(ctx: Any) -> int:
        # One marker per process that started it: the test kills a process holding many.
        Path(marks, f"{os.getpid()}.{i}").touch()
        await asyncio.sleep(1.0)
        return i * i

    return TaskWrapper(f"a{i}", body, inject_context=True)


def _workflow(marks: str) -> Any:
    with workflow("async-chaos") as wf:
        parallel(*[_member(i, marks) for i in range(TASKS)])
    return wf


def _kill_a_busy_worker(sup: graflow.Supervisor, marks: str, killed: list[int]) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while time.monotonic() < deadline:
        started: dict[int, int] = {}
        for name in os.listdir(marks):
            pid = int(name.split(".")[0])
            started[pid] = started.get(pid, 0) + 1
        busy = [pid for pid, count in started.items() if count >= 200 and pid in sup.worker_pids]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.01)


@pytest.mark.timeout(180)
def test_a_worker_killed_holding_200_async_tasks_loses_none() -> None:
    with tempfile.TemporaryDirectory() as calm_marks:
        with graflow.Supervisor(2) as sup:
            calm = sup.run(_workflow(calm_marks), timeout_s=_DEADLINE_S)
    expected = {f"a{i}": i * i for i in range(TASKS)}
    assert {k: v for k, v in calm.results.items() if k.startswith("a")} == expected

    with tempfile.TemporaryDirectory() as marks, graflow.Supervisor(2) as sup:
        killed: list[int] = []
        killer = threading.Thread(target=_kill_a_busy_worker, args=(sup, marks, killed))
        killer.start()
        result = sup.run(_workflow(marks), timeout_s=_DEADLINE_S)
        killer.join()
        assert killed, "no worker ever held 200 async tasks at once"
        held = sum(1 for name in os.listdir(marks) if name.startswith(f"{killed[0]}."))
        assert held >= 200
    assert {k: v for k, v in result.results.items() if k.startswith("a")} == expected
    assert result.completed.count("a0") == 1
    assert sorted(c for c in result.completed if c.startswith("a")) == sorted(expected)
    assert result.stats.worker_deaths == 1
