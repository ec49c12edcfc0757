"""Reference §1: defining tasks (@task, TaskWrapper, Task, SequentialTask, ParallelGroup)."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import cloudpickle
import pytest

from graflow import RetryPolicy, TaskExecutionContext, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.graph import TaskGraph
from graflow.core.policy import (
    AtLeastNGroupPolicy,
    BestEffortGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
    StrictGroupPolicy,
)
from graflow.core.task import (
    Executable,
    ParallelGroup,
    SequentialTask,
    Task,
    TaskWrapper,
    _parameter_names,
    chain,
    parallel,
)
from graflow.core.workflow import current_workflow_context
from graflow.exceptions import ConfigError, DuplicateTaskError, GraflowRuntimeError


def _plain(x: int = 1) -> int:
    return x * 10


# -- §1.1 the @task decorator -----------------------------------------------------------------


def test_bare_decorator_returns_task_wrapper_named_after_function() -> None:
    @task
    def fetch() -> int:
        return 1

    assert isinstance(fetch, TaskWrapper)
    assert fetch.task_id == "fetch"


def test_empty_call_decorator() -> None:
    @task()
    def fetch() -> int:
        return 1

    assert isinstance(fetch, TaskWrapper)
    assert fetch.task_id == "fetch"


def test_positional_id_decorator() -> None:
    @task("my_id")
    def fetch() -> int:
        return 1

    assert fetch.task_id == "my_id"


def test_positional_id_with_options() -> None:
    @task("my_id", inject_context=True, max_cycles=4)
    def fetch(ctx: TaskExecutionContext) -> int:
        return 1

    assert fetch.task_id == "my_id"
    assert fetch.inject_context is True
    assert fetch.max_cycles == 4


def test_keyword_id_decorator() -> None:
    @task(id="kw_id")
    def fetch() -> int:
        return 1

    assert fetch.task_id == "kw_id"


def test_options_are_stored_on_the_wrapper() -> None:
    policy = RetryPolicy(max_retries=4, initial_interval=0.5)

    @task(handler="remote", resolve_keyword_args=False, max_cycles=5, retry_policy=policy)
    def job() -> None:
        return None

    assert job.handler_type == "remote"
    assert job.resolve_keyword_args is False
    assert job.max_cycles == 5
    assert job.retry_policy is policy
    assert job.max_retries == 4


def test_defaults_of_a_plain_task() -> None:
    @task
    def job() -> None:
        return None

    assert job.handler_type == "direct"
    assert job.inject_context is False
    assert job.resolve_keyword_args is True
    assert job.max_cycles is None
    assert job.max_retries is None
    assert job.retry_policy is None


def test_retry_policy_wins_over_max_retries() -> None:
    @task(max_retries=7, retry_policy=RetryPolicy(max_retries=2))
    def job() -> None:
        return None

    assert job.max_retries == 2


def test_max_retries_alone() -> None:
    @task(max_retries=3)
    def job() -> None:
        return None

    assert job.max_retries == 3
    assert job.retry_policy is None


@pytest.mark.parametrize("option", ["retry", "retries", "name", "timeout"])
def test_unknown_keyword_is_a_type_error(option: str) -> None:
    with pytest.raises(TypeError):
        task(**{option: 3})  # type: ignore[call-overload]


def test_function_metadata_is_copied() -> None:
    def documented(a: int, b: str = "x") -> str:
        """Say something."""
        return b * a

    wrapper = task(documented)
    assert wrapper.__name__ == "documented"
    assert wrapper.__doc__ == "Say something."
    assert wrapper.__module__ == __name__
    assert wrapper.__qualname__ == documented.__qualname__
    assert wrapper.__annotations__ == documented.__annotations__


def test_id_of_a_callable_without_name_is_a_random_number() -> None:
    nameless = functools.partial(_plain, x=2)
    first = task(nameless)
    second = task(functools.partial(_plain, x=3))
    assert first.task_id.isdigit()
    assert first.task_id != second.task_id


def test_inject_context_passes_context_as_first_positional_argument() -> None:
    seen: list[Any] = []

    @task(inject_context=True)
    def job(whatever_name: TaskExecutionContext, value: int = 0) -> int:
        seen.append(whatever_name)
        return value

    with workflow("wf") as wf:
        job >> Task("end")
    result, ctx = wf.execute(
        "job", ret_context=True, initial_channel={"whatever_name": "ignored", "value": 5}
    )
    assert isinstance(seen[0], TaskExecutionContext)
    assert seen[0].task_id == "job"
    assert result is None  # "end" ran last
    assert ctx.get_result("job") == 5


def test_decorated_inside_block_registers_immediately() -> None:
    with workflow("wf") as wf:

        @task
        def a() -> None:
            return None

        assert "a" in wf.graph.nodes
        assert a._pending_registration is False


def test_duplicate_id_inside_block_raises() -> None:
    with workflow("wf"):

        @task("same")
        def a() -> None:
            return None

        with pytest.raises(DuplicateTaskError):

            @task("same")
            def b() -> None:
                return None


def test_outside_block_task_is_pending_until_used_in_an_operator() -> None:
    @task
    def a() -> None:
        return None

    @task
    def b() -> None:
        return None

    assert a._pending_registration is True
    with workflow("wf") as wf:
        assert "a" not in wf.graph.nodes
        a >> b
        assert {"a", "b"} <= set(wf.graph.nodes)
        assert a._pending_registration is False


# -- §1.2 Executable --------------------------------------------------------------------------


def test_executable_defaults_and_context_accessors() -> None:
    @task
    def job() -> None:
        return None

    assert isinstance(job, Executable)
    assert Executable.handler_type == "direct"
    with pytest.raises(GraflowRuntimeError):
        job.get_execution_context()
    graph = TaskGraph()
    ctx = ExecutionContext.create(graph)
    job.set_execution_context(ctx)
    assert job.get_execution_context() is ctx


def test_pickling_drops_the_attached_context() -> None:
    @task
    def job(x: int = 2) -> int:
        return x + 1

    job.set_execution_context(ExecutionContext.create(TaskGraph()))
    clone = cloudpickle.loads(cloudpickle.dumps(job))
    assert clone.task_id == "job"
    with pytest.raises(GraflowRuntimeError):
        clone.get_execution_context()
    assert clone.run() == 3


def test_pickling_a_group_drops_redis_client_from_backend_config() -> None:
    class FakeClient:
        def __reduce__(self) -> Any:
            raise TypeError("a client cannot be pickled")

    with workflow("wf"):
        group = Task("a") | Task("b")
        group.backend_config["redis_client"] = FakeClient()
        group.backend_config["key_prefix"] = "app"
        clone = cloudpickle.loads(cloudpickle.dumps(group))
    assert clone.backend_config == {"key_prefix": "app"}
    assert [t.task_id for t in clone.tasks] == ["a", "b"]


# -- §1.3 TaskWrapper -------------------------------------------------------------------------


def test_direct_construction_registers_like_the_decorator() -> None:
    with workflow("wf") as wf:
        TaskWrapper("lam", lambda: 1)
        TaskWrapper("hidden", lambda: 2, register_to_context=False)
    assert "lam" in wf.graph.nodes
    assert "hidden" not in wf.graph.nodes


def test_call_without_context_or_arguments_runs_now() -> None:
    @task(inject_context=True)
    def job(ctx: TaskExecutionContext, x: int = 4) -> tuple[str, int]:
        return ctx.task_id, x

    assert job() == ("job", 4)
    with pytest.raises(GraflowRuntimeError):
        job.get_execution_context()


def test_call_with_keywords_creates_a_bound_instance() -> None:
    template = task(_plain)
    inst = template(x=3)
    assert isinstance(inst, TaskWrapper)
    assert inst is not template
    assert re.fullmatch(r"_plain_[0-9a-f]{8}", inst.task_id)
    assert inst._bound_kwargs == {"x": 3}
    assert inst.func is template.func
    assert inst._pending_registration is True
    named = template(task_id="t1", x=4)
    assert named.task_id == "t1"
    assert named._bound_kwargs == {"x": 4}


def test_bound_instance_keeps_the_template_options() -> None:
    policy = RetryPolicy(max_retries=2)

    @task(inject_context=True, max_cycles=3, retry_policy=policy, handler="h")
    def template(ctx: TaskExecutionContext, x: int = 0) -> int:
        return x

    inst = template(task_id="copy", x=1)
    assert inst.inject_context is True
    assert inst.max_cycles == 3
    assert inst.retry_policy is policy
    assert inst.max_retries == 2
    assert inst.handler_type == "h"


def test_bound_instance_registers_in_the_current_block() -> None:
    template = task(_plain)
    with workflow("wf") as wf:
        template(task_id="t5", x=5)
        assert "t5" in wf.graph.nodes
        assert wf.execute("t5") == 50


def test_positional_arguments_in_instance_mode_are_a_type_error() -> None:
    template = task(_plain)
    with pytest.raises(TypeError, match="does not support positional arguments"):
        template(1)


def test_attached_context_is_sticky_after_a_run() -> None:
    """Quirk: once run by the engine, t(x=3) executes instead of creating an instance."""
    with workflow("wf") as wf:
        t = task(_plain)
    assert wf.execute("_plain") == 10
    assert t(x=3) == 30


def test_run_always_executes_and_detaches_afterwards() -> None:
    t = task(_plain)
    assert t.run(x=2) == 20
    with pytest.raises(GraflowRuntimeError):
        t.get_execution_context()
    assert isinstance(t(x=2), TaskWrapper)


def test_task_wrapper_repr() -> None:
    assert repr(task(_plain)) == "TaskWrapper(_plain)"


# -- §1.4 Task --------------------------------------------------------------------------------


def test_placeholder_task() -> None:
    with workflow("wf") as wf:
        root = Task("root")
        Task("loose", register_to_context=False)
    assert root.task_id == "root"
    assert root.run() is None
    assert repr(root) == "Task(root)"
    assert "root" in wf.graph.nodes
    assert "loose" not in wf.graph.nodes


# -- §1.5 SequentialTask ----------------------------------------------------------------------


def test_sequential_task_members() -> None:
    ran: list[str] = []
    with workflow("wf"):
        a = TaskWrapper("a", lambda: ran.append("a"))
        b = TaskWrapper("b", lambda: ran.append("b"))
        c = TaskWrapper("c", lambda: ran.append("c"))
        seq = a >> b >> c
    assert isinstance(seq, SequentialTask)
    assert seq.tasks == [a, b, c]
    assert seq.leftmost is a
    assert seq.rightmost is c
    assert seq.task_id == "a"
    assert len(seq) == 3
    assert seq[1] is b
    assert list(seq) == [a, b, c]
    assert repr(seq) == "SequentialTask([a >> b >> c])"
    seq.run()
    assert ran == ["a"]


def test_empty_sequential_task_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SequentialTask([])


# -- §1.6 ParallelGroup -----------------------------------------------------------------------


def test_group_ids_count_per_workflow() -> None:
    with workflow("one") as one:
        g1 = Task("a") | Task("b")
        g2 = Task("c") | Task("d")
    with workflow("two") as two:
        g3 = Task("e") | Task("f")
    assert (g1.task_id, g2.task_id, g3.task_id) == (
        "ParallelGroup_1",
        "ParallelGroup_2",
        "ParallelGroup_1",
    )
    assert "ParallelGroup_2" in one.graph.nodes
    assert list(two.graph.nodes).count("ParallelGroup_1") == 1


def test_group_outside_block_lands_in_the_implicit_workflow() -> None:
    group = Task("a") | Task("b")
    implicit = current_workflow_context()
    assert group.task_id == "ParallelGroup_1"
    assert "ParallelGroup_1" in implicit.graph.nodes


def test_group_name_argument_renames_immediately() -> None:
    with workflow("wf") as wf:
        named = ParallelGroup([Task("a"), Task("b")], name="fanout")
        after = Task("c") | Task("d")
    assert named.task_id == "fanout"
    assert "fanout" in wf.graph.nodes
    # The default name is drawn from the counter before the rename.
    assert after.task_id == "ParallelGroup_2"


def test_group_members_are_not_linked_by_edges() -> None:
    with workflow("wf") as wf:
        group = Task("a") | Task("b")
    assert wf.graph.edges == []
    assert wf.graph.get_node("a").task_id == "a"
    assert wf.graph.has_node("b")
    assert repr(group) == "ParallelGroup(['a', 'b'])"


def test_set_group_name() -> None:
    with workflow("wf") as wf:
        group = Task("a") | Task("b")
        group >> Task("c")
        assert group.set_group_name("extract") is group
        assert group.task_id == "extract"
        assert "ParallelGroup_1" not in wf.graph.nodes
        assert wf.graph.successors("extract") == ["c"]
        other = Task("x") | Task("y")
        with pytest.raises(ValueError):
            other.set_group_name("extract")
    with workflow("elsewhere"), pytest.raises(KeyError):
        group.set_group_name("again")


def test_with_execution_returns_self_and_stores_options() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    configured = group.with_execution(backend="THREADING", backend_config={"thread_count": 2})
    assert configured is group
    assert group.execution_backend == "threading"
    assert group.backend_config == {"thread_count": 2}
    assert group.policy == "strict"


@pytest.mark.parametrize("name", ["threading", "Redis", "DIRECT"])
def test_with_execution_backend_names_are_case_insensitive(name: str) -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(backend=name)
    assert group.execution_backend == name.lower()


def test_with_execution_accepts_an_enum_like_backend() -> None:
    class Backend:
        value = "direct"

    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(backend=Backend())
    assert group.execution_backend == "direct"


def test_with_execution_unknown_backend_is_a_config_error() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    with pytest.raises(ConfigError, match="nope"):
        group.with_execution(backend="nope")


def test_with_execution_drops_redis_client() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(backend_config={"redis_client": object(), "key_prefix": "app"})
    assert group.backend_config == {"key_prefix": "app"}


class _Quorum(GroupExecutionPolicy):
    def on_group_finished(self, group_id: str, tasks: Any, results: Any, context: Any) -> None:
        return None


@pytest.mark.parametrize(
    ("policy", "stored"),
    [
        ("strict", "strict"),
        ("best_effort", "best_effort"),
        ("BEST_EFFORT", "best_effort"),
        (StrictGroupPolicy(), "strict"),
        (BestEffortGroupPolicy(), "best_effort"),
        (CriticalGroupPolicy(["a"]), {"type": "critical", "critical_task_ids": ["a"]}),
        (AtLeastNGroupPolicy(1), {"type": "at_least_n", "min_success": 1}),
    ],
)
def test_with_execution_stores_policies_in_canonical_form(policy: Any, stored: Any) -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(policy=policy)
    assert group.policy == stored


def test_with_execution_stores_a_custom_policy_object() -> None:
    custom = _Quorum()
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(policy=custom)
    assert group.policy == {"type": "__custom__", "policy": custom}


def test_with_execution_without_arguments_resets_policy_to_strict() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(policy="best_effort")
    group.with_execution()
    assert group.policy == "strict"


def test_with_execution_keeps_backend_and_merges_config_when_left_out() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    group.with_execution(backend="direct", backend_config={"thread_count": 2})
    group.with_execution(backend_config={"key_prefix": "app"}, policy="best_effort")
    assert group.execution_backend == "direct"
    assert group.backend_config == {"thread_count": 2, "key_prefix": "app"}
    assert group.policy == "best_effort"


def test_with_execution_unknown_policy_name_is_a_config_error() -> None:
    with workflow("wf"):
        group = Task("a") | Task("b")
    with pytest.raises(ConfigError):
        group.with_execution(policy="critical")


def test_group_run_returns_none_and_stores_none() -> None:
    with workflow("wf") as wf:
        TaskWrapper("a", lambda: 1) | TaskWrapper("b", lambda: 2)
    result, ctx = wf.execute("ParallelGroup_1", ret_context=True)
    assert result is None
    assert ctx.get_result("ParallelGroup_1") is None
    assert ctx.get_result("a") == 1
    assert ctx.get_result("b") == 2


# -- §1.7 chain / parallel --------------------------------------------------------------------


def test_chain_folds_with_rshift() -> None:
    with workflow("wf") as wf:
        a, b, c = Task("a"), Task("b"), Task("c")
        seq = chain(a, b, c)
    assert isinstance(seq, SequentialTask)
    assert seq.tasks == [a, b, c]
    assert wf.graph.edges == [("a", "b"), ("b", "c")]


def test_chain_of_one() -> None:
    with workflow("wf"):
        a = Task("a")
        single = chain(a)
        existing = Task("b") >> Task("c")
    assert isinstance(single, SequentialTask)
    assert single.tasks == [a]
    assert chain(existing) is existing


def test_chain_needs_a_task() -> None:
    with pytest.raises(ValueError):
        chain()


def test_parallel_folds_with_or() -> None:
    with workflow("wf"):
        group = parallel(Task("a"), Task("b"), Task("c"))
    assert isinstance(group, ParallelGroup)
    assert [t.task_id for t in group.tasks] == ["a", "b", "c"]
    assert group.task_id == "ParallelGroup_1"


@pytest.mark.parametrize("count", [0, 1])
def test_parallel_needs_two_tasks(count: int) -> None:
    with workflow("wf"):
        tasks = [Task(f"t{i}") for i in range(count)]
        with pytest.raises(ValueError):
            parallel(*tasks)


def _signatures() -> list[Any]:
    def plain(a, b=1, *, c, d=2):  # type: ignore[no-untyped-def]
        return a

    def posonly(p, /, a, *args, k, **kw):  # type: ignore[no-untyped-def]
        return p

    def star_first(*args, x, y=0):  # type: ignore[no-untyped-def]
        return x

    def kwonly_only(*, ctx, x):  # type: ignore[no-untyped-def]
        return x

    def nothing():  # type: ignore[no-untyped-def]
        return None

    def with_locals(a, b):  # type: ignore[no-untyped-def]
        c = a + b
        return c

    def decorated(a, b):  # type: ignore[no-untyped-def]
        return a

    @functools.wraps(decorated)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        return decorated(*args, **kwargs)

    return [plain, posonly, star_first, kwonly_only, nothing, with_locals, wrapper, lambda x, y: x]


@pytest.mark.parametrize("func", _signatures())
@pytest.mark.parametrize("inject", [False, True])
def test_parameter_names_read_off_the_code_match_inspect(func: Any, inject: bool) -> None:
    params = list(inspect.signature(func).parameters.values())
    if inject and params:
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    assert _parameter_names.__wrapped__(func, inject) == tuple(
        p.name for p in params if p.kind in kinds
    )
