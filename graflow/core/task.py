"""The task model: executables, the ``>>``/``|`` operators, chains and parallel groups.

Definition only: nothing here runs a workflow. A task's body runs when an execution backend
calls ``run()`` on it inside a run, with the run's context attached.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import types
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from graflow.channels.base import Deferred
from graflow.core.policy import canonicalize_group_policy
from graflow.core.retry import RetryPolicy
from graflow.core.scope import current_task_context
from graflow.core.workflow import current_workflow_context, get_current_workflow_context
from graflow.exceptions import ConfigError, GraflowRuntimeError

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext, TaskExecutionContext
    from graflow.core.graph import TaskGraph
    from graflow.core.policy import GroupExecutionPolicy

__all__ = [
    "Executable",
    "ParallelGroup",
    "SequentialTask",
    "Task",
    "TaskWrapper",
    "chain",
    "parallel",
]

_MISSING = object()
_FUNC_ATTRS = ("__name__", "__doc__", "__module__", "__qualname__")


def group_members_key(group_id: str) -> str:
    """The channel key that lists a finished group's member ids, in member order."""
    return f"{group_id}.__members__"


def group_results(get: Callable[..., Any], group_id: str, default: Any) -> Any:
    """``{member_id: result}`` of the finished group ``group_id``, in member order (members
    without a stored result, e.g. failed under a tolerant policy, are left out); ``default``
    when ``group_id`` names no finished group. ``get`` is a channel's ``get``."""
    members = get(group_members_key(group_id), None)
    if members is None:
        return default
    results: dict[str, Any] = {}
    for member_id in members:
        value = get(member_id + ".__result__", _MISSING)
        if isinstance(value, Deferred):
            value = value.resolve()
        if value is None:
            value = group_results(get, member_id, None)  # a nested group
        if value is not _MISSING:
            results[member_id] = value
    return results


def _check_bound(task_id: str, kwargs: dict[str, Any]) -> None:
    """TypeError when a task object is bound where its result was meant (#18)."""
    for name, value in kwargs.items():
        items = value if isinstance(value, list | tuple | set) else (value,)
        found = next((v for v in items if isinstance(v, Executable)), None)
        if found is None:
            continue
        if isinstance(found, ParallelGroup):
            fix = (
                f"name the parameter after the group ({found.task_id!r}) and put the group "
                f"before this task: it receives {{member_id: result}}"
            )
        else:
            fix = (
                f"name the parameter after the task ({found.task_id!r}) and put it before this "
                "task, or pass task ids and read them with ctx.get_result; a group's members' "
                "results arrive as {member_id: result} in a parameter named after the group"
            )
        raise TypeError(
            f"{task_id}({name}=...) binds a task object, not its result, and a task sees only "
            f"values: {fix}"
        )


def _ensure_registered(exe: Executable) -> None:
    """Add ``exe`` to the current workflow's graph if that graph lacks it.

    A task defined at module level (outside any ``with workflow``) can be wired into any
    number of workflows (#18): each workflow it meets through ``>>``/``|`` gets it as a
    node. A node of the same id that only an edge made (no task yet) gets this task.
    """
    if isinstance(exe, SequentialTask):
        return
    graph = current_workflow_context().graph
    exe._pending_registration = False
    nodes = graph.nodes
    node_id = exe.task_id
    if node_id not in nodes:
        graph.add_node(exe)
    elif "task" not in nodes[node_id]:
        nodes[node_id]["task"] = exe  # the view hands out the node's own data dict
    else:
        return
    exe._workflow_graph = graph


def _register_new(exe: Executable, register: bool) -> None:
    """Register a just-built task in the workflow current in this thread, if any."""
    exe._pending_registration = False
    if not register:
        return
    wf = get_current_workflow_context()
    if wf is None:
        exe._pending_registration = True
    else:
        wf.graph.add_node(exe)
        exe._workflow_graph = wf.graph


def _entry(exe: Executable) -> Executable:
    return exe.leftmost if isinstance(exe, SequentialTask) else exe


def _exit(exe: Executable) -> Executable:
    return exe.rightmost if isinstance(exe, SequentialTask) else exe


def _items(exe: Executable) -> list[Executable]:
    return list(exe.tasks) if isinstance(exe, SequentialTask) else [exe]


