"""The contract suite for io and async tasks: the same workflows, the same results, everywhere.

``async def`` tasks run on each worker process's event loop and ``@task(io=True)`` tasks on
its thread pool; everything a plain task can do they do too: results by parameter name,
retries, group policies, next_task/goto/next_iteration, terminate, channels, injected
contexts. Each test runs in-process, on the pool (fork and spawn) and on a Redis node.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from graflow import RetryPolicy, parallel, task, workflow
from graflow.core.policy import BestEffortGroupPolicy
from graflow.core.task import TaskWrapper
from graflow.exceptions import GraflowError
from tests.conftest import Runner

_MEET_S = 20.0  # how long tasks that must overlap wait for each other before failing


def test_results_flow_by_parameter_name_through_every_lane(run_on: Runner) -> None:
    with workflow("lanes") as wf:

        @task
        async def extract() -> list[int]:
            await asyncio.sleep(0.01)
            return [1, 2, 3]

        @task(io=True)
        def transform(extract: list[int]) -> list[int]:
            time.sleep(0.01)
            return [x * 10 for x in extract]

        @task
        def load(transform: list[int], suffix: str = "!") -> str:
            return f"{sum(transform)}{suffix}"

        @task
        async def report(load: str) -> str:
            return f"loaded {load}"

        extract >> transform >> load >> report

    result = run_on(wf, initial_channel={"suffix": "?"})
    assert result.value == "loaded 60?"
    assert result.results == {
        "extract": [1, 2, 3],
        "transform": [10, 20, 30],
        "load": "60?",
        "report": "loaded 60?",
    }
    assert result.completed == ["extract", "transform", "load", "report"]


def _meeting(kind: str, task_id: str, name: str, count: int) -> TaskWrapper:
    """A task that returns only once ``count`` tasks of meeting ``name`` are in flight."""

    def arrive(ctx: Any) -> int:
        return int(ctx.get_channel().atomic_add(f"{name}.in", 1))

    def met(ctx: Any) -> bool:
        return int(ctx.get_channel().get(f"{name}.in", 0)) >= count

    if kind == "io":

        def body(ctx: Any) -> int:
            arrive(ctx)
            deadline = time.monotonic() + _MEET_S
            while not met(ctx):
                assert time.monotonic() < deadline, f"{name}: the io tasks did not overlap"
                time.sleep(0.01)
            return 1

        return TaskWrapper(task_id, body, inject_context=True, io=True)

    async def async_body(ctx: Any) -> int:
        arrive(ctx)
        deadline = time.monotonic() + _MEET_S
        while not met(ctx):
            assert time.monotonic() < deadline, f"{name}: the async tasks did not overlap"
            await asyncio.sleep(0.01)
        return 1

    return TaskWrapper(task_id, async_body, inject_context=True)


@pytest.mark.parametrize("kind", ["io", "async"])
def test_io_and_async_tasks_run_at_the_same_time(run_on: Runner, kind: str) -> None:
    # 12 tasks that each wait until all 12 are running: more than one process holds, so
    # the run finishes only if each process runs many of them at once.
    with workflow("meet") as wf:
        parallel(*[_meeting(kind, f"m{i}", "meet", 12) for i in range(12)])
    result = run_on(wf)
    assert {k: v for k, v in result.results.items() if k[0] == "m"} == {
        f"m{i}": 1 for i in range(12)
    }


def test_a_cpu_task_does_not_hold_up_async_and_io_tasks(run_on: Runner) -> None:
    # The cpu task waits until the io and async tasks beside it have all finished; on a
    # backend that ran them only after it, the run would fail.
    with workflow("beside") as wf:

        @task(inject_context=True)
        def crunch(ctx: Any) -> str:
            channel = ctx.get_channel()
            deadline = time.monotonic() + _MEET_S
            while int(channel.get("done", 0)) < 8:
                assert time.monotonic() < deadline, "io/async tasks waited for the cpu task"
                time.sleep(0.01)
            return "crunched"

        def sleeper(i: int) -> TaskWrapper:
            if i % 2:

                def io_body(ctx: Any) -> int:
                    time.sleep(0.05)
                    ctx.get_channel().atomic_add("done", 1)
                    return i

                return TaskWrapper(f"s{i}", io_body, inject_context=True, io=True)

            async def async_body(ctx: Any) -> int:
                await asyncio.sleep(0.05)
                ctx.get_channel().atomic_add("done", 1)
                return i

            return TaskWrapper(f"s{i}", async_body, inject_context=True)

        parallel(crunch, *[sleeper(i) for i in range(8)])

    result = run_on(wf)
    assert result.results["crunch"] == "crunched"
    assert result.channel["done"] == 8


def test_retries_of_async_and_io_tasks(run_on: Runner) -> None:
    with workflow("retry") as wf:

        @task(inject_context=True, max_retries=2)
        async def flaky_async(ctx: Any) -> str:
            if ctx.get_channel().atomic_add("async_tries", 1) < 3:
                raise RuntimeError("not yet")
            return "async ok"

        @task(
            inject_context=True,
            io=True,
            retry_policy=RetryPolicy(max_retries=2, initial_interval=0.01, jitter=False),
        )
        def flaky_io(ctx: Any) -> str:
            if ctx.get_channel().atomic_add("io_tries", 1) < 3:
                raise RuntimeError("not yet")
            return "io ok"

        flaky_async >> flaky_io

    result = run_on(wf)
    assert result.results == {"flaky_async": "async ok", "flaky_io": "io ok"}
    assert result.channel["async_tries"] == 3
    assert result.channel["io_tries"] == 3


def test_a_group_policy_over_async_and_io_members(run_on: Runner) -> None:
    with workflow("policy") as wf:

        @task
        async def good_async() -> int:
            return 1

        @task
        async def bad_async() -> int:
            raise ValueError("async member fails")

        @task(io=True)
        def good_io() -> int:
            return 2

        @task(io=True)
        def bad_io() -> int:
            raise ValueError("io member fails")

        @task
        def after() -> str:
            return "after the group"

        group = (good_async | bad_async | good_io | bad_io).with_execution(
            policy=BestEffortGroupPolicy()
        )
        group >> after

    result = run_on(wf)
    assert result.results["good_async"] == 1
    assert result.results["good_io"] == 2
    assert result.results["after"] == "after the group"


def test_goto_loop_and_terminate_from_async_and_io_tasks(run_on: Runner) -> None:
    with workflow("agent") as wf:

        @task(inject_context=True)
        async def agent(ctx: Any) -> str:
            n = ctx.get_channel().atomic_add("turns", 1)
            await asyncio.sleep(0)
            if n >= 3:
                ctx.terminate_workflow("done")
                return f"answer after {n}"
            ctx.next_task(tool, goto=True)
            return "thinking"

        @task(inject_context=True, io=True)
        def tool(ctx: Any) -> str:
            ctx.get_channel().append("calls", ctx.cycle_count)
            return "tool output"

        @task
        def never() -> str:
            return "should not run"

        agent >> never
        tool >> agent

    result = run_on(wf, start="agent")
    assert result.value == "answer after 3"
    assert result.channel["calls"] == [1, 2]
    assert "never" not in result.results


def test_next_iteration_from_an_async_task(run_on: Runner) -> None:
    with workflow("iterate") as wf:

        @task(inject_context=True, max_cycles=10)
        async def count(ctx: Any, n: int = 0) -> int:
            await asyncio.sleep(0)
            if n < 4:
                ctx.next_iteration(n + 1)
            return n

        @task(inject_context=True, io=True)
        def dynamic(ctx: Any) -> str:
            extra = TaskWrapper("extra", lambda: "extra ran", register_to_context=False)
            ctx.next_task(extra)
            return "queued extra"

        count >> dynamic

    result = run_on(wf, start="count")
    assert "extra" in result.results
    assert result.results["extra"] == "extra ran"
    assert any(value == 4 for key, value in result.results.items() if key.startswith("count"))


def test_many_async_tasks_share_the_channel(run_on: Runner) -> None:
    with workflow("counter") as wf:

        def member(i: int) -> TaskWrapper:
            async def body(ctx: Any) -> int:
                channel = ctx.get_channel()
                channel.atomic_add("total", i)
                channel.set(f"seen.{i}", i)
                await asyncio.sleep(0.01)
                return int(channel.get(f"seen.{i}"))

            return TaskWrapper(f"c{i}", body, inject_context=True)

        parallel(*[member(i) for i in range(60)])

    result = run_on(wf)
    assert result.channel["total"] == sum(range(60))
    assert {k: v for k, v in result.results.items() if k[0] == "c"} == {
        f"c{i}": i for i in range(60)
    }


def test_a_sync_task_that_returns_a_coroutine_fails_with_a_clear_error(run_on: Runner) -> None:
    async def later() -> int:
        return 1

    with workflow("coro") as wf:
        TaskWrapper("oops", lambda: later())

    with pytest.raises(GraflowError, match="async def"):
        run_on(wf)


def test_an_async_task_past_its_timeout_is_cancelled(run_on: Runner, request: Any) -> None:
    if "inprocess" in request.node.name:
        pytest.skip("timeout_s needs worker processes")
    with workflow("slow") as wf:

        @task(timeout_s=0.5)
        async def slow() -> str:
            await asyncio.sleep(30)
            return "late"

    with pytest.raises(GraflowError, match="timed out"):
        run_on(wf)


def test_the_readme_example_of_the_three_kinds_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [
        b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "io=True)(" in b
    ]
    script = tmp_path / "lanes_example.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[200, 333332833333500000, None, 'answer']"
