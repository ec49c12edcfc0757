"""Upstream-style Redis coordination: a group's members run on Redis workers, the rest here."""

from __future__ import annotations

import os
from typing import Any

import pytest

from graflow import task, workflow
from graflow.coordination.coordinator import CoordinationBackend
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.exceptions import ConfigError, ParallelGroupError


def _mixed_workflow(queue: str, fail_b: bool = False) -> Any:
    with workflow("mixed") as wf:

        @task
        def prepare() -> int:
            return 3

        @task
        def member_a(prepare: int) -> tuple[int, int]:
            return prepare, os.getpid()

        @task
        def member_b(prepare: int) -> tuple[int, int]:
            if fail_b:
                raise ValueError("b is broken")
            return prepare * 2, os.getpid()

        @task
        def combine(member_a: tuple[int, int], member_b: tuple[int, int]) -> tuple[int, ...]:
            return member_a[0] + member_b[0], member_a[1], member_b[1], os.getpid()

        group = (
            (member_a | member_b)
            .set_group_name("extract")
            .with_execution(backend=CoordinationBackend.REDIS, backend_config={"queue": queue})
        )
        prepare >> group >> combine
    return wf


@pytest.mark.timeout(60)
def test_group_members_run_on_redis_workers(redis_server: Any, shared_redis_node: Any) -> None:
    client = redis_server.client()
    wf = _mixed_workflow(shared_redis_node.queue)
    context = ExecutionContext.create(
        wf.graph, "prepare", channel_backend="redis", config={"redis_client": client}
    )
    total, pid_a, pid_b, pid_combine = WorkflowEngine().execute(context)
    assert total == 9
    workers = set(shared_redis_node.worker_pids())
    assert {pid_a, pid_b} <= workers
    assert pid_combine == os.getpid()
    assert context.completed_tasks == ["prepare", "member_a", "member_b", "extract", "combine"] or (
        context.completed_tasks == ["prepare", "member_b", "member_a", "extract", "combine"]
    )


@pytest.mark.timeout(60)
def test_failed_remote_member_fails_the_group(redis_server: Any, shared_redis_node: Any) -> None:
    client = redis_server.client()
    wf = _mixed_workflow(shared_redis_node.queue, fail_b=True)
    context = ExecutionContext.create(
        wf.graph, "prepare", channel_backend="redis", config={"redis_client": client}
    )
    with pytest.raises(ParallelGroupError) as info:
        WorkflowEngine().execute(context)
    assert info.value.group_id == "extract"
    assert [t for t, _ in info.value.failed_tasks] == ["member_b"]
    assert "b is broken" in (info.value.failed_tasks[0][1] or "")


def test_redis_group_needs_the_redis_channel(redis_server: Any) -> None:
    wf = _mixed_workflow("unused")
    with pytest.raises(ConfigError, match="channel_backend='redis'"):
        wf.execute("prepare")
