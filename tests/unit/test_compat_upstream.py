"""Behaviour and names that scripts written for upstream Graflow rely on (issue 15)."""

from __future__ import annotations

import contextvars
import json
from typing import Any, TypedDict

import networkx as nx
import pytest

import graflow.core.engine as engine_module
import graflow.core.task as task_module
import graflow.core.workflow as workflow_module
from graflow import RetryPolicy, task, workflow
from graflow.channels.memory import MemoryChannel
from graflow.channels.typed import (
    ChannelTypeRegistry,
    TypedChannel,
    _is_typed_dict,
    _validate_typed_dict,
)
from graflow.coordination.executor import GroupExecutor
from graflow.core.checkpoint import CheckpointManager, CheckpointMetadata
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.handler import TaskResult
from graflow.core.handlers.direct import DirectTaskHandler
from graflow.core.policy import (
    AtLeastNGroupPolicy,
    BestEffortGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
    resolve_group_policy,
)
from graflow.core.task import Executable, ParallelGroup, SequentialTask, Task, TaskWrapper
from graflow.core.workflow import WorkflowContext, current_workflow_context
from graflow.exceptions import ConfigError, ParallelGroupError
from graflow.queue.base import TaskSpec
from graflow.utils.graph import build_graph


class RecordingPolicy(GroupExecutionPolicy):
    """Keeps what the engine hands it."""

    def __init__(self) -> None:
        self.tasks: list[Any] = []

    def on_group_finished(
        self, group_id: str, tasks: Any, results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        self.tasks = list(tasks)


def test_policies_receive_member_task_objects() -> None:
    policy = RecordingPolicy()
    with workflow("objects") as wf:

        @task
        def left() -> int:
            return 1

        @task
        def right() -> int:
            return 2

        group = (left | right).with_execution(policy=policy)
    wf.execute(group.task_id)
    assert all(isinstance(t, Executable) for t in policy.tasks)
    assert [t.task_id for t in policy.tasks] == ["left", "right"]


@pytest.mark.parametrize("policy", [BestEffortGroupPolicy(), CriticalGroupPolicy(["fine"])])
def test_failed_member_has_no_result_after_a_tolerant_group(policy: GroupExecutionPolicy) -> None:
    with workflow("tolerant") as wf:

        @task
        def fine() -> str:
            return "ok"

        @task
        def broken() -> None:
            raise RuntimeError("no luck")

        @task(inject_context=True)
        def after(ctx: Any) -> tuple[Any, Any]:
            return ctx.get_result("fine"), ctx.get_result("broken", "missing")

        group = (fine | broken).with_execution(policy=policy)
        group >> after
    result, context = wf.execute(group.task_id, ret_context=True)
    assert result == ("ok", "missing")
    assert context.get_result("broken") is None


def test_at_least_n_message_names_the_required_count() -> None:
    policy = AtLeastNGroupPolicy(3)
    results = {
        "a": TaskResult("a", True),
        "b": TaskResult("b", False, error_message="x"),
        "c": TaskResult("c", False, error_message="y"),
        "d": TaskResult("d", True),
    }
    members = [Task(t, register_to_context=False) for t in "abcd"]
    with pytest.raises(ParallelGroupError) as info:
        policy.on_group_finished("g", members, results, None)
    assert str(info.value) == "Only 2/3 tasks succeeded in group g"


def test_unknown_policy_names_are_value_errors_too() -> None:
    for bad in ("unknown_policy", {"type": "unknown"}):
        with pytest.raises(ValueError, match="policy"):
            resolve_group_policy(bad)
        with pytest.raises(ConfigError):
            resolve_group_policy(bad)


def test_workflow_context_var_can_be_swapped_by_name() -> None:
    replacement: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar("swap")
    mine = WorkflowContext("mine")
    replacement.set(mine)
    original = workflow_module._current_context
    workflow_module._current_context = replacement
    try:

        @task
        def joined() -> str:
            return "here"

        assert "joined" in mine.graph.nodes
        assert current_workflow_context() is mine
        assert joined() == "here"
    finally:
        workflow_module._current_context = original


def test_a_context_var_without_default_reads_as_no_workflow() -> None:
    original = workflow_module._current_context
    workflow_module._current_context = contextvars.ContextVar("empty")
    try:
        assert workflow_module.get_current_workflow_context() is None
    finally:
        workflow_module._current_context = original


def test_implicit_workflow_is_named_by_a_full_hex_uuid() -> None:
    workflow_module.clear_workflow_context()
    name = current_workflow_context().name
    workflow_module.clear_workflow_context()
    assert len(name) == 32
    int(name, 16)


class Point(TypedDict):
    x: int
    label: str


class NotTyped:
    x: int


def test_typed_dict_helpers() -> None:
    assert _is_typed_dict(Point) is True
    assert _is_typed_dict(NotTyped) is False
    assert _is_typed_dict(dict) is False
    assert _validate_typed_dict({"x": 1, "label": "p"}, Point) is True
    assert _validate_typed_dict({"x": 1}, Point) is False
    assert _validate_typed_dict({"x": 1, "label": "p", "extra": 0}, Point) is False
    assert _validate_typed_dict({"x": "1", "label": "p"}, Point) is False
    assert _validate_typed_dict("not a dict", Point) is False
    assert _validate_typed_dict({"x": 1}, NotTyped) is False


def test_atomic_add_on_a_non_number_says_what_it_expected() -> None:
    channel = MemoryChannel("n")
    channel.set("data", "hello")
    with pytest.raises(TypeError, match="Key 'data' holds str, expected int or float"):
        channel.atomic_add("data")
    assert channel.get("data") == "hello"


def test_build_graph_collects_what_is_connected() -> None:
    workflow_module.clear_workflow_context()
    try:
        a, b, c, lone = Task("A"), Task("B"), Task("C"), Task("lone")
        chain = a >> b >> c >> a
        lone >> Task("other")
        graph = build_graph(chain)
        assert sorted(graph.nodes) == ["A", "B", "C"]
        assert sorted(graph.edges) == [("A", "B"), ("B", "C"), ("C", "A")]
        assert graph.nodes["A"]["task"] is a
        assert len(list(nx.simple_cycles(graph.nx_graph()))) == 1

        x, y = Task("X"), Task("Y")
        group = ParallelGroup([x, y])
        grouped = build_graph(group)
        assert set(grouped.edges) == {(group.task_id, "X"), (group.task_id, "Y")}
        # the workflow's own graph is untouched
        assert current_workflow_context().graph.get_parallel_group_members(group.task_id) == [
            "X",
            "Y",
        ]
        assert (group.task_id, "X") not in current_workflow_context().graph.edges
    finally:
        workflow_module.clear_workflow_context()


def test_task_graph_offers_a_networkx_view() -> None:
    with workflow("nx") as wf:
        first, second = Task("first"), Task("second")
        first >> second
    view = wf.graph._graph
    assert isinstance(view, nx.DiGraph)
    assert list(view.successors("first")) == ["second"]
    assert ("first", "second") in view.edges()


# -- dynamic tasks scheduled by hand ---------------------------------------------------------


def test_next_task_by_hand_joins_graph_and_queue() -> None:

    context = ExecutionContext.create(TaskGraph(), "start", max_steps=10)
    context.push_task_context(context.create_task_context("start"))
    dynamic = TaskWrapper("dynamic_processor", lambda: 1, register_to_context=False)
    assert context.next_task(dynamic) == "dynamic_processor"
    assert "dynamic_processor" in context.graph.nodes
    assert context.queue.to_list() == ["dynamic_processor"]
    assert not context.goto_called
    # an id already in the graph is a jump
    context.next_task(dynamic)
    assert context.goto_called
    assert context.queue.to_list() == ["dynamic_processor", "dynamic_processor"]


def test_next_iteration_by_hand_adds_the_iteration_node() -> None:

    graph = TaskGraph()
    graph.add_node(TaskWrapper("counter", lambda data: data, register_to_context=False))
    context = ExecutionContext.create(graph, "start", max_steps=10)
    with context.executing_task(graph.get_node("counter")):
        iteration = context.next_iteration({"count": 1})
    assert iteration.startswith("counter_cycle_1_")
    assert iteration in context.graph.nodes
    assert context.queue.to_list()[-1] == iteration


def test_tasks_run_by_the_engine_schedule_through_it_once() -> None:
    with workflow("engine") as wf:

        @task(inject_context=True)
        def first(ctx: Any) -> None:
            ctx.next_task(TaskWrapper("extra", lambda: ctx.get_channel().append("ran", "x")))

    _, context = wf.execute("first", ret_context=True)
    assert context.get_channel().get("ran") == ["x"]
    assert "extra" in context.graph.nodes


def test_terminate_and_cancel_by_hand_set_the_flags() -> None:

    context = ExecutionContext.create(TaskGraph(), None)
    context.push_task_context(context.create_task_context("t"))
    context.terminate_workflow("enough")
    assert context.terminate_called and context.ctrl_message == "enough"
    context.cancel_workflow("stop")
    assert context.cancel_called


# -- retry backoff ------------------------------------------------------------------------------


def test_backoff_sleeps_once_per_retry_when_nothing_else_can_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    slept: list[float] = []
    monkeypatch.setattr(engine_module.time, "sleep", slept.append)
    attempts: list[int] = []
    with workflow("backoff") as wf:

        @task(
            retry_policy=RetryPolicy(
                max_retries=3, initial_interval=1.0, max_interval=5.0, backoff_factor=5.0
            )
        )
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 4:
                raise ValueError("not yet")
            return "ok"

    assert wf.execute("flaky") == "ok"
    assert slept == [1.0, 5.0, 5.0]


def test_backoff_with_a_patched_sleep_does_not_spin_when_others_were_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    slept: list[float] = []
    monkeypatch.setattr(engine_module.time, "sleep", slept.append)
    attempts: list[int] = []
    with workflow("busy") as wf:

        @task(retry_policy=RetryPolicy(max_retries=1, initial_interval=30.0))
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 2:
                raise ValueError("not yet")
            return "ok"

        @task
        def other() -> str:
            return "other"

        group = flaky | other
    wf.execute(group.task_id)
    assert len(attempts) == 2
    assert len(slept) <= 2  # one wait for the retry (never a loop of zero-length sleeps)


# -- checkpoints ---------------------------------------------------------------------------------


def test_deferred_checkpoint_request_under_upstream_names(tmp_path: Any) -> None:

    def step(ctx: Any) -> str:
        ctx.checkpoint(metadata={"stage": "one"}, path=str(tmp_path / "cp"))
        return "done"

    graph = TaskGraph()
    graph.add_node(TaskWrapper("step", step, inject_context=True, register_to_context=False))
    context = ExecutionContext.create(graph, "step")
    with context.executing_task(graph.get_node("step")):
        graph.get_node("step").run()
    assert context.checkpoint_requested
    assert context.checkpoint_request_metadata is not None
    assert context.checkpoint_request_metadata["stage"] == "one"
    assert context.checkpoint_request_path == str(tmp_path / "cp")
    pkl, _ = CheckpointManager.create_checkpoint(
        context, path=context.checkpoint_request_path, metadata=context.checkpoint_request_metadata
    )
    context.clear_checkpoint_request()
    assert context.checkpoint_request_metadata is None and not context.checkpoint_requested
    restored, restored_meta = CheckpointManager.resume_from_checkpoint(pkl)
    assert restored_meta.user_metadata["stage"] == "one"
    assert not restored.checkpoint_requested


def test_checkpoint_manager_path_helpers() -> None:

    context = ExecutionContext.create(TaskGraph(), None)
    assert CheckpointManager._infer_backend_from_path(None) == "local"
    assert CheckpointManager._infer_backend_from_path("a/b.pkl") == "local"
    assert CheckpointManager._infer_backend_from_path("redis://x") == "redis"
    assert CheckpointManager._infer_backend_from_path("s3://b/x") == "s3"
    assert CheckpointManager._get_base_path("/tmp/x.pkl") == "/tmp/x"
    assert CheckpointManager._get_base_path("x") == "x"
    assert CheckpointManager._resolve_base_path(context, "/c/p.pkl") == "/c/p"
    auto = CheckpointManager._resolve_base_path(context, None)
    assert auto.startswith("checkpoints") and f"step_{context.steps}" in auto
    checkpoint_id = CheckpointManager._generate_checkpoint_id(context)
    assert checkpoint_id.startswith(f"{context.session_id}_0_")
    meta = CheckpointMetadata.create(
        checkpoint_id="given",
        session_id="s",
        steps=1,
        start_node=None,
        backend={},
        user_metadata={},
    )
    assert meta.checkpoint_id == "given"


def test_checkpoint_manager_errors(tmp_path: Any) -> None:

    with pytest.raises(FileNotFoundError):
        CheckpointManager.resume_from_checkpoint(str(tmp_path / "missing.pkl"))
    for url in ("redis://x.pkl", "s3://bucket/x.pkl"):
        with pytest.raises(NotImplementedError, match=url.split(":")[0]):
            CheckpointManager.resume_from_checkpoint(url)
    context = ExecutionContext.create(TaskGraph(), None)
    for suffix in (".state.json", ".meta.json"):
        base = tmp_path / f"damaged{suffix.replace('.', '_')}"
        pkl, _ = CheckpointManager.create_checkpoint(context, path=str(base))
        (tmp_path / f"{base.name}{suffix}").write_text("not json")
        with pytest.raises(json.JSONDecodeError, match="is damaged"):
            CheckpointManager.resume_from_checkpoint(pkl)


def test_task_spec_round_trip_takes_the_task_from_the_graph() -> None:

    graph = TaskGraph()
    graph.add_node(TaskWrapper("a", lambda: 1, register_to_context=False))
    context = ExecutionContext.create(graph, "a")
    data = CheckpointManager._serialize_task_spec(TaskSpec(graph.get_node("a"), context))
    spec = CheckpointManager._deserialize_task_spec(data, context)
    assert spec.executable is graph.get_node("a")
    placeholder = CheckpointManager._deserialize_task_spec({"task_id": "gone"}, context)
    assert isinstance(placeholder.executable, Task) and placeholder.task_id == "gone"


# -- smaller upstream names ----------------------------------------------------------------------


def test_typed_channel_messages_name_the_operation() -> None:

    points = TypedChannel(MemoryChannel("p"), Point)
    with pytest.raises(TypeError, match="Message does not conform to Point"):
        points.send("k", {"x": 1})  # type: ignore[typeddict-item]
    with pytest.raises(ConfigError, match="Message type 'nope' not registered"):
        ChannelTypeRegistry.create_channel(MemoryChannel("p"), "nope")


def test_engine_runs_one_task_through_its_handler() -> None:

    engine = WorkflowEngine()
    single = TaskWrapper("single", lambda: "value", register_to_context=False)
    assert isinstance(engine._get_handler(single), DirectTaskHandler)
    graph = TaskGraph()
    graph.add_node(single)
    context = ExecutionContext.create(graph, "single")
    assert engine._execute_task(single, context) == "value"
    assert context.get_result("single") == "value"
    single.handler_type = "absent"
    with pytest.raises(ValueError, match="Unknown handler type: absent"):
        engine._get_handler(single)
    assert context._task_execution_stack == []


def test_parallel_group_run_goes_through_the_group_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    calls: list[tuple[Any, ...]] = []
    with workflow("ge") as wf:
        left, right = Task("left"), Task("right")
        group = (left | right).with_execution(backend="direct", backend_config={"n": 1})
    context = ExecutionContext.create(wf.graph, group.task_id)
    group.set_execution_context(context)
    with monkeypatch.context() as patched:
        patched.setattr(
            GroupExecutor,
            "execute_parallel_group",
            lambda *args, **kwargs: calls.append((args, kwargs)),
        )
        group.run()
    ((args, kwargs),) = calls
    assert args[0] == group.task_id and [t.task_id for t in args[1]] == ["left", "right"]
    assert args[2] is context
    assert kwargs == {"backend": "direct", "backend_config": {"n": 1}, "policy": "strict"}
    assert group._execution_config == {
        "backend": "direct",
        "backend_config": {"n": 1},
        "policy": "strict",
    }

    ran: list[str] = []

    members = [TaskWrapper(n, lambda n=n: ran.append(n), register_to_context=False) for n in "xy"]
    GroupExecutor.execute_parallel_group("loose", members, context, policy="best_effort")
    assert sorted(ran) == ["x", "y"]


def test_graph_details_upstream_reads() -> None:

    with workflow("details") as wf:
        a, b, c = Task("a"), Task("b"), Task("c")
        group = a | b
        assert not group._has_successors()
        group >> c
        assert group._has_successors()
    assert wf.graph.edges() == [(group.task_id, "c")]
    with pytest.raises(ValueError, match="requires at least one task"):
        SequentialTask([])


def test_group_executor_is_reachable_where_upstream_defines_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert task_module.GroupExecutor is GroupExecutor
    seen: list[Any] = []
    monkeypatch.setattr(
        task_module.GroupExecutor, "execute_parallel_group", lambda *a, **k: seen.append(k)
    )
    with workflow("patched") as wf:
        group = Task("p") | Task("q")
    group.set_execution_context(ExecutionContext.create(wf.graph, group.task_id))
    group.run()
    assert seen == [{"backend": None, "backend_config": {}, "policy": "strict"}]
    with pytest.raises(AttributeError):
        _ = task_module.NoSuchThing
