"""``graflow.run``: run a workflow on a process pool (or in-process) and collect its results."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from graflow.core.context import ExecutionContext
from graflow.core.engine import RunStats, WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.task import Executable, ParallelGroup, SequentialTask
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import ConfigError, GraphCompilationError, UnknownTaskError
from graflow.mp.supervisor import Supervisor
from graflow.redis.producer import run_on_redis

__all__ = ["RunResult", "execute_run", "run"]


@dataclass
class RunResult:
    """What a run produced."""

    value: Any
    """What ``wf.execute()`` would have returned: the last root task's result."""
    results: dict[str, Any]
    """``{task_id: result}`` for every task that completed."""
    channel: dict[str, Any]
    """The run's channel contents at the end."""
    stats: RunStats
    """Tasks run, retries, failures, worker deaths, wall seconds."""
    run_id: str = ""
    completed: list[str] = field(default_factory=list)
    """Ids of the completed tasks, in completion order."""
    max_steps_reached: bool = False


def resolve_target(target: Any, start: str | None) -> tuple[TaskGraph, str]:
    """The graph and start node of a workflow, graph, or task expression."""
    if isinstance(target, WorkflowContext):
        return target.graph, target.resolve_start_node(start)
    if isinstance(target, TaskGraph):
        holder = WorkflowContext("run")
        holder.graph = target
        return target, holder.resolve_start_node(start)
    if isinstance(target, Executable):
        entry = target.leftmost if isinstance(target, SequentialTask) else target
        graph = entry._workflow_graph
        if graph is None:
            graph = TaskGraph()
            graph.add_node(entry)
        node = start if start is not None else entry.task_id
        if not graph.has_node(node):
            raise UnknownTaskError(node, list(graph.nodes))
        if isinstance(entry, ParallelGroup) and entry.task_id not in graph.nodes:
            graph.add_node(entry)
        return graph, node
    raise ConfigError(
        f"cannot run {target!r}: pass a workflow (with workflow(...) as wf), a TaskGraph, "
        "or a task / chain / group expression"
    )


def execute_run(
    target: Any,
    *,
    supervisor: Supervisor | None,
    start: str | None = None,
    max_steps: int = 10_000,
    initial_channel: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    engine: WorkflowEngine | None = None,
) -> RunResult:
    """Run ``target`` on ``supervisor`` (None: in this process) and collect a RunResult."""
    graph, start_node = resolve_target(target, start)
    if max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
    context = ExecutionContext.create(graph, start_node, max_steps=max_steps)
    if initial_channel:
        context.channel.update(initial_channel)
    handlers = engine.handlers if engine is not None else None
    if supervisor is None:
        if timeout_s is not None:
            raise ConfigError("timeout_s needs worker processes (processes >= 1)")
        run_engine = WorkflowEngine()
        if handlers:
            run_engine.handlers.update(handlers)
        value, stats = run_engine.run(context)
    else:
        backend = supervisor.backend(timeout_s)
        run_engine = WorkflowEngine(backend)
        if handlers:
            run_engine.handlers.update(handlers)
        with supervisor.signals_drain(backend):
            value, stats = run_engine.run(context)
    return _collect(context, value, stats)


def _collect(context: ExecutionContext, value: Any, stats: RunStats) -> RunResult:
    channel = context.channel.snapshot()
    results = {
        task_id: channel[f"{task_id}.__result__"]
        for task_id in context.completed_tasks
        if f"{task_id}.__result__" in channel
    }
    return RunResult(
        value=value,
        results=results,
        channel=channel,
        stats=stats,
        run_id=context.session_id,
        completed=list(context.completed_tasks),
        max_steps_reached=context.max_steps_reached,
    )


def run(
    target: Any,
    *,
    start: str | None = None,
    processes: int | None = None,
    max_steps: int = 10_000,
    initial_channel: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    start_method: str | None = None,
    engine: WorkflowEngine | None = None,
    redis: str | None = None,
    queue: str = "default",
    secret: str | bytes | None = None,
    secret_file: str | None = None,
) -> RunResult:
    """Run a workflow on a pool of ``processes`` worker processes and return its RunResult.

    ``target`` is a ``with workflow(...)`` context, a TaskGraph, or a task / chain / group
    expression. ``processes=None`` uses every core, ``processes=0`` runs in this process.
    With ``redis="redis://host:port/db"`` the tasks run on the nodes serving ``queue``
    (``graflow supervisor --redis URL``); blobs are signed with ``secret``/``secret_file``
    (default: a per-user secret file, fine on one host).
    Raises what ``wf.execute()`` raises when a task fails. ``engine`` lends its registered
    task handlers to the run.
    """
    if processes is not None and processes < 0:
        raise ConfigError(f"processes must be >= 0, got {processes}")
    if redis is not None:
        if processes is not None or start_method is not None:
            raise ConfigError(
                "processes/start_method size a local pool; with redis= the tasks run on the "
                "nodes serving the queue ('graflow supervisor --redis URL --processes N')"
            )
        graph, start_node = resolve_target(target, start)
        context, value, stats = run_on_redis(
            graph,
            start_node,
            url=redis,
            queue=queue,
            secret=secret,
            secret_file=secret_file,
            max_steps=max_steps,
            initial_channel=initial_channel,
            timeout_s=timeout_s,
            engine=engine,
        )
        return _collect(context, value, stats)
    if processes == 0:
        if start_method is not None:
            raise ConfigError("start_method needs worker processes (processes >= 1)")
        return execute_run(
            target,
            supervisor=None,
            start=start,
            max_steps=max_steps,
            initial_channel=initial_channel,
            timeout_s=timeout_s,
            engine=engine,
        )
    count = processes if processes is not None else (os.cpu_count() or 1)
    try:
        resolve_target(target, start)
    except GraphCompilationError:
        raise
    with Supervisor(count, start_method=start_method) as supervisor:
        return execute_run(
            target,
            supervisor=supervisor,
            start=start,
            max_steps=max_steps,
            initial_channel=initial_channel,
            timeout_s=timeout_s,
            engine=engine,
        )
