"""Reference §6: ExecutionContext, create_execution_context and TaskExecutionContext."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypedDict

import cloudpickle
import pytest

from graflow import TaskExecutionContext, task, workflow
from graflow.channels.base import Channel
from graflow.channels.typed import TypedChannel
from graflow.core.context import (
    ExecutionContext,
    create_execution_context,
    execute_with_cycles,
)
from graflow.core.cycle import CycleController
from graflow.core.engine import WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.retry import RetryController
from graflow.core.task import Task, TaskWrapper
from graflow.exceptions import ConfigError, GraflowRuntimeError
from graflow.queue.local import LocalTaskQueue
from graflow.trace.noop import NoopTracer, is_idle


def two_root_graph(log: list[str]) -> TaskGraph:
    with workflow("wf") as wf:
        TaskWrapper("first", lambda: log.append("first") or "F") >> Task("end")
        TaskWrapper("second", lambda: log.append("second") or "S")
    return wf.graph


# -- §6.1 create() quirks ---------------------------------------------------------------------


def test_create_without_start_takes_the_first_root_silently() -> None:
    log: list[str] = []
    ctx = ExecutionContext.create(two_root_graph(log))
    assert ctx.start_node == "first"
    assert ctx.execute() is None
    assert log == ["first"]
    assert ctx.completed_tasks == ["first", "end"]


def test_create_with_unknown_start_is_lenient() -> None:
    """Deviation (5) keeps ExecutionContext.create lenient: nothing runs, None comes back."""
    log: list[str] = []
    ctx = ExecutionContext.create(two_root_graph(log), "missing")
    assert ctx.queue.is_empty()
    assert WorkflowEngine().execute(ctx) is None
    assert log == []
    assert ctx.steps == 0


def test_create_on_an_empty_graph() -> None:
    ctx = ExecutionContext.create(TaskGraph())
    assert ctx.start_node is None
    assert ctx.execute() is None


def test_unknown_channel_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Unsupported backend 'carrier-pigeon'"):
        ExecutionContext.create(TaskGraph(), channel_backend="carrier-pigeon")


# -- §6.1 attributes --------------------------------------------------------------------------


def test_attributes_of_a_fresh_context() -> None:
    graph = two_root_graph([])
    ctx = ExecutionContext.create(
        graph, "first", max_steps=50, default_max_cycles=4, default_max_retries=2
    )
    assert re.fullmatch(r"[0-9a-f]{32}", ctx.session_id)
    assert ctx.trace_id == ctx.session_id
    assert ctx.graph is graph
    assert ctx.start_node == "first"
    assert ctx.max_steps == 50
    assert ctx.steps == 0
    assert isinstance(ctx.channel, Channel)
    assert ctx.get_channel() is ctx.channel
    assert ctx.channel.name == ctx.session_id
    assert isinstance(ctx.task_queue, LocalTaskQueue)
    assert ctx.queue is ctx.task_queue
    assert ctx.queue.to_list() == ["first"]
    assert isinstance(ctx.cycle_controller, CycleController)
    assert ctx.cycle_controller.default_max_cycles == 4
    assert isinstance(ctx.retry_controller, RetryController)
    assert ctx.default_max_retries == 2
    assert ctx.retry_controller.default_max_retries == 2
    assert ctx.completed_tasks == []
    assert ctx.ctrl_message is None
    assert ctx.parent_context is None
    assert ctx.graph_hash is None
    assert ctx.config == {}
    assert isinstance(ctx.tracer, NoopTracer) and is_idle(ctx.tracer)  # records nothing
    assert ctx.checkpoint_metadata == {}
    assert ctx.last_checkpoint_path is None
    assert ctx.checkpoint_requested is False
    assert ctx.max_steps_reached is False


def test_two_contexts_have_different_sessions() -> None:
    graph = two_root_graph([])
    assert ExecutionContext.create(graph).session_id != ExecutionContext.create(graph).session_id


def test_config_is_kept_without_the_redis_client() -> None:
    ctx = ExecutionContext.create(
        TaskGraph(), config={"key_prefix": "app", "redis_client": object()}
    )
    assert ctx.config == {"key_prefix": "app"}


def test_explicit_ids_and_parent() -> None:
    parent = ExecutionContext.create(TaskGraph())
    child = ExecutionContext(
        TaskGraph(), session_id="s1", trace_id="t1", parent_context=parent, steps=3
    )
    assert (child.session_id, child.trace_id) == ("s1", "t1")
    assert child.parent_context is parent
    assert child.steps == 3


# -- §6.1 methods -----------------------------------------------------------------------------


def test_results_queue_and_step_helpers() -> None:
    with workflow("wf") as wf:
        a = Task("a")
        b = Task("b")
    ctx = ExecutionContext.create(wf.graph, "a", max_steps=2)
    ctx.set_result("a", 1)
    assert ctx.get_result("a") == 1
    assert ctx.get_channel().get("a.__result__") == 1
    ctx.add_to_queue(b)
    assert ctx.queue.to_list() == ["a", "b"]
    assert ctx.get_next_task() == "a"
    assert not ctx.is_completed()
    ctx.increment_step()
    ctx.increment_step()
    assert ctx.steps == 2
    assert ctx.is_completed()  # the step budget is used up
    ctx.mark_task_completed("a")
    ctx.mark_task_completed("b")
    ctx.mark_task_completed("a")
    assert ctx.completed_tasks == ["a", "b"]
    assert a.task_id == "a"


def test_is_completed_when_the_queue_is_empty() -> None:
    ctx = ExecutionContext.create(TaskGraph(), "nowhere")
    assert ctx.is_completed()


def test_execute_runs_the_engine() -> None:
    log: list[str] = []
    ctx = ExecutionContext.create(two_root_graph(log), "second")
    assert ctx.execute() == "S"
    assert ctx.steps == 1


def test_control_methods_need_a_running_task() -> None:
    ctx = ExecutionContext.create(TaskGraph())
    with pytest.raises(GraflowRuntimeError):
        ctx.next_task(Task("x", register_to_context=False))
    with pytest.raises(GraflowRuntimeError):
        ctx.next_iteration()
    with pytest.raises(GraflowRuntimeError):
        ctx.terminate_workflow("x")
    with pytest.raises(GraflowRuntimeError):
        ctx.cancel_workflow("x")


def test_context_methods_act_for_the_running_task() -> None:
    """The ExecutionContext-level controls delegate to the current task's context."""
    seen: list[Any] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def driver(ctx: TaskExecutionContext) -> None:
            ec = ctx.execution_context
            seen.append((ec.current_task_id, ec.current_task_context is not None))
            ec.next_task(TaskWrapper("extra", lambda: seen.append("extra")))
            ec.terminate_workflow("done")

        driver >> Task("never")
    result, ctx = wf.execute("driver", ret_context=True)
    assert seen == [("driver", True)]
    assert ctx.completed_tasks == ["driver"]
    assert ctx.terminate_called
    assert ctx.ctrl_message == "done"
    assert result is None


