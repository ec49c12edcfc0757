"""Bad input for io and async tasks, and for lane sizes: a clear error naming the fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import graflow
from graflow import task, workflow
from graflow.config import Settings, lane_sizes
from graflow.core.task import ASYNC_LANE, CPU_LANE, IO_LANE
from graflow.exceptions import ConfigError, TaskError


def test_an_async_generator_cannot_be_a_task() -> None:
    async def numbers() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ConfigError, match=r"async generator.*async def that returns a list"):
        task(numbers)


def test_io_true_on_an_async_function_says_to_drop_it() -> None:
    async def fetch() -> int:
        await asyncio.sleep(0)
        return 1

    with pytest.raises(ConfigError, match="drop io=True"):
        task(io=True)(fetch)


def test_the_lane_of_a_task_comes_from_its_function() -> None:
    async def a() -> int:
        return 1

    def b() -> int:
        return 2

    assert task(a).lane == ASYNC_LANE
    assert task(io=True)(b).lane == IO_LANE
    assert task(id="b2")(b).lane == CPU_LANE
    assert task(io=True)(b).bind(task_id="b3").lane == IO_LANE


def test_a_sync_task_returning_a_coroutine_fails_in_process() -> None:
    async def later() -> int:
        return 1

    with workflow("coro") as wf:

        @task
        def oops() -> object:
            return later()

    with pytest.raises(TaskError, match=r"returned a coroutine.*async def"):
        graflow.run(wf, processes=0)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"threads": 0}, "threads"), ({"max_async": -1}, "max_async"), ({"threads": 1.5}, "threads")],
)
def test_lane_sizes_no_worker_can_use_are_refused(options: dict[str, object], field: str) -> None:
    with workflow("one") as wf:

        @task
        def one() -> int:
            return 1

    with pytest.raises(ConfigError, match=f"{field} must be an int >= 1"):
        graflow.run(wf, processes=0, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{field} must be an int >= 1"):
        graflow.Supervisor(1, **options)  # type: ignore[arg-type]


def test_lane_sizes_come_from_the_environment_unless_given() -> None:
    env = {"GRAFLOW_THREADS": "4", "GRAFLOW_MAX_ASYNC": "50"}
    assert lane_sizes(None, None, env) == (4, 50)
    assert lane_sizes(8, None, env) == (8, 50)
    assert lane_sizes(None, None, {}) == (16, 1000)
    settings = Settings.from_env(env)
    assert (settings.threads, settings.max_async) == (4, 50)
    with pytest.raises(ConfigError, match="threads must be"):
        lane_sizes(None, None, {"GRAFLOW_THREADS": "0"})
    with pytest.raises(ConfigError, match="GRAFLOW_MAX_ASYNC"):
        lane_sizes(None, None, {"GRAFLOW_MAX_ASYNC": "many"})
