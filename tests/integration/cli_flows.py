"""Workflows that tests/integration/test_cli.py runs through the installed ``graflow`` command.

Each is loaded as ``tests/integration/cli_flows.py:<name>``; channel values set with
``--set`` tune them (``marker``: a file the first task writes once the run has started,
``pause_s``: how long each slow step sleeps, ``gate``: a file the first task waits for
before it returns, up to 60 s).
"""

from __future__ import annotations

import time
from pathlib import Path

from graflow import task, workflow
from graflow.core.context import TaskExecutionContext

with workflow("ok") as ok:

    @task
    def a() -> int:
        return 1

    @task
    def b(a: int) -> int:
        return a + 1

    a >> b


with workflow("bad") as bad:

    @task
    def x() -> int:
        return 1

    @task
    def boom(x: int) -> int:
        raise ValueError(f"kaput {x}")

    x >> boom


with workflow("slow") as slow:

    @task
    def first(marker: str = "", pause_s: float = 0.2, gate: str = "") -> int:
        if marker:
            Path(marker).write_text("started")
        deadline = time.monotonic() + 60
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(pause_s)
        return 1

    previous = first
    for index in range(20):

        @task(id=f"step{index}")
        def step(pause_s: float = 0.2) -> int:
            time.sleep(pause_s)
            return 1

        previous >> step
        previous = step


with workflow("flaky") as flaky:

    @task(inject_context=True, max_retries=2)
    def wobbly(ctx: TaskExecutionContext) -> str:
        if ctx.retry_count == 0:
            raise RuntimeError("first attempt fails")
        return "ok"

    @task
    def after(wobbly: str) -> str:
        return wobbly + "!"

    wobbly >> after
