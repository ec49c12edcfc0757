"""Upstream import paths that scripts use beside the core DSL."""

from __future__ import annotations

import io

import pytest

from graflow import task, workflow
from graflow.coordination.coordinator import CoordinationBackend
from graflow.core import serialization
from graflow.core.task import TaskWrapper
from graflow.exceptions import ConfigError


def test_coordination_backend_names_are_accepted_by_with_execution() -> None:
    with workflow("g") as wf:

        @task(inject_context=True)
        def a(ctx: object) -> None:
            ctx.get_channel().append("order", "a")  # type: ignore[attr-defined]

        @task(inject_context=True)
        def b(ctx: object) -> None:
            ctx.get_channel().append("order", "b")  # type: ignore[attr-defined]

        group = (a | b).with_execution(backend=CoordinationBackend.DIRECT)

    assert group.execution_backend == "direct"
    _, context = wf.execute(group.task_id, ret_context=True)
    assert sorted(context.get_channel().get("order")) == ["a", "b"]
    assert group.with_execution(backend="THREADING").execution_backend == "threading"
    with pytest.raises(ConfigError):
        group.with_execution(backend="carrier-pigeon")


def test_serialization_round_trips_closures_and_graphs() -> None:
    offset = 41
    with workflow("s") as wf:
        TaskWrapper("closure", lambda: offset + 1)

    graph = serialization.loads(serialization.dumps(wf.graph))
    assert graph.get_node("closure").func() == 42

    buffer = io.BytesIO()
    serialization.dump({"k": [1, 2]}, buffer)
    buffer.seek(0)
    assert serialization.load(buffer) == {"k": [1, 2]}
