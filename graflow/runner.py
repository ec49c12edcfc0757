"""``graflow.run``: run a workflow on a process pool (or in-process) and collect its results."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graflow.channels.base import Channel
from graflow.config import RedisTLS, Settings, lane_sizes, signing_secret
from graflow.core.backend import InProcessBackend
from graflow.core.checkpoint import Checkpointer
from graflow.core.context import ExecutionContext
from graflow.core.engine import RunStats, WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.steps import DEFAULT_MAX_STEPS, check_max_steps, limit_steps
from graflow.core.task import Executable, ParallelGroup, SequentialTask
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import ConfigError, MaxStepsExceeded, UnknownTaskError
from graflow.history.location import HistoryChoice, open_store
from graflow.history.recorder import Recorder
from graflow.mp.supervisor import Supervisor
from graflow.redis.backend import StoredValue
from graflow.redis.producer import run_on_redis
from graflow.trace.base import Tracer
from graflow.trace.setup import TRACERS, TraceSetup, open_tracer

__all__ = ["DEFAULT_MAX_STEPS", "RunResult", "execute_run", "run", "tracer_of"]

logger = logging.getLogger(__name__)


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
    waited_for_node_s: float = 0.0
    """Seconds a Redis run waited with no node serving its queue (said on stderr meanwhile)."""
    already_finished: bool = False
    """True when the run's checkpoint said it had finished: nothing ran, the result is the
    recorded one."""


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
    max_steps: int | None = None,
    initial_channel: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    engine: WorkflowEngine | None = None,
    checkpoint: Checkpointer | str | None = None,
    tracer: Tracer | None = None,
    history: HistoryChoice = None,
    threads: int | None = None,
    max_async: int | None = None,
) -> RunResult:
    """Run ``target`` on ``supervisor`` (None: in this process) and collect a RunResult.

    With ``checkpoint`` (a Checkpointer, or a path resumed if it holds this run) the run is
    saved there, or resumed from it (see ``graflow.run``); ``history`` chooses where the run
    is recorded (see ``graflow.run``).
    """
    graph, start_node = resolve_target(target, start)
    check_max_steps(max_steps)
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
    checkpoint = _bound(checkpoint, graph, start_node, _name_of(target))
    if checkpoint is not None and checkpoint.status == "finished":
        return _finished_result(checkpoint)
    context = _new_context(graph, start_node, max_steps, initial_channel, checkpoint)
    context.workflow_name = _name_of(target) or None
    if tracer is not None:
        context.tracer = tracer
    handlers = engine.handlers if engine is not None else None
    progress = engine.on_progress if engine is not None else None
    observer = engine.observer if engine is not None else None
    if observer is None:
        observer = recorder_for(target, history, "inprocess" if supervisor is None else "pool")
    if supervisor is None:
        if timeout_s is not None:
            raise ConfigError("timeout_s needs worker processes (processes >= 1)")
        threads, max_async = lane_sizes(threads, max_async)
        run_engine = WorkflowEngine(InProcessBackend(threads, max_async))
        if handlers:
            run_engine.handlers.update(handlers)
        run_engine.on_progress = progress
        run_engine.observer = observer
        with _partial_result():
            value, stats = run_engine.run(context, checkpointer=checkpoint)
    else:
        if tracer is not None and tracer.worker_setup() is not None and supervisor.tracing is None:
            logger.warning(
                "run %s is traced, but this pool's workers were started without tracing: "
                "their task spans are missing (Supervisor(tracing=tracer.worker_setup()))",
                context.session_id,
            )
        backend = supervisor.backend(timeout_s)
        run_engine = WorkflowEngine(backend)
        if handlers:
            run_engine.handlers.update(handlers)
        run_engine.on_progress = progress
        run_engine.observer = observer
        with supervisor.signals_drain(backend), _partial_result():
            value, stats = run_engine.run(context, checkpointer=checkpoint)
    return _collect(context, value, stats)


@contextlib.contextmanager
def _partial_result() -> Iterator[None]:
    """A MaxStepsExceeded leaving the run carries the RunResult of what completed."""
    try:
        yield
    except MaxStepsExceeded as exc:
        stats = exc.stats if isinstance(exc.stats, RunStats) else RunStats()
        if isinstance(exc.context, ExecutionContext):
            exc.result = _collect(exc.context, None, stats)
        raise


def recorder_for(
    target: Any,
    history: HistoryChoice,
    backend: str,
    redis_url: str | None = None,
    redis_tls: RedisTLS | None = None,
    *,
    label: str | None = None,
) -> Recorder | None:
    """The Recorder of a run of ``target`` (None: history is off); see ``graflow.run``.

    ``label`` names the target in the record (``graflow run``'s TARGET); by default the
    script that runs it.
    """
    store = open_store(history, Settings.from_env(), redis_url=redis_url, redis_tls=redis_tls)
    if store is None:
        return None
    if label is None:
        label = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return Recorder(store, workflow=_name_of(target), target=label, backend=backend)


def _new_context(
    graph: TaskGraph,
    start_node: str,
    max_steps: int | None,
    initial_channel: dict[str, Any] | None,
    checkpoint: Checkpointer | None,
) -> ExecutionContext:
    """A new run's context, or the context of the run saved in ``checkpoint``."""
    run_id = checkpoint.run_id if checkpoint is not None else None
    context = ExecutionContext.create(graph, start_node, session_id=run_id)
    limit_steps(context, max_steps)
    if checkpoint is not None and checkpoint.saved is not None:
        checkpoint.restore(context)
    elif initial_channel:
        context.channel.update(initial_channel)
    return context


def _bound(
    checkpoint: Checkpointer | str | None, graph: TaskGraph, start_node: str, name: str
) -> Checkpointer | None:
    """``checkpoint`` as a Checkpointer that has read its store for this run."""
    if isinstance(checkpoint, str):
        checkpoint = Checkpointer.open(checkpoint)
    if checkpoint is not None and not checkpoint.bound:
        checkpoint.bind(graph, start_node, name)
    return checkpoint


def _name_of(target: Any) -> str:
    return target.name if isinstance(target, WorkflowContext) else ""


def _open_checkpoint(
    target: Any,
    start: str | None,
    location: str | None,
    every_s: float | None,
    resume: bool | None,
    fresh: bool,
    options: dict[str, Any],
) -> Checkpointer | None:
    """The bound Checkpointer of ``graflow.run(checkpoint=...)``, or None without one."""
    if location is None:
        if every_s is not None or fresh or resume is not None:
            raise ConfigError("checkpoint_every_s, resume and fresh need checkpoint=PATH")
        return None
    if resume and fresh:
        raise ConfigError("resume and fresh exclude each other")
    graph, start_node = resolve_target(target, start)
    checkpointer = Checkpointer.open(
        location, every_s=every_s, resume=resume is not False, fresh=fresh, options=options
    )
    checkpointer.bind(graph, start_node, _name_of(target))
    return checkpointer


def _finished_result(checkpointer: Checkpointer) -> RunResult:
    """The RunResult recorded by the checkpoint of a finished run (nothing runs again)."""
    assert checkpointer.saved is not None
    state = checkpointer.saved.state
    payload = checkpointer.payload()
    stored = payload["channel"]
    channel = stored.snapshot() if isinstance(stored, Channel) else dict(stored or {})
    value = payload["value"]
    if isinstance(value, StoredValue):
        value = channel.get(f"{value.task_id}.__result__")
    completed = [str(t) for t in state["completed_tasks"]]
    logger.info(
        "checkpoint %s: run %s already finished; nothing to do (fresh=True or --fresh "
        "runs it again)",
        checkpointer.location,
        checkpointer.run_id,
    )
    stats = RunStats()
    stats.started_at = 0.0
    return RunResult(
        value=value,
        results={t: channel[f"{t}.__result__"] for t in completed if f"{t}.__result__" in channel},
        channel=channel,
        stats=stats,
        run_id=str(checkpointer.run_id),
        completed=completed,
        max_steps_reached=bool(state.get("max_steps_reached", False)),
        already_finished=True,
    )


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
    max_steps: int | None = None,
    initial_channel: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    start_method: str | None = None,
    engine: WorkflowEngine | None = None,
    redis: str | None = None,
    redis_tls: RedisTLS | None = None,
    queue: str = "default",
    secret: str | bytes | None = None,
    secret_file: str | None = None,
    checkpoint: str | None = None,
    checkpoint_every_s: float | None = None,
    resume: bool | None = None,
    fresh: bool = False,
    tracer: Tracer | str | None = None,
    history: HistoryChoice = None,
    threads: int | None = None,
    max_async: int | None = None,
) -> RunResult:
    """Run a workflow on a pool of ``processes`` worker processes and return its RunResult.

    ``target`` is a ``with workflow(...)`` context, a TaskGraph, or a task / chain / group
    expression. ``processes=None`` uses every core, ``processes=0`` runs in this process.
    With ``redis="redis://host:port/db"`` the tasks run on the nodes serving ``queue``
    (``graflow supervisor --redis URL``); blobs are signed with ``secret``/``secret_file``
    (default: a per-user secret file, fine on one host). ``redis`` may also be
    ``rediss://`` (TLS: ``redis_tls`` names the CA, client certificate and key files) or
    ``redis+cluster://host:port[,host:port...]`` (a Redis Cluster).
    Raises what ``wf.execute()`` raises when a task fails. ``engine`` lends its registered
    task handlers to the run.

    ``checkpoint`` (a file path, or ``redis://host:port/db#name``) keeps the run's progress:
    written when the run starts, after a completion once ``checkpoint_every_s`` (default 60)
    passed since the last write, when a task calls ``ctx.checkpoint()``, and when the run
    ends. If it already holds this workflow's run, ``resume`` (default True) continues that run
    (tasks in flight at the checkpoint run again) or, if it finished, returns its recorded
    result without running anything (``already_finished``); ``resume=False`` refuses with a
    CheckpointError. ``fresh=True`` starts over whatever it holds.

    ``tracer`` (a graflow.trace.Tracer) is told about the run, its tasks and groups;
    ``"otel"`` traces it with OpenTelemetry (``graflow[otel]``) to the collector the
    OTEL_EXPORTER_OTLP_* variables name, ``"off"`` does not, and None follows
    ``GRAFLOW_TRACER`` (default off).

    ``history`` is where the run is recorded (``graflow runs``, ``graflow ui``): ``"off"``
    or False for nowhere, a path for that SQLite file, None for ``GRAFLOW_HISTORY`` or else
    the default (the run's Redis for Redis runs, ``$XDG_STATE_HOME/graflow/history.db``
    otherwise). ``engine.observer``, when set, is told of the run instead.
    Each worker process runs plain tasks one at a time, up to ``threads`` ``io=True`` tasks
    at once and up to ``max_async`` ``async def`` tasks (defaults: GRAFLOW_THREADS or 16,
    GRAFLOW_MAX_ASYNC or 1000); with ``processes=0`` those lanes are in this process.
    """
    tracer = tracer_of(tracer)
    if processes is not None and processes < 0:
        raise ConfigError(f"processes must be >= 0, got {processes}")
    threads, max_async = lane_sizes(threads, max_async)
    if redis is not None or checkpoint is not None:
        # GRAFLOW_SECRET / GRAFLOW_SECRET_FILE, which every node and producer reads (#14).
        secret, secret_file = signing_secret(secret, secret_file)
    options = {"secret": secret, "secret_file": secret_file, "redis_tls": redis_tls}
    checkpointer = _open_checkpoint(
        target, start, checkpoint, checkpoint_every_s, resume, fresh, options
    )
    if checkpointer is not None and checkpointer.status == "finished":
        return _finished_result(checkpointer)
    if redis is not None:
        if processes is not None or start_method is not None:
            raise ConfigError(
                "processes/start_method size a local pool; with redis= the tasks run on the "
                "nodes serving the queue ('graflow supervisor --redis URL --processes N')"
            )
        graph, start_node = resolve_target(target, start)
        check_max_steps(max_steps)
        engine = _observed(engine, target, history, redis, redis_tls)
        with _partial_result():
            done = run_on_redis(
                graph,
                start_node,
                url=redis,
                tls=redis_tls,
                queue=queue,
                secret=secret,
                secret_file=secret_file,
                max_steps=max_steps,
                initial_channel=initial_channel,
                timeout_s=timeout_s,
                engine=engine,
                checkpointer=checkpointer,
                tracer=tracer,
                workflow_name=_name_of(target),
            )
        result = _collect(done.context, done.value, done.stats)
        result.waited_for_node_s = done.waited_for_node_s
        return result
    run_options: dict[str, Any] = {
        "start": start,
        "max_steps": max_steps,
        "initial_channel": initial_channel,
        "timeout_s": timeout_s,
        "engine": engine,
        "checkpoint": checkpointer,
        "tracer": tracer,
        "history": history,
    }
    if processes == 0:
        if start_method is not None:
            raise ConfigError("start_method needs worker processes (processes >= 1)")
        return execute_run(
            target, supervisor=None, threads=threads, max_async=max_async, **run_options
        )
    count = processes if processes is not None else (os.cpu_count() or 1)
    resolve_target(target, start)  # a bad target fails here, before any process is forked
    tracing = tracer.worker_setup() if tracer is not None else None
    with Supervisor(
        count, start_method=start_method, tracing=tracing, threads=threads, max_async=max_async
    ) as supervisor:
        return execute_run(target, supervisor=supervisor, **run_options)


