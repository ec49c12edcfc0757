"""The node host keeps its workers' leases and enforces timeout_s (issue 14, points 7, 8).

A task that holds the GIL in one long C call starves its worker's own heartbeat thread; the
node's host process keeps the lease instead, so the task runs once although it outlasts the
lease. A task past ``timeout_s`` on a node fails with TaskTimeoutError: the host kills its
worker and starts another.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import graflow
from graflow import workflow
from graflow.core.task import TaskWrapper
from graflow.exceptions import TaskTimeoutError
from tests.conftest import RedisNode


def _gil_exponent(target_s: float) -> int:
    """An exponent e such that pow(3, e), one C call holding the GIL, takes about target_s."""
    e = 100_000
    while True:
        start = time.perf_counter()
        pow(3, e)
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            return int(e * (target_s / elapsed) ** (1 / 1.585))  # Karatsuba: n ** 1.585
        e *= 2


@pytest.mark.timeout(120)
def test_a_task_holding_the_gil_past_its_lease_runs_once(
    redis_node: RedisNode, tmp_path: Path
) -> None:
    # The node's lease is 1 s; the call holds the GIL for a few seconds (calibrated here,
    # where the machine is busier than in the worker).
    exponent = _gil_exponent(10.0)
    marks = str(tmp_path / "ran")

    def hold_gil() -> int:
        with open(marks, "a") as out:
            out.write(f"{os.getpid()}\n")
        started = time.perf_counter()
        value = pow(3, exponent) % 1000
        with open(marks + ".held", "a") as out:
            out.write(f"{time.perf_counter() - started:.2f}\n")
        return value

    with workflow("gil") as wf:
        TaskWrapper("hold_gil", hold_gil)
    # A second node on the same queue: its idle workers reclaim any entry whose lease ran out.
    other = RedisNode(redis_node.url, redis_node.queue).start()
    try:
        result = graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=90)
    finally:
        other.stop()
    assert result.value == pow(3, exponent, 1000)
    held = [float(x) for x in Path(marks + ".held").read_text().split()]
    assert max(held) > 2.0, held  # it did hold the GIL past the 1 s lease
    assert len(Path(marks).read_text().split()) == 1


@pytest.mark.timeout(120)
def test_timeout_s_is_enforced_on_a_node(redis_node: RedisNode, tmp_path: Path) -> None:
    marks = str(tmp_path / "ran")

    def slow() -> str:
        with open(marks, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(40)
        return "late"

    async def slow_async() -> str:
        import asyncio  # noqa: PLC0415 - the task travels by value

        await asyncio.sleep(40)
        return "late"

    for body, name in ((slow, "slow"), (slow_async, "slow_async")):
        with workflow(name) as wf:
            TaskWrapper(name, body, timeout_s=2)
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError, match="timed out after 2 s"):
            graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=60)
        assert time.monotonic() - started < 30
    assert len(Path(marks).read_text().split()) == 1  # failed, not retried elsewhere
    deadline = time.monotonic() + 20
    while len(redis_node.worker_pids()) < redis_node.processes:  # the killed one is replaced
        assert time.monotonic() < deadline, "the host did not replace the killed worker"
        time.sleep(0.05)