def test_flags_and_resets() -> None:
    with workflow("wf") as wf:

        @task(inject_context=True)
        def stopper(ctx: TaskExecutionContext) -> str:
            ctx.terminate_workflow("enough")
            return "stopped"

    result, ctx = wf.execute(ret_context=True)
    assert result == "stopped"
    assert ctx.terminate_called is True
    assert ctx.cancel_called is False
    assert ctx.goto_called is False
    ctx.reset_terminate_flag()
    assert ctx.terminate_called is False
    ctx._goto_called = ctx._cancel_called = ctx._terminate_called = True
    ctx.reset_goto_flag()
    ctx.reset_cancel_flag()
    assert not ctx.goto_called and not ctx.cancel_called and ctx.terminate_called
    ctx.reset_control_flags()
    assert not ctx.terminate_called


def test_executing_task_counts_a_cycle_and_sets_the_current_task() -> None:
    @task(max_cycles=3, max_retries=2)
    def job() -> None:
        return None

    ctx = ExecutionContext.create(TaskGraph())
    assert ctx.current_task_context is None
    with ctx.executing_task(job) as task_ctx:
        assert isinstance(task_ctx, TaskExecutionContext)
        assert ctx.current_task_context is task_ctx
        assert ctx.current_task_id == "job"
        assert task_ctx.cycle_count == 1
        assert task_ctx.max_cycles == 3
        assert task_ctx.max_retries == 2
        assert job.get_execution_context() is ctx
    assert ctx.current_task_context is None
    with ctx.executing_task(job) as again:
        assert again.cycle_count == 2


def test_push_and_pop_task_contexts() -> None:
    parent = ExecutionContext.create(TaskGraph())
    child = ExecutionContext(TaskGraph(), parent_context=parent)
    pushed = parent.create_task_context("outer")
    assert isinstance(pushed, TaskExecutionContext)
    assert pushed.task_id == "outer"
    parent.push_task_context(pushed)
    assert parent.current_task_id == "outer"
    assert child.current_task_context is pushed  # falls back to the parent's
    assert parent.pop_task_context() is pushed
    assert parent.pop_task_context() is None
    assert child.current_task_id is None


# -- save / load ------------------------------------------------------------------------------


def test_save_and_load_keep_channel_data_and_counters(tmp_path: Path) -> None:
    with workflow("wf") as wf:
        TaskWrapper("a", lambda: 1) >> TaskWrapper("b", lambda a: a + 1)
    ctx = ExecutionContext.create(wf.graph, "a")
    ctx.get_channel().set("note", {"k": [1, 2]})
    path = tmp_path / "ctx.pkl"
    ctx.save(str(path))
    loaded = ExecutionContext.load(str(path))
    assert isinstance(loaded, ExecutionContext)
    assert loaded.session_id == ctx.session_id
    assert loaded.get_channel().get("note") == {"k": [1, 2]}
    assert loaded.queue.to_list() == ["a"]
    assert loaded.execute() == 2
    assert loaded.completed_tasks == ["a", "b"]