def _observed(
    engine: WorkflowEngine | None,
    target: Any,
    history: HistoryChoice,
    redis_url: str,
    redis_tls: RedisTLS | None,
) -> WorkflowEngine | None:
    """``engine`` with an observer recording a Redis run (a new engine if needed)."""
    if engine is not None and engine.observer is not None:
        return engine
    recorder = recorder_for(target, history, "redis", redis_url, redis_tls)
    if recorder is None:
        return engine
    observed = WorkflowEngine()
    if engine is not None:
        observed.handlers.update(engine.handlers)
        observed.on_progress = engine.on_progress
    observed.observer = recorder
    return observed


def tracer_of(tracer: Tracer | str | None) -> Tracer | None:
    """The tracer of a run: ``tracer`` itself, or one for a name (``"otel"``, ``"off"``) or,
    for None, for ``GRAFLOW_TRACER``; a tracer made here shuts its exporter down after the run.
    """
    if tracer is None or isinstance(tracer, str):
        settings = Settings.from_env()
        name = settings.tracer if tracer is None else tracer
        if name not in TRACERS:
            raise ConfigError(f"tracer must be a Tracer or one of {', '.join(TRACERS)}: {name!r}")
        if name == "off":
            return None
        return open_tracer(TraceSetup(settings.otlp_endpoint, settings.service_name))
    return tracer