def _check_operand(op: str, other: object) -> Executable:
    if not isinstance(other, Executable):
        raise TypeError(
            f"unsupported operand for {op}: {type(other).__name__!r}; "
            "both sides must be tasks, chains or parallel groups"
        )
    return other


CPU_LANE = "cpu"
IO_LANE = "io"
ASYNC_LANE = "async"


class Executable:
    """Anything a workflow can schedule: a task, a parallel group, or a chain of them."""

    handler_type: str = "direct"

    @property
    def lane(self) -> str:
        """Where a worker runs it: ``cpu`` (one at a time), ``io`` (threads) or ``async``."""
        return CPU_LANE

    _pending_registration: bool = False
    _execution_context: ExecutionContext | None = None
    _workflow_graph: TaskGraph | None = None  # the graph this executable was added to

    @property
    def task_id(self) -> str:
        """The node id of this executable."""
        raise NotImplementedError

    def set_execution_context(self, context: ExecutionContext | None) -> None:
        """Attach the run this executable belongs to."""
        self._execution_context = context

    def get_execution_context(self) -> ExecutionContext:
        """The attached run; GraflowRuntimeError when none is attached."""
        if self._execution_context is None:
            raise GraflowRuntimeError(f"No execution context set for task '{self.task_id}'")
        return self._execution_context

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body of this executable."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    # -- operators --------------------------------------------------------------------
    def __rshift__(self, other: object) -> SequentialTask:
        right = _check_operand(">>", other)
        _ensure_registered(self)
        for item in _items(right):
            _ensure_registered(item)
        current_workflow_context().graph.add_edge(_exit(self).task_id, _entry(right).task_id)
        return SequentialTask(_items(self) + _items(right))

    def __lshift__(self, other: object) -> SequentialTask:
        left = _check_operand("<<", other)
        return left >> self

    def __or__(self, other: object) -> ParallelGroup:
        right = _check_operand("|", other)
        if isinstance(right, ParallelGroup):
            # `t | group`: t joins the group as its first member (and runs once: no edge).
            _ensure_registered(self)
            right._insert_first(_entry(self))
            return right
        return ParallelGroup([_entry(self), _entry(right)])

    # -- pickling ---------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_execution_context", None)
        state.pop("_workflow_graph", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class Task(Executable):
    """A placeholder node: running it does nothing and returns None."""

    def __init__(self, task_id: str, register_to_context: bool = True) -> None:
        self._task_id = task_id
        _register_new(self, register_to_context)

    @property
    def task_id(self) -> str:
        return self._task_id

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def __repr__(self) -> str:
        return f"Task({self._task_id})"


class TaskWrapper(Executable):
    """A task built from a plain function (what ``@task`` returns)."""

    def __init__(
        self,
        task_id: str,
        func: Callable[..., Any],
        inject_context: bool = False,
        inject_llm_client: bool = False,
        inject_llm_agent: str | None = None,
        register_to_context: bool = True,
        handler_type: str | None = None,
        resolve_keyword_args: bool = True,
        max_cycles: int | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout_s: float | None = None,
        io: bool = False,
    ) -> None:
        if not callable(func):
            raise TypeError(f"task '{task_id}': {func!r} is not callable")
        _check_kind(task_id, func, io)
        if max_cycles is not None and max_cycles < 1:
            raise ConfigError(f"task '{task_id}': max_cycles must be >= 1, got {max_cycles}")
        if max_retries is not None and max_retries < 0:
            raise ConfigError(f"task '{task_id}': max_retries must be >= 0, got {max_retries}")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"task '{task_id}': timeout_s must be > 0, got {timeout_s}")
        self._task_id = task_id
        self.func = func
        self.inject_context = inject_context
        self.inject_llm_client = inject_llm_client
        self.inject_llm_agent = inject_llm_agent
        self.handler_type = handler_type or "direct"
        self.resolve_keyword_args = resolve_keyword_args
        self.max_cycles = max_cycles
        self.retry_policy = retry_policy
        self.max_retries = retry_policy.max_retries if retry_policy is not None else max_retries
        self.timeout_s = timeout_s
        self.io = io
        self._bound_kwargs: dict[str, Any] = {}
        self._iteration_args: tuple[Any, ...] = ()
        self._param_names: tuple[str, ...] | None = None
        for attr in _FUNC_ATTRS:
            if hasattr(func, attr):
                setattr(self, attr, getattr(func, attr))
        self.__annotations__ = dict(getattr(func, "__annotations__", {}))
        _register_new(self, register_to_context)

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def lane(self) -> str:
        """``io`` for ``@task(io=True)``, ``async`` for an ``async def``, else ``cpu``."""
        if self.io:
            return IO_LANE
        return ASYNC_LANE if _is_async(self.func) else CPU_LANE

    def __reduce__(self) -> tuple[Any, ...]:
        # A compact form: graphs of thousands of tasks are pickled once per run for the
        # worker processes, and a dict per task costs several times more than this tuple.
        options = _get_options(self)
        # Equal options pickle once; unhashable ones (a RetryPolicy) stay as they are.
        with contextlib.suppress(TypeError):
            options = _OPTIONS_SEEN.setdefault(options, options)
        state = self.__dict__
        extras = (
            None
            if state.keys() <= _WRAPPER_FIELDS
            else {k: v for k, v in state.items() if k not in _WRAPPER_FIELDS}
        )
        return (
            _restore_task_wrapper,
            (
                self._task_id,
                self.func,
                options,
                self._bound_kwargs or None,
                self._iteration_args or None,
                extras or None,
            ),
        )

    # -- building variants ------------------------------------------------------------
    def _copy(self, task_id: str, register: bool = True) -> TaskWrapper:
        # What __init__ would make of this task's function and options, without checking
        # them again: fan-outs bind thousands of instances of one task. The parameter
        # names carry over (same function, same inject_context).
        clone = TaskWrapper.__new__(TaskWrapper)
        state = clone.__dict__
        state.update(zip(_OPTION_FIELDS, _get_options(self), strict=True))
        state["_task_id"] = task_id
        func = state["func"] = self.func
        state["_bound_kwargs"] = dict(self._bound_kwargs)
        state["_iteration_args"] = ()
        state["_param_names"] = self._param_names
        for attr in _FUNC_ATTRS:
            value = getattr(func, attr, _MISSING)
            if value is not _MISSING:
                state[attr] = value
        state["__annotations__"] = dict(getattr(func, "__annotations__", {}))
        _register_new(clone, register)
        return clone

    def bind(self, task_id: str | None = None, **kwargs: Any) -> TaskWrapper:
        """A new task instance of the same function with ``kwargs`` bound."""
        name = getattr(self.func, "__name__", "task")
        _check_bound(self._task_id, kwargs)
        instance = self._copy(task_id or f"{name}_{uuid.uuid4().hex[:8]}")
        instance._bound_kwargs.update(kwargs)
        return instance

    def make_iteration(self, new_id: str, data: Any) -> TaskWrapper:
        """The node that runs this task's next iteration, receiving ``data``."""
        node = self._copy(new_id)
        node._iteration_args = () if data is None else (data,)
        return node

    # -- running ----------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._execution_context is not None or (not args and not kwargs):
            return self.run(*args, **kwargs)
        if args:
            raise TypeError(
                "TaskWrapper instance creation does not support positional arguments; "
                f"use keyword arguments, e.g. {self._task_id}(task_id='x', value=1)"
            )
        task_id = kwargs.pop("task_id", None)
        return self.bind(task_id, **kwargs)

    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters filled from results and channel keys, in order."""
        names = self._param_names
        if names is None:
            func = self.func
            try:
                if type(func) is functools.partial:
                    names = _partial_parameter_names(
                        func.func, len(func.args), tuple(func.keywords), self.inject_context
                    )
                else:
                    names = _parameter_names(func, self.inject_context)
            except TypeError:  # an unhashable callable object: no cache
                names = _parameter_names.__wrapped__(func, self.inject_context)
            self._param_names = names
        return names

    def build_arguments(
        self, channel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of one call (context excluded)."""
        positional = self._iteration_args + args
        call_kwargs: dict[str, Any] = {}
        bound = self._bound_kwargs
        if self.resolve_keyword_args and channel is not None:
            get = channel.get
            for name in self.parameter_names()[len(positional) :]:
                if name in bound:  # the bound value wins: no channel look-up for it
                    continue
                value = get(name + ".__result__", _MISSING)
                if value is None:  # a group's own result: take its members' instead (#18)
                    value = group_results(get, name, None)
                elif value is _MISSING:
                    value = get(name, _MISSING)
                if value is not _MISSING:
                    call_kwargs[name] = value
        if bound:
            call_kwargs.update(bound)
        if kwargs:
            call_kwargs.update(kwargs)
        return positional, call_kwargs

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function with arguments resolved from the attached run."""
        context = self._execution_context
        if context is None:
            return self._run_detached(args, kwargs)
        task_ctx: TaskExecutionContext | None = current_task_context.get()
        if task_ctx is None or task_ctx.task_id != self._task_id:
            task_ctx = context.create_task_context(self._task_id)
        prepared = task_ctx.prepared_kwargs
        if prepared is not None and not args and not kwargs:
            positional: tuple[Any, ...] = self._iteration_args
            call_kwargs = prepared
        else:
            positional, call_kwargs = self.build_arguments(task_ctx.get_channel(), args, kwargs)
        if self.inject_context:
            return self.func(task_ctx, *positional, **call_kwargs)
        return self.func(*positional, **call_kwargs)

    def _run_detached(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Convenience for tests and scripts: a throw-away one-node run. The context module
        # imports this one, so it is resolved here, at call time.
        from graflow.core.context import ExecutionContext  # noqa: PLC0415
        from graflow.core.graph import TaskGraph  # noqa: PLC0415

        graph = TaskGraph()
        graph.add_node(self)
        context = ExecutionContext.create(graph, self._task_id)
        self._execution_context = context
        token = current_task_context.set(context.create_task_context(self._task_id))
        try:
            return self.run(*args, **kwargs)
        finally:
            current_task_context.reset(token)
            self._execution_context = None

    def __repr__(self) -> str:
        return f"TaskWrapper({self._task_id})"


def _is_async(func: Callable[..., Any]) -> bool:
    try:
        return _is_async_cached(func)
    except TypeError:  # an unhashable callable object
        return _is_async_cached.__wrapped__(func)


@functools.lru_cache(maxsize=4096)
def _is_async_cached(func: Callable[..., Any]) -> bool:
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    call = getattr(target, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(target) or (
        not inspect.isroutine(target) and inspect.iscoroutinefunction(call)
    )


def _check_kind(task_id: str, func: Callable[..., Any], io: bool) -> None:
    """ConfigError for a function no lane can run as asked."""
    if type(func) is types.FunctionType and not io:
        # The common case, once per task instance: a plain function's code flags say what
        # inspect would (a W1 of 10,000 tasks spent 45 ms in inspect here).
        flags = func.__code__.co_flags
        if flags & inspect.CO_ASYNC_GENERATOR:
            _refuse_async_generator(task_id)
        return
    if inspect.isasyncgenfunction(func):
        _refuse_async_generator(task_id)
    if inspect.isgeneratorfunction(func):
        return
    if io and _is_async(func):
        raise ConfigError(
            f"task '{task_id}': io=True is for blocking sync functions, and this one is "
            "async def: drop io=True (async tasks run on the worker's event loop)"
        )


def _refuse_async_generator(task_id: str) -> NoReturn:
    raise ConfigError(
        f"task '{task_id}': an async generator function cannot be a task (its items "
        "would never be awaited); make it an async def that returns a list"
    )


@functools.lru_cache(maxsize=4096)
def _parameter_names(func: Callable[..., Any], inject_context: bool) -> tuple[str, ...]:
    # Cached per function: thousands of task instances often share one function, and
    # inspect.signature costs tens of microseconds. A plain function's names are read off
    # its code object, which is what inspect would do: a worker unpickles new function
    # objects every run, so the cache alone would not spare it the cost.
    if (
        type(func) is types.FunctionType
        and "__wrapped__" not in func.__dict__
        and "__signature__" not in func.__dict__
    ):
        code = func.__code__
        first, last = code.co_posonlyargcount, code.co_argcount + code.co_kwonlyargcount
        names = code.co_varnames[first:last]
        # The context takes the first parameter in signature order: positional-only ones,
        # then the others, then *args, then keyword-only ones. Only the named kinds count.
        takes_first = code.co_posonlyargcount == 0 and (
            code.co_argcount > 0 or not code.co_flags & inspect.CO_VARARGS
        )
        if inject_context and takes_first:
            names = names[1:]
        return tuple(names)
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    if inject_context and params:
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in kinds)


@functools.lru_cache(maxsize=4096)
def _partial_parameter_names(
    func: Callable[..., Any], nargs: int, keywords: tuple[str, ...], inject_context: bool
) -> tuple[str, ...]:
    # A partial's parameters depend on its function and on how many positional arguments and
    # which keywords it binds, not on their values: tasks made of one function with
    # functools.partial(f, i) share one entry instead of an inspect.signature call each.
    stand_in = functools.partial(func, *(None,) * nargs, **dict.fromkeys(keywords))
    return _parameter_names.__wrapped__(stand_in, inject_context)


_OPTION_FIELDS = (
    "inject_context",
    "inject_llm_client",
    "inject_llm_agent",
    "handler_type",
    "resolve_keyword_args",
    "max_cycles",
    "max_retries",
    "retry_policy",
    "timeout_s",
    "io",
)
_WRAPPER_FIELDS = frozenset(
    {
        *_OPTION_FIELDS,
        "_task_id",
        "func",
        "_bound_kwargs",
        "_iteration_args",
        "_param_names",
        "_pending_registration",
        "_execution_context",
        "_workflow_graph",
        "__name__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__annotations__",
    }
)
_OPTIONS_SEEN: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_get_options = operator.attrgetter(*_OPTION_FIELDS)


def _restore_task_wrapper(
    task_id: str,
    func: Callable[..., Any],
    options: tuple[Any, ...],
    bound: dict[str, Any] | None,
    iteration: tuple[Any, ...] | None,
    extras: dict[str, Any] | None,
) -> TaskWrapper:
    wrapper = TaskWrapper.__new__(TaskWrapper)
    state = wrapper.__dict__
    state["_task_id"] = task_id
    state["func"] = func
    state.update(zip(_OPTION_FIELDS, options, strict=True))
    state["_bound_kwargs"] = dict(bound) if bound else {}
    state["_iteration_args"] = iteration or ()
    state["_param_names"] = None
    for attr in ("__name__", "__doc__", "__module__", "__qualname__"):
        value = getattr(func, attr, None)
        if value is not None:
            state[attr] = value
    state["__annotations__"] = dict(getattr(func, "__annotations__", {}))
    if extras:
        state.update(extras)
    return wrapper


class SequentialTask(Executable):
    """The value of a ``>>`` chain: an ordered list of executables (not a graph node)."""

    def __init__(self, tasks: list[Executable]) -> None:
        if not tasks:
            raise ValueError("SequentialTask requires at least one task")
        self.tasks = list(tasks)

    @property
    def leftmost(self) -> Executable:
        """The first executable of the chain."""
        return self.tasks[0]

    @property
    def rightmost(self) -> Executable:
        """The last executable of the chain."""
        return self.tasks[-1]

    @property
    def task_id(self) -> str:
        return self.leftmost.task_id

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.leftmost.run(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Executable:
        return self.tasks[index]

    def __iter__(self) -> Iterator[Executable]:
        return iter(self.tasks)

    def __repr__(self) -> str:
        return "SequentialTask([" + " >> ".join(t.task_id for t in self.tasks) + "])"


class ParallelGroup(Executable):
    """A graph node whose members run concurrently; its successors run after all of them."""

    def __init__(self, tasks: list[Executable], name: str | None = None) -> None:
        wf = current_workflow_context()
        self.tasks: list[Executable] = []
        self._auto_named = name is None
        self._uid = uuid.uuid4().hex
        # The counter advances even for named groups, as upstream's does.
        default_name = wf.get_next_group_name()
        self._task_id = name if name is not None else default_name
        self.execution_backend: str | None = None
        self.backend_config: dict[str, Any] = {}
        self.policy: Any = "strict"
        for member in tasks:
            _ensure_registered(member)
            self.tasks.append(_entry(member))
        wf.graph.add_node(self)
        self._workflow_graph = wf.graph

    @property
    def task_id(self) -> str:
        return self._task_id

    def _insert_first(self, member: Executable) -> None:
        self.tasks.insert(0, member)

    def _has_successors(self) -> bool:
        """True if this group's node has an edge out in the current workflow's graph."""
        return bool(current_workflow_context().graph.successors(self.task_id))

    def __or__(self, other: object) -> ParallelGroup:
        right = _check_operand("|", other)
        graph = current_workflow_context().graph
        if isinstance(right, ParallelGroup):
            if not self._has_successors() and not graph.successors(right.task_id):
                self.tasks.extend(right.tasks)
                if right.task_id in graph and right.task_id != self.task_id:
                    graph.remove_node(right.task_id)
                return self
            return ParallelGroup([self, right])
        _ensure_registered(_entry(right))
        self.tasks.append(_entry(right))
        return self

    def set_group_name(self, name: str) -> ParallelGroup:
        """Rename this group's node in the current workflow; returns self."""
        graph = current_workflow_context().graph
        if self._task_id not in graph:
            raise KeyError(f"Parallel group '{self._task_id}' is not in the current workflow")
        if name != self._task_id:
            graph.rename_node(self._task_id, name)
        self._task_id = name
        self._auto_named = False
        return self

    def with_execution(
        self,
        backend: Any = None,
        backend_config: dict[str, Any] | None = None,
        policy: str | GroupExecutionPolicy = "strict",
    ) -> ParallelGroup:
        """Choose the coordination backend, its options and the failure policy.

        A backend or config left out keeps what an earlier call set (``backend_config`` is
        merged); the policy always takes the given value, so no arguments means strict.
        """
        if backend is not None:
            value = getattr(backend, "value", backend)
            if not isinstance(value, str):
                raise ConfigError(f"unknown coordination backend {backend!r}")
            value = value.lower()
            if value not in ("threading", "redis", "direct", "process"):
                raise ConfigError(
                    f"unknown coordination backend {backend!r}; "
                    "known: 'threading', 'redis', 'direct', 'process'"
                )
            self.execution_backend = value
        if backend_config is not None:
            self.backend_config.update(
                {k: v for k, v in backend_config.items() if k != "redis_client"}
            )
        self.policy = canonicalize_group_policy(policy)
        return self

    @property
    def _execution_config(self) -> dict[str, Any]:
        """The settings ``with_execution`` made, under upstream's keys (a read-only copy).

        ``backend`` is the backend's name (equal to its ``CoordinationBackend`` member) or
        None for the default.
        """
        return {
            "backend": self.execution_backend,
            "backend_config": dict(self.backend_config),
            "policy": self.policy,
        }

    @classmethod
    def detached(cls, group_id: str, tasks: list[Executable]) -> ParallelGroup:
        """A group of ``tasks`` named ``group_id`` that joins no workflow's graph."""
        group = cls.__new__(cls)
        group.tasks = list(tasks)
        group._auto_named = False
        group._uid = uuid.uuid4().hex
        group._task_id = group_id
        group.execution_backend = None
        group.backend_config = {}
        group.policy = "strict"
        group._workflow_graph = None
        return group

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the members (and what follows them inside each branch) to completion.

        Goes through ``GroupExecutor.execute_parallel_group``, as upstream's groups do.
        """
        # The executor lives beside the coordination backends, which import this module.
        from graflow.coordination.executor import GroupExecutor  # noqa: PLC0415

        GroupExecutor.execute_parallel_group(
            self.task_id,
            self.tasks,
            self.get_execution_context(),
            backend=self.execution_backend,
            backend_config=dict(self.backend_config),
            policy=self.policy,
        )
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["backend_config"] = {
            k: v for k, v in self.backend_config.items() if k != "redis_client"
        }
        return state

    def __repr__(self) -> str:
        return f"ParallelGroup({[t.task_id for t in self.tasks]!r})"


def chain(*tasks: Executable) -> SequentialTask:
    """``chain(a, b, c)`` is ``a >> b >> c``."""
    if not tasks:
        raise ValueError("chain() needs at least one task")
    if len(tasks) == 1:
        only = tasks[0]
        return only if isinstance(only, SequentialTask) else SequentialTask([only])
    result = tasks[0] >> tasks[1]
    for nxt in tasks[2:]:
        result = result >> nxt
    return result


def parallel(*tasks: Executable) -> ParallelGroup:
    """``parallel(a, b, c)`` is ``a | b | c``."""
    if len(tasks) < 2:
        raise ValueError("parallel() needs at least two tasks")
    group = tasks[0] | tasks[1]
    for nxt in tasks[2:]:
        group = group | nxt
    return group


def __getattr__(name: str) -> Any:
    # ``graflow.core.task.GroupExecutor``: upstream defines the group runner beside the task
    # classes and code patches it there; it lives with the coordination backends here
    # (which import this module), so the name resolves on first use.
    if name == "GroupExecutor":
        from graflow.coordination.executor import GroupExecutor  # noqa: PLC0415

        return GroupExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