def test_save_after_a_run(tmp_path: Path) -> None:
    with workflow("wf") as wf:
        TaskWrapper("a", lambda: "A") >> TaskWrapper("b", lambda: "B")
    _, ctx = wf.execute("a", ret_context=True)
    path = tmp_path / "done.pkl"
    ctx.save(str(path))
    loaded = ExecutionContext.load(str(path))
    assert loaded.get_result("a") == "A"
    assert loaded.get_result("b") == "B"
    assert loaded.completed_tasks == ["a", "b"]
    assert loaded.steps == 2
    assert loaded.cycle_controller.cycle_counts == {"a": 1, "b": 1}


def test_default_save_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ExecutionContext.create(TaskGraph()).save()
    assert (tmp_path / "execution_context.pkl").exists()
    assert isinstance(ExecutionContext.load(), ExecutionContext)


def test_load_of_something_else_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(cloudpickle.dumps({"not": "a context"}))
    with pytest.raises(GraflowRuntimeError):
        ExecutionContext.load(str(path))


# -- §6.2 create_execution_context / execute_with_cycles --------------------------------------


def test_create_execution_context_defaults() -> None:
    ctx = create_execution_context()
    assert ctx.start_node == "ROOT"
    assert ctx.max_steps == 10
    root = ctx.graph.get_node("ROOT")
    assert isinstance(root, Task)
    assert list(ctx.graph.nodes) == ["ROOT"]
    assert ctx.execute() is None
    assert ctx.completed_tasks == ["ROOT"]


def test_create_execution_context_arguments() -> None:
    ctx = create_execution_context("start", max_steps=3)
    assert ctx.start_node == "start"
    assert ctx.max_steps == 3
    assert ctx.queue.to_list() == ["start"]


def test_execute_with_cycles_helpers() -> None:
    log: list[str] = []
    graph = two_root_graph(log)
    assert execute_with_cycles(graph, "second") == "S"
    assert WorkflowEngine().execute_with_cycles(graph, "first", max_steps=1) == "F"
    assert log == ["second", "first"]


# -- §6.3 TaskExecutionContext ----------------------------------------------------------------


class Note(TypedDict):
    text: str
    score: int


def test_task_execution_context_members() -> None:
    seen: dict[str, Any] = {}
    with workflow("wf") as wf:

        @task(inject_context=True, max_cycles=5, max_retries=1)
        def probe(ctx: TaskExecutionContext) -> str:
            seen["ctx"] = ctx
            seen["task_id"] = ctx.task_id
            seen["session"] = ctx.session_id
            seen["trace"] = ctx.trace_id
            seen["graph"] = ctx.graph
            seen["exec"] = ctx.execution_context
            seen["cycle"] = (ctx.cycle_count, ctx.max_cycles, ctx.can_iterate())
            seen["retry"] = (ctx.retry_count, ctx.max_retries)
            seen["channel"] = ctx.get_channel()
            typed = ctx.get_typed_channel(Note)
            typed.set("n", {"text": "hi", "score": 2})
            seen["typed"] = (type(typed), typed.get("n"))
            ctx.set_local_data("k", 1)
            seen["local"] = (ctx.get_local_data("k"), ctx.get_local_data("x", 9), ctx.local_data)
            seen["elapsed"] = ctx.elapsed_time()
            seen["start"] = ctx.start_time
            seen["str"] = str(ctx)
            return "ok"

    _, ectx = wf.execute(ret_context=True)
    assert seen["task_id"] == "probe"
    assert seen["session"] == ectx.session_id
    assert seen["trace"] == ectx.trace_id
    assert seen["graph"] is ectx.graph
    assert seen["exec"] is ectx
    assert seen["cycle"] == (1, 5, True)
    assert seen["retry"] == (0, 1)
    assert seen["channel"] is ectx.get_channel()
    assert seen["typed"] == (TypedChannel, {"text": "hi", "score": 2})
    assert seen["local"] == (1, 9, {"k": 1})
    assert seen["elapsed"] >= 0
    assert isinstance(seen["start"], float)
    assert seen["str"] == "TaskExecutionContext(task_id=probe, cycle_count=1)"
    assert not hasattr(seen["ctx"], "set_result")


def test_local_data_is_per_execution() -> None:
    seen: list[Any] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def loop(ctx: TaskExecutionContext, data: Any = None) -> None:
            seen.append(ctx.get_local_data("mark"))
            ctx.set_local_data("mark", ctx.cycle_count)
            if ctx.cycle_count < 3:
                ctx.next_iteration()

    wf.execute()
    assert seen == [None, None, None]


def test_typed_channel_rejects_bad_messages() -> None:
    errors: list[str] = []
    with workflow("wf") as wf:

        @task(inject_context=True)
        def writer(ctx: TaskExecutionContext) -> None:
            typed = ctx.get_typed_channel(Note)
            try:
                typed.set("n", {"text": "hi"})
            except TypeError as exc:
                errors.append(str(exc))

    wf.execute()
    assert len(errors) == 1
