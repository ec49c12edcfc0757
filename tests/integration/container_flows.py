"""Workflows that tests/integration/test_containers.py runs as a container's GRAFLOW_TARGET.

They live in an importable module because workers import a target's tasks by reference.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from graflow import TaskExecutionContext, task, workflow
from graflow.core.workflow import WorkflowContext

MARKER_DIR_ENV = "GRAFLOW_TEST_MARKER_DIR"
"""The directory where ``slow`` leaves ``slow-started`` and ``slow-done`` (worker env)."""

SLOW_TASK_S = 2.0


@task(inject_context=True)
def slow(ctx: TaskExecutionContext) -> int:
    """Take a while, count the attempt, and return the pid of the node that ran it."""
    marker_dir = Path(os.environ[MARKER_DIR_ENV])
    (marker_dir / "slow-started").touch()
    time.sleep(SLOW_TASK_S)
    ctx.get_channel().atomic_add("slow_runs", 1)
    (marker_dir / "slow-done").touch()
    return os.getppid()  # a worker process's parent is its node (the container process)


@task(inject_context=True)
def report(ctx: TaskExecutionContext, slow: int) -> dict[str, Any]:
    """Which nodes ran ``slow`` and this task, and how often ``slow`` ran."""
    return {
        "slow_node": slow,
        "report_node": os.getppid(),
        "slow_runs": ctx.get_channel().get("slow_runs"),
    }


def drain_workflow() -> WorkflowContext:
    """``slow >> report``."""
    with workflow("container_drain") as wf:
        slow >> report
    return wf
