"""A task's exit is its failure, not its worker's death; max_rss_mb holds after every task.

Issue 14, points 12 and 13: ``sys.exit()``, ``SystemExit`` and ``KeyboardInterrupt`` raised
by a task end the run as they would in-process (raised from ``graflow.run``, the task run
once, no worker lost); a worker over ``max_rss_mb`` retires right after the task that grew
it, handing back the rest of its batch, even inside one chain that travelled as one batch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import chain, workflow
from graflow.core.task import TaskWrapper
from tests.conftest import RedisNode


def _exiting(kind: str, marks: Path) -> TaskWrapper:
    marks_dir = str(marks)

    def body() -> None:
        with open(os.path.join(marks_dir, "ran"), "a") as out:
            out.write(f"{os.getpid()}\n")
        if kind == "sys.exit":
            sys.exit(3)
        if kind == "SystemExit":
            raise SystemExit("bye")
        raise KeyboardInterrupt("stop")

    return TaskWrapper("leaver", body, max_retries=2)


def _expected(kind: str) -> type[BaseException]:
    return KeyboardInterrupt if kind == "KeyboardInterrupt" else SystemExit


def _runs(marks: Path) -> int:
    return len((marks / "ran").read_text().split())


@pytest.mark.parametrize("kind", ["sys.exit", "SystemExit", "KeyboardInterrupt"])
def test_an_exit_in_a_task_is_raised_as_in_process_on_the_pool(kind: str, tmp_path: Path) -> None:
    with workflow("leave") as wf:
        _exiting(kind, tmp_path)
    with pytest.raises(_expected(kind)) as in_process:
        graflow.run(wf, processes=0)
    with graflow.Supervisor(1) as sup:
        with pytest.raises(_expected(kind)) as pooled:
            sup.run(wf)
        assert sup.worker_deaths == 0
    assert str(pooled.value) == str(in_process.value)
    assert _runs(tmp_path) == 2  # once in-process, once on the pool: never retried


@pytest.mark.parametrize("kind", ["sys.exit", "KeyboardInterrupt"])
def test_an_exit_in_a_task_is_raised_as_in_process_on_redis(
    kind: str, redis_node: RedisNode, tmp_path: Path
) -> None:
    with workflow("leave") as wf:
        _exiting(kind, tmp_path)
    pids = set(redis_node.worker_pids())
    with pytest.raises(_expected(kind)):
        graflow.run(wf, redis=redis_node.url, queue=redis_node.queue, timeout_s=30)
    assert _runs(tmp_path) == 1
    assert set(redis_node.worker_pids()) == pids  # no worker died


_HOARD: list[bytearray] = []


def _grower(name: str, marks: Path) -> TaskWrapper:
    marks_dir = str(marks)

    def body(ctx: Any) -> int:
        with open(os.path.join(marks_dir, name), "w") as out:
            out.write(str(os.getpid()))
        _HOARD.append(bytearray(160 * 1024 * 1024))  # a leak the worker keeps
        return len(_HOARD)

    return TaskWrapper(name, body, inject_context=True)


def test_max_rss_is_checked_after_every_task_of_a_chain(tmp_path: Path) -> None:
    # The chain travels to one worker as one batch (chain lookahead); each task leaks
    # 160 MiB. Checked only between batches, one worker would hold all 480 MiB.
    with workflow("grow") as wf:
        chain(*[_grower(f"g{i}", tmp_path) for i in range(3)])
    with graflow.Supervisor(1, max_rss_mb=150) as sup:
        result = sup.run(wf, start="g0")
    assert result.results == {"g0": 1, "g1": 1, "g2": 1}  # each in a fresh worker
    pids = {(tmp_path / f"g{i}").read_text() for i in range(3)}
    assert len(pids) == 3
