"""Bad input: every mistake ends in a clear, named error (or a bounded, logged stop)."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from graflow import RetryPolicy, TaskExecutionContext, chain, parallel, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.task import Task, TaskWrapper
from graflow.exceptions import (
    ConfigError,
    CycleLimitExceededError,
    DuplicateTaskError,
    GraflowError,
    GraflowRuntimeError,
    GraphCompilationError,
    UnknownTaskError,
)


def _graph() -> TaskGraph:
    graph = TaskGraph()
    graph.add_node(Task("root", register_to_context=False))
    return graph


# -- start nodes ------------------------------------------------------------------------------


def test_unknown_start_node_in_workflow_execute() -> None:
    with workflow("wf") as wf:
        Task("a") >> Task("b")
    with pytest.raises(UnknownTaskError, match="Node 'typo' not found in graph") as info:
        wf.execute("typo")
    assert isinstance(info.value, KeyError)
    assert "a" in str(info.value) and "b" in str(info.value)


def test_unknown_start_task_id_in_the_engine() -> None:
    with workflow("wf") as wf:
        Task("a")
    ctx = ExecutionContext.create(wf.graph, "a")
    with pytest.raises(UnknownTaskError, match="Node 'typo' not found"):
        WorkflowEngine().execute(ctx, start_task_id="typo")


def test_several_start_nodes_and_none_given() -> None:
    with workflow("wf") as wf:
        Task("a") >> Task("c")
        Task("b") >> Task("c2")
    with pytest.raises(GraphCompilationError, match="Multiple start nodes found"):
        wf.execute()


def test_duplicate_id() -> None:
    with workflow("wf"):

        @task("load")
        def first() -> None:
            return None

        with pytest.raises(DuplicateTaskError, match="Duplicate task ID: Node 'load'"):
            TaskWrapper("load", lambda: None)


# -- operators on non-tasks -------------------------------------------------------------------


@pytest.mark.parametrize("other", [3, "b", None, [Task("x", register_to_context=False)], print])
def test_operators_on_non_tasks_are_type_errors(other: Any) -> None:
    with workflow("wf") as wf:
        a = Task("a")
        with pytest.raises(TypeError, match="unsupported operand"):
            a >> other
        with pytest.raises(TypeError, match="unsupported operand"):
            a << other
        with pytest.raises(TypeError, match="unsupported operand"):
            a | other
    assert wf.graph.edges == []


def test_chain_and_parallel_with_non_tasks() -> None:
    with workflow("wf"):
        with pytest.raises(TypeError):
            chain(Task("a"), "b")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            parallel(Task("c"), 5)  # type: ignore[arg-type]


def test_next_task_with_a_non_task() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def jumper(ctx: TaskExecutionContext) -> None:
            ctx.next_task("somewhere")  # type: ignore[arg-type]

    with pytest.raises(GraflowRuntimeError) as info:
        wf.execute()
    assert isinstance(info.value.cause, TypeError)


# -- task options -----------------------------------------------------------------------------


def test_decorator_with_a_non_string_id() -> None:
    with pytest.raises(TypeError):
        task(123)  # type: ignore[call-overload]


def test_non_callable_body() -> None:
    with pytest.raises(TypeError):
        TaskWrapper("t", 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"max_cycles": 0}, {"max_retries": -1}])
def test_bad_budgets(options: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        task(**options)(lambda: None)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "options",
    [{"initial_interval": -1.0}, {"max_interval": -0.5}, {"backoff_factor": 0.5}],
)
def test_bad_retry_policy(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_bad_group_policy() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    with pytest.raises(ConfigError, match="group policy"):
        group.with_execution(policy="whatever")
    with pytest.raises(ConfigError):
        group.with_execution(policy=42)  # type: ignore[arg-type]


# -- loops ------------------------------------------------------------------------------------


def test_static_cycle_without_exit_is_bounded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Deviation (8): the run stops at max_steps, says so in the log and on the context."""
    runs: list[str] = []
    with workflow("wf") as wf:
        ping = TaskWrapper("ping", lambda: runs.append("ping"))
        pong = TaskWrapper("pong", lambda: runs.append("pong"))
        ping >> pong >> ping
    with caplog.at_level(logging.WARNING, logger="graflow"):
        result, ctx = wf.execute("ping", max_steps=50, ret_context=True)
    assert len(runs) == 50
    assert result is None
    assert ctx.steps == 50
    assert ctx.max_steps_reached is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "max_steps=50" in message
    assert ctx.session_id in message


def test_next_iteration_past_max_cycles() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True, max_cycles=2)
        def poll(ctx: TaskExecutionContext, data: Any = None) -> None:
            ctx.next_iteration(data)

    with pytest.raises(CycleLimitExceededError) as info:
        wf.execute()
    assert (info.value.task_id, info.value.cycle_count, info.value.max_cycles) == ("poll", 2, 2)


# -- failures inside tasks --------------------------------------------------------------------


def test_exception_inside_a_task_keeps_the_original() -> None:
    original = ZeroDivisionError("division by zero")

    def divide() -> None:
        raise original

    with workflow("wf") as wf:
        Task("start") >> TaskWrapper("divide", divide) >> Task("never")
    result_holder: list[Any] = []
    with pytest.raises(GraflowRuntimeError) as info:
        result_holder.append(wf.execute("start"))
    assert info.value.cause is original
    assert str(info.value) == "An error occurred: division by zero (caused by division by zero)"
    assert result_holder == []


def test_unregistered_handler_name() -> None:
    with workflow("wf") as wf:
        TaskWrapper("remote_job", lambda: 1, handler_type="docker")
    with pytest.raises(GraflowRuntimeError, match="Unknown handler type: docker") as info:
        wf.execute()
    assert isinstance(info.value.cause, ValueError)
    assert isinstance(info.value.cause, GraflowError)


# -- pickling ---------------------------------------------------------------------------------


def test_save_with_a_lock_in_the_channel_names_the_key(tmp_path: Path) -> None:
    ctx = ExecutionContext.create(_graph())
    ctx.get_channel().set("fine", [1, 2])
    ctx.get_channel().set("guard", threading.Lock())
    path = tmp_path / "ctx.pkl"
    with pytest.raises(GraflowRuntimeError) as info:
        ctx.save(str(path))
    message = str(info.value)
    assert "cannot save execution context" in message
    assert "'guard'" in message
    assert "'fine'" not in message
    assert isinstance(info.value.cause, TypeError)
    assert not path.exists()


def test_save_with_a_socket_in_the_channel(tmp_path: Path) -> None:
    ctx = ExecutionContext.create(_graph())
    with socket.socket() as sock:
        ctx.get_channel().set("conn", sock)
        with pytest.raises(GraflowRuntimeError, match="'conn' \\(socket\\)"):
            ctx.save(str(tmp_path / "ctx.pkl"))


def test_save_with_an_unpicklable_task(tmp_path: Path) -> None:
    guard = threading.Lock()
    with workflow("wf") as wf:
        TaskWrapper("locked", lambda: guard.locked())
    ctx = ExecutionContext.create(wf.graph, "locked")
    with pytest.raises(GraflowRuntimeError, match="graph or run state"):
        ctx.save(str(tmp_path / "ctx.pkl"))
