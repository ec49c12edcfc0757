"""Checkpoint and resume: save a run's progress, and continue it after a crash.

Two ways in, one container format (``graflow.core.checkpoint_store``):

* ``graflow.run(target, checkpoint=PATH, checkpoint_every_s=S)``: a ``Checkpointer`` rides
  along with the scheduler and replaces PATH (a file, or ``redis://host:port/db#name``) when
  the run starts, after a completion once S seconds passed since the last write, when a task
  calls ``ctx.checkpoint()``, and when the run ends (status ``finished``, ``failed`` or
  ``canceled``). A rerun with the same PATH continues from it; the rerun of a finished run is
  a no-op returning the recorded result, unless ``fresh=True``.
* Upstream's API: ``ctx.checkpoint(...)`` in a task; ``CheckpointManager.create_checkpoint``
  writing ``<base>.pkl`` (the container, holding the pickled ExecutionContext),
  ``<base>.state.json`` and ``<base>.meta.json``; ``CheckpointManager.resume_from_checkpoint``
  returning a context to pass to ``WorkflowEngine().execute``.

The state (JSON) holds completed tasks, steps, cycle and retry counts, and the pending work:
the root queue with the tasks in flight at its head (they run again on resume: at-least-once)
and retries waiting out their backoff at its tail (they run at once), plus each parallel group
in progress with its finished members and, for each unfinished branch, that branch's queue in
the same form (a branch that finished half of its chain continues where it was). The pickle
holds the channel contents of an in-memory channel (a Redis channel's keys stay in Redis under
the run id, which the resumed run reuses) and the tasks added while the run ran.

A resumed ``graflow.run`` takes the graph from the target as the code defines it now, so a fix
to a task applies to the rest of the run; a checkpoint of a workflow with other tasks or edges
is refused with ``ForeignCheckpoint``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from graflow.channels.base import Channel
from graflow.core import codec
from graflow.core.checkpoint_store import (
    CheckpointStore,
    Container,
    decode,
    encode,
    open_store,
    read_file,
    write_file,
)
from graflow.core.context import ExecutionContext
from graflow.core.cycle import base_task_id
from graflow.core.task import Executable, Task, TaskWrapper
from graflow.exceptions import (
    CheckpointError,
    CheckpointNotFound,
    ConfigError,
    CorruptCheckpoint,
    ForeignCheckpoint,
    GraflowRuntimeError,
    GraflowWorkflowCanceledError,
    RunInterrupted,
)
from graflow.queue.base import TaskSpec

if TYPE_CHECKING:
    from graflow.core.graph import TaskGraph
    from graflow.core.spec import CheckpointRequest

__all__ = [
    "DEFAULT_EVERY_S",
    "CheckpointManager",
    "CheckpointMetadata",
    "Checkpointer",
    "graph_fingerprint",
    "read_checkpoint",
    "restore_progress",
    "run_state",
    "write_request",
]

logger = logging.getLogger(__name__)

DEFAULT_EVERY_S: Final = 60.0
_SCHEMA_VERSION: Final = "1.0"  # upstream's state.json schema_version
# Errors of a pickle that will not round-trip: unpicklable objects, or a value changed by
# another thread (an in-process parallel branch) while it was being pickled.
_PICKLE_ERRORS: Final = (TypeError, AttributeError, ValueError, RecursionError, RuntimeError)


@dataclass
class CheckpointMetadata:
    """What identifies a checkpoint (upstream's ``<base>.meta.json``)."""

    checkpoint_id: str
    session_id: str
    created_at: str
    steps: int
    start_node: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    user_metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        session_id: str,
        steps: int,
        start_node: str | None = None,
        backend: dict[str, Any] | None = None,
        user_metadata: dict[str, Any] | None = None,
        *,
        checkpoint_id: str | None = None,
    ) -> CheckpointMetadata:
        """Metadata for a checkpoint taken now; the id defaults to ``<session>_<steps>_<time>``."""
        now = time.time()
        return cls(
            checkpoint_id=checkpoint_id or f"{session_id}_{steps}_{int(now)}",
            session_id=session_id,
            created_at=datetime.fromtimestamp(now, UTC).isoformat(),
            steps=steps,
            start_node=start_node,
            backend=dict(backend or {}),
            user_metadata=dict(user_metadata or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The metadata as plain data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMetadata:
        """Metadata from ``to_dict`` output (unknown keys are ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


# -- state of a running scheduler --------------------------------------------------------
def run_state(scheduler: Any, rerun: tuple[Any, str] | None = None) -> dict[str, Any]:
    """The checkpoint state of a running scheduler, as plain data (see the module docstring).

    ``rerun`` is ``(frame, task_id)`` of a task whose completion arrived but is not applied
    yet: it is recorded as still in flight.
    """
    context: ExecutionContext = scheduler.context
    root, in_flight = scheduler.pending_work(rerun)
    state = context.base_checkpoint_state(root["queue"])
    counts = state["cycle_counts"]
    retries = state["retry_counts"]
    for task_id in in_flight:
        # Sending a first attempt out counted one more cycle of its base task; the resumed
        # run sends it again and counts it again, so the checkpoint must not count it.
        if retries.get(task_id, 0) == 0:
            base = base_task_id(task_id)
            count = counts.get(base, 0) - 1
            if count > 0:
                counts[base] = count
            else:
                counts.pop(base, None)
    state["groups"] = root.get("group")
    state["in_flight"] = in_flight
    return state


def _pending_tasks(context: ExecutionContext, queue: list[str]) -> list[dict[str, Any]]:
    rc = context.retry_controller
    now = time.time()
    return [
        {
            "task_id": task_id,
            "status": "ready",
            "created_at": now,
            "retry_count": rc.get_retry_count(task_id),
            "max_retries": rc.get_max_retries_for_node(task_id),
            "last_error": rc.get_last_error_text(task_id),
        }
        for task_id in queue
    ]


def restore_progress(context: ExecutionContext, state: dict[str, Any], where: str) -> None:
    """Put a checkpoint's completed tasks, counters and pending work into ``context``."""
    try:
        completed = [str(t) for t in state["completed_tasks"]]
        queue = [str(t) for t in state["queue"]]
        steps = int(state["steps"])
        cycles = {str(k): int(v) for k, v in state["cycle_counts"].items()}
        retries = {str(k): int(v) for k, v in state.get("retry_counts", {}).items()}
        errors = {str(k): str(v) for k, v in state.get("last_errors", {}).items()}
        groups = state.get("groups")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptCheckpoint(where, f"its state is incomplete ({exc!r})") from None
    context.steps = steps
    context.completed_tasks = completed
    context._completed_set = set(completed)
    context.cycle_controller.cycle_counts = cycles
    context.retry_controller.retry_counts = retries
    context.retry_controller.last_errors = dict(errors)
    task_queue = context.task_queue
    while task_queue.get_next_task() is not None:
        pass
    graph = context.graph
    for task_id in queue:
        if not graph.has_node(task_id):
            # Upstream's rule: an id the graph lost becomes a placeholder task.
            graph.add_node(Task(task_id, register_to_context=False))
        enqueue_id = getattr(task_queue, "enqueue_id", None)
        if enqueue_id is not None:
            enqueue_id(task_id)
        else:
            context.add_to_queue(graph.get_node(task_id))
    context._resume_groups = groups if isinstance(groups, dict) else None


def _dumps(obj: Any, context: ExecutionContext, where: str) -> bytes:
    for _ in range(3):
        try:
            return codec.dumps(obj)
        except RuntimeError:
            continue  # a branch thread changed a value while it was pickled: take it again
        except _PICKLE_ERRORS as exc:
            raise CheckpointError(
                where, f"cannot be written: {context._describe_unpicklable()}", cause=exc
            ) from exc
    raise CheckpointError(where, "cannot be written: the channel kept changing while saved")


def _loads(blob: bytes, where: str, python: str) -> Any:
    try:
        return codec.loads(blob)
    except Exception as exc:  # noqa: BLE001 - whatever unpickling raises becomes a named error
        hint = f" (written by Python {python})" if python else ""
        raise CheckpointError(
            where,
            f"cannot be loaded{hint}: {type(exc).__name__}: {exc}. Are the modules that define "
            "its tasks and channel values importable here?",
            cause=exc,
        ) from None


def write_request(
    scheduler: Any, request: CheckpointRequest, rerun: tuple[Any, str] | None = None
) -> tuple[str, CheckpointMetadata]:
    """Write the checkpoint a task asked for with ``ctx.checkpoint()``, then clear the request.

    Without a path of its own, the run's checkpoint is written if the run has one, else
    upstream's three files under ``checkpoints/<session_id>/``.
    """
    context = scheduler.context
    try:
        checkpointer: Checkpointer | None = scheduler.checkpointer
        if request.path is None and checkpointer is not None:
            return checkpointer.write(scheduler, rerun=rerun, user_metadata=request.metadata)
        resuming = str(request.metadata.get("task_id")) if request.immediate else None
        state = run_state(scheduler, rerun)
        return CheckpointManager.write(context, state, request.path, request.metadata, resuming)
    finally:
        context.clear_checkpoint_request()


# -- upstream's API: three files ----------------------------------------------------------
class CheckpointManager:
    """Upstream's checkpoint API: ``<base>.pkl``, ``<base>.state.json``, ``<base>.meta.json``."""

    @classmethod
    def create_checkpoint(
        cls,
        context: ExecutionContext,
        *,
        path: str | None = None,
        metadata: dict[str, Any] | None = None,
        resuming_task_id: str | None = None,
    ) -> tuple[str, CheckpointMetadata]:
        """Save ``context``; return the ``.pkl`` path and the metadata.

        ``path`` may end in ``.pkl``; the default base is
        ``checkpoints/<session_id>/session_<session_id>_step_<steps>_<unix time>``.
        ``resuming_task_id`` is run first on resume. While the context runs, call this from
        its scheduler's thread (a task in the driver) or use ``ctx.checkpoint()``.
        """
        scheduler = context._scheduler
        if scheduler is None:
            state = context.base_checkpoint_state()
        elif scheduler.owns_thread():
            state = run_state(scheduler)
        else:
            raise CheckpointError(
                path or "(default path)",
                "create_checkpoint() was called from a parallel branch while the run executes; "
                "use ctx.checkpoint() in the task instead",
            )
        return cls.write(context, state, path, metadata, resuming_task_id)

    @classmethod
    def write(
        cls,
        context: ExecutionContext,
        state: dict[str, Any],
        path: str | None,
        metadata: dict[str, Any] | None,
        resuming_task_id: str | None,
    ) -> tuple[str, CheckpointMetadata]:
        """Write the three files of ``state`` and the pickled ``context``; the ``.pkl`` last."""
        base = cls._base(context, path)
        pkl = base.with_name(base.name + ".pkl")
        meta = CheckpointMetadata.create(
            context.session_id, context.steps, context.start_node, state["backend"], metadata
        )
        queue = state["queue"]
        in_flight = state.get("in_flight", [])
        if resuming_task_id is not None and resuming_task_id not in in_flight:
            queue.insert(0, resuming_task_id)
        pending = (
            queue[1:] if resuming_task_id is not None and queue[:1] == [resuming_task_id] else queue
        )
        state.update(
            kind="context",
            metadata=meta.to_dict(),
            resuming_task_id=resuming_task_id,
            pending_tasks=_pending_tasks(context, pending),
        )
        blob = _dumps(context, context, str(pkl))
        text = json.dumps(state, indent=2, default=str).encode()
        write_file(base.with_name(base.name + ".state.json"), text)
        write_file(
            base.with_name(base.name + ".meta.json"), json.dumps(meta.to_dict(), indent=2).encode()
        )
        write_file(pkl, encode(state, blob))
        context.last_checkpoint_path = str(pkl)
        context.checkpoint_metadata = meta.to_dict()
        logger.info(
            "run %s: checkpoint %s written at step %d", context.session_id, pkl, context.steps
        )
        return str(pkl), meta

    @classmethod
    def _base(cls, context: ExecutionContext, path: str | None) -> Path:
        return Path(cls._resolve_base_path(context, path))

    @classmethod
    def _resolve_base_path(cls, context: ExecutionContext, path: str | None) -> str:
        """The path the three files share: ``path`` without ``.pkl``, or the default."""
        if path is None:
            session = context.session_id
            name = f"session_{session}_step_{context.steps}_{int(time.time())}"
            return str(Path("checkpoints") / session / name)
        cls._require_local(path)
        return cls._get_base_path(path)

    @staticmethod
    def _get_base_path(path: str) -> str:
        """``path`` without a trailing ``.pkl``."""
        return path[: -len(".pkl")] if path.endswith(".pkl") else path

    @staticmethod
    def _infer_backend_from_path(path: str | None) -> str:
        """Where a path points: ``"redis"``, ``"s3"`` (by URL scheme) or ``"local"``."""
        if path and "://" in path:
            return path.split("://", 1)[0].lower()
        return "local"

    @classmethod
    def _require_local(cls, path: str) -> None:
        backend = cls._infer_backend_from_path(path)
        if backend != "local":
            raise NotImplementedError(
                f"checkpoint path {path!r}: CheckpointManager keeps {backend} checkpoints "
                "nowhere but local files (graflow.run(checkpoint='redis://...') keeps a run's "
                "checkpoint in Redis)"
            )

    @staticmethod
    def _generate_checkpoint_id(context: ExecutionContext) -> str:
        """``<session_id>_<steps>_<unix time>``."""
        return f"{context.session_id}_{context.steps}_{int(time.time())}"

    @staticmethod
    def _serialize_task_spec(spec: TaskSpec) -> dict[str, Any]:
        """A queued task as plain data (its executable stays in the graph)."""
        return {
            "task_id": spec.task_id,
            "status": spec.status.value,
            "created_at": spec.created_at,
            "retry_count": spec.retry_count,
            "max_retries": spec.max_retries,
            "last_error": spec.last_error,
        }

    @staticmethod
    def _deserialize_task_spec(data: dict[str, Any], context: ExecutionContext) -> TaskSpec:
        """The TaskSpec of ``data`` with its executable taken from ``context``'s graph.

        An id the graph does not know becomes a placeholder ``Task``.
        """
        task_id = str(data["task_id"])
        try:
            exe = context.graph.get_node(task_id)
        except KeyError:
            exe = Task(task_id, register_to_context=False)
        return TaskSpec(
            exe,
            context,
            created_at=float(data.get("created_at", time.time())),
            retry_count=int(data.get("retry_count", 0)),
            max_retries=int(data.get("max_retries", 3)),
            last_error=data.get("last_error"),
        )

    @classmethod
    def resume_from_checkpoint(cls, path: str) -> tuple[ExecutionContext, CheckpointMetadata]:
        """The context saved at ``path`` (base or ``.pkl``), ready for ``WorkflowEngine().execute``.

        Its queue holds the tasks to run first (those in flight at the checkpoint, the task
        that asked for an immediate checkpoint) and then the pending ones; parallel groups in
        progress continue where they were.
        """
        cls._require_local(path)
        pkl = path if path.endswith(".pkl") or Path(path).is_file() else f"{path}.pkl"
        data = read_file(Path(pkl))
        if data is None:
            raise CheckpointNotFound(pkl, "does not exist")
        container = decode(data, pkl)
        meta_file = _read_json(cls._get_base_path(pkl) + ".meta.json")
        _read_json(cls._get_base_path(pkl) + ".state.json")
        state = container.state
        if state.get("kind") != "context":
            raise ForeignCheckpoint(
                pkl,
                "is the checkpoint of a graflow.run: resume it with "
                "graflow.run(target, checkpoint=...) or 'graflow run TARGET --resume'",
            )
        context = _loads(container.blob, pkl, str(container.header.get("python", "")))
        if not isinstance(context, ExecutionContext):
            raise ForeignCheckpoint(pkl, f"holds a {type(context).__name__}, not a run")
        restore_progress(context, state, pkl)
        context.clear_checkpoint_request()
        context.last_checkpoint_path = pkl
        meta = CheckpointMetadata.from_dict(meta_file or state.get("metadata") or {})
        context.checkpoint_metadata = meta.to_dict()
        return context, meta


def _read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None if there is no such file).

    Raises:
        json.JSONDecodeError: the file is damaged (its message names the file).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise json.JSONDecodeError(f"{path} is damaged: {exc.msg}", exc.doc, exc.pos) from None
    return value if isinstance(value, dict) else None


def read_checkpoint(location: str, options: dict[str, Any] | None = None) -> Container:
    """The checked, decoded checkpoint at ``location`` (a file, a ``.pkl`` or a store URL)."""
    store = open_store(location, options)
    data = store.read()
    if data is None:
        raise CheckpointError(store.location, "does not exist")
    return decode(data, store.location)


# -- graflow.run: one checkpoint per run, kept up to date --------------------------------
def graph_fingerprint(graph: TaskGraph, start_node: str | None, skip: set[str]) -> str:
    """A digest of the graph's node ids, edges and start node (nodes in ``skip`` left out)."""
    nodes = sorted(n for n in graph._nodes if n not in skip)
    edges = sorted([a, b] for a, b in graph.edges if a not in skip and b not in skip)
    text = json.dumps([start_node, nodes, edges], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _with_current_code(graph: TaskGraph, node_id: str, exe: Executable) -> Executable:
    """``exe`` (an iteration node) running its base task's function as the code defines it now.

    A function that cannot be imported by name (from ``__main__``, a closure) was pickled by
    value with the checkpoint: the resumed run would iterate the old code and globals.
    """
    base = graph._nodes.get(base_task_id(node_id), {}).get("task")
    if (
        isinstance(exe, TaskWrapper)
        and isinstance(base, TaskWrapper)
        and base.func is not exe.func
        and getattr(base.func, "__qualname__", None) == getattr(exe.func, "__qualname__", 0)
    ):
        exe.func = base.func
        exe._param_names = None
    return exe


def _seq_base() -> int:
    # Items of the crashed run may still be queued in Redis, and their completions would carry
    # the same sequence numbers as the resumed run's first items: start far away from them.
    # Below 2**62 so that sequence numbers still fit the worker pool's int64 slots.
    return (random.getrandbits(29) + 1) << 32


class Checkpointer:
    """Keeps one run's checkpoint in a store, and restores the run from it.

    Used by ``graflow.run(checkpoint=...)``: ``bind`` reads the store before the run,
    ``restore`` fills a new context from it, and the scheduler calls ``start``, ``tick``
    (after each applied completion: one clock read), ``finish`` and ``fail``.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        every_s: float | None = None,
        resume: bool = True,
        fresh: bool = False,
    ) -> None:
        every = DEFAULT_EVERY_S if every_s is None else every_s
        if not every >= 0:
            raise ConfigError(f"checkpoint_every_s must be >= 0, got {every_s!r}")
        self.store = store
        self.location = store.location
        self.every_s = float(every)
        self.resume = resume
        self.fresh = fresh
        self.saved: Container | None = None
        self.fingerprint = ""
        self.name = ""
        self.static_nodes: set[str] = set()
        self.static_edges: set[tuple[str, str]] = set()
        self._payload: dict[str, Any] | None = None
        self._due = 0.0
        self.bound = False

    @classmethod
    def open(
        cls,
        location: str,
        *,
        every_s: float | None = None,
        resume: bool = True,
        fresh: bool = False,
        options: dict[str, Any] | None = None,
    ) -> Checkpointer:
        """A checkpointer for ``location`` (a path, or ``redis://host:port/db#name``)."""
        return cls(open_store(location, options), every_s=every_s, resume=resume, fresh=fresh)

    # -- before the run ------------------------------------------------------------------
    def bind(self, graph: TaskGraph, start_node: str | None, name: str = "") -> None:
        """Read the store for a run of ``graph``: keep a checkpoint to resume, refuse others."""
        data = None if self.fresh else self.store.read()
        container = None if data is None else decode(data, self.location)
        skip = set(container.state.get("dynamic_nodes", ())) if container is not None else set()
        self.name = name
        self.static_nodes = {n for n in graph._nodes if n not in skip}
        self.static_edges = {
            (a, b) for a, b in graph.edges if a in self.static_nodes and b in self.static_nodes
        }
        self.fingerprint = graph_fingerprint(graph, start_node, skip)
        self.saved = None
        if container is not None:
            self._check(container.state)
            self.saved = container
        self.bound = True

    def _check(self, state: dict[str, Any]) -> None:
        where = self.location
        if state.get("kind") != "run":
            raise ForeignCheckpoint(
                where,
                "was written by CheckpointManager, not graflow.run: resume it with "
                "CheckpointManager.resume_from_checkpoint",
            )
        workflow = state.get("workflow") or {}
        if workflow.get("fingerprint") != self.fingerprint:
            raise ForeignCheckpoint(
                where,
                f"belongs to another workflow ({workflow.get('name') or 'unnamed'}, "
                f"{workflow.get('tasks', '?')} tasks; this one: {self.name or 'unnamed'}, "
                f"{len(self.static_nodes)} tasks): start over with fresh=True (--fresh)",
            )
        run_id = state.get("session_id")
        status = state.get("status")
        if not self.resume:
            raise CheckpointError(
                where,
                f"holds run {run_id} ({status}): continue it with resume=True (--resume) "
                "or start over with fresh=True (--fresh)",
            )
        if status == "canceled":
            raise CheckpointError(
                where,
                f"run {run_id} was canceled ({state.get('error')}): start over with "
                "fresh=True (--fresh)",
            )

    @property
    def status(self) -> str | None:
        """Status of the saved run (``running``, ``failed``, ``finished``), None if none."""
        return None if self.saved is None else str(self.saved.state.get("status"))

    @property
    def run_id(self) -> str | None:
        """Id of the saved run, which a resumed run keeps."""
        return None if self.saved is None else str(self.saved.state["session_id"])

    def payload(self) -> dict[str, Any]:
        """The saved run's pickled part: channel, tasks added at run time, final value."""
        if self._payload is None:
            assert self.saved is not None
            python = str(self.saved.header.get("python", ""))
            payload = _loads(self.saved.blob, self.location, python)
            if not isinstance(payload, dict) or "dynamic" not in payload:
                raise CorruptCheckpoint(self.location, "its pickled part is not a run's")
            self._payload = payload
        return self._payload

    def restore(self, context: ExecutionContext) -> None:
        """Fill ``context`` (created with the saved run id) with the saved run's progress."""
        assert self.saved is not None
        payload = self.payload()
        graph = context.graph
        for node_id, exe in payload["dynamic"]:
            if exe is not None and node_id not in graph._nodes:
                graph.add_node(_with_current_code(graph, node_id, exe), node_id)
        for src, dst in payload["edges"]:
            graph.add_edge(src, dst)
        channel = payload["channel"]
        if isinstance(channel, Channel):
            context.channel = channel
        elif isinstance(channel, dict) and context.channel_backend not in ("memory", "redis"):
            context.channel.update(channel)
        restore_progress(context, self.saved.state, self.location)
        logger.info(
            "run %s resumed from checkpoint %s: %d task(s) done, %d queued",
            context.session_id,
            self.location,
            len(context.completed_tasks),
            len(self.saved.state["queue"]),
        )

    # -- scheduler hooks -----------------------------------------------------------------
    def start(self, scheduler: Any) -> None:
        """The run starts: write the first checkpoint, or (resuming) renumber its items."""
        if self.saved is not None:
            scheduler.seq = itertools.count(_seq_base())
            self._due = time.monotonic() + self.every_s
        else:
            self.write(scheduler)

    def tick(self, scheduler: Any) -> None:
        """A completion was applied: write if ``every_s`` passed since the last write."""
        if time.monotonic() >= self._due:
            self.write(scheduler)

    def finish(self, scheduler: Any) -> None:
        """The run ended normally: record it as finished, with its final value."""
        self.write(scheduler, status="finished")

    def fail(self, scheduler: Any, exc: BaseException) -> None:
        """The run raised ``exc``: record it as failed or canceled where the state allows."""
        rerun = None
        if isinstance(exc, GraflowWorkflowCanceledError):
            status = "canceled"
        elif isinstance(exc, RunInterrupted) and not exc.drained:
            return  # stopped anywhere by a second signal: keep the last consistent checkpoint
        elif isinstance(exc, GraflowRuntimeError):
            status = "failed"
            if scheduler.failed_task is not None:
                rerun = (scheduler.root, scheduler.failed_task)
        else:
            return  # a backend or checkpoint failure: keep the last checkpoint
        try:
            self.write(scheduler, status=status, rerun=rerun, error=str(exc))
        except CheckpointError as err:
            logger.error("run %s: %s", scheduler.context.session_id, err)

    def write(
        self,
        scheduler: Any,
        *,
        status: str = "running",
        rerun: tuple[Any, str] | None = None,
        error: str | None = None,
        user_metadata: dict[str, Any] | None = None,
    ) -> tuple[str, CheckpointMetadata]:
        """Replace the checkpoint with the run's state now."""
        context = scheduler.context
        state = run_state(scheduler, rerun)
        meta = CheckpointMetadata.create(
            context.session_id, context.steps, context.start_node, state["backend"], user_metadata
        )
        dynamic = [n for n in context.graph._nodes if n not in self.static_nodes]
        del state["pending_tasks"]  # upstream's verbose form of "queue": kept small here
        state.update(
            kind="run",
            status=status,
            error=error,
            metadata=meta.to_dict(),
            dynamic_nodes=dynamic,
            max_steps_reached=context.max_steps_reached,
            workflow={
                "name": self.name,
                "fingerprint": self.fingerprint,
                "tasks": len(self.static_nodes),
            },
        )
        blob = _dumps(self._payload_of(scheduler, dynamic, status), context, self.location)
        self.store.write(encode(state, blob))
        context.last_checkpoint_path = self.location
        context.checkpoint_metadata = meta.to_dict()
        self._due = time.monotonic() + self.every_s
        logger.debug("run %s: checkpoint %s (%s)", context.session_id, self.location, status)
        return self.location, meta

    def _payload_of(self, scheduler: Any, dynamic: list[str], status: str) -> dict[str, Any]:
        context = scheduler.context
        nodes = context.graph._nodes
        channel: Any = None
        if context.channel_backend == "memory":
            channel = context.channel
        elif status == "finished" or context.channel_backend != "redis":
            channel = context.channel.snapshot()
        return {
            "dynamic": [(node_id, nodes[node_id].get("task")) for node_id in dynamic],
            "edges": [e for e in context.graph.edges if e not in self.static_edges],
            "channel": channel,
            "value": scheduler.last_result if status == "finished" else None,
        }
