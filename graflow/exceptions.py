"""Every exception graflow raises, in one tree.

The names and constructor signatures of the upstream Graflow core are kept so that scripts
catching them keep working; graflow's own additions (worker loss, timeouts, backend faults)
hang off the same roots.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "BarrierTimeout",
    "CheckpointError",
    "CheckpointNotFound",
    "CheckpointVersionError",
    "ConfigError",
    "CorruptCheckpoint",
    "CycleLimitExceededError",
    "DeadLettered",
    "DuplicateTaskError",
    "ForeignCheckpoint",
    "GraflowError",
    "GraflowRuntimeError",
    "GraflowWorkflowCanceledError",
    "GraphCompilationError",
    "GraphError",
    "LockHeld",
    "MaxStepsExceeded",
    "ParallelGroupError",
    "PoisonMessage",
    "RedisAccessError",
    "RedisAuthError",
    "RedisPermissionError",
    "RedisTLSError",
    "RejectedBlob",
    "ResultTooLarge",
    "RetryLimitExceededError",
    "RunCanceled",
    "RunInterrupted",
    "RunLost",
    "TaskError",
    "TaskTimeoutError",
    "TruncatedCheckpoint",
    "UnknownHandlerError",
    "UnknownPolicyError",
    "UnknownTaskError",
    "WorkerLost",
    "WorkflowTimeoutError",
    "WriteRefused",
    "as_runtime_error",
]


class GraflowError(Exception):
    """Raised for any graflow failure; ``cause`` holds the original exception, if any."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause

    def __str__(self) -> str:
        if self.cause is not None:
            return f"{self.message} (caused by {self.cause})"
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses take other constructor arguments; rebuild from the instance dict.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(
    cls: type[GraflowError], args: tuple[object, ...], state: dict[str, object]
) -> GraflowError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class GraflowRuntimeError(GraflowError):
    """Raised when a workflow fails while it runs."""

    task_id: str | None = None
    """The task whose failure failed the run, when one did (set by the scheduler)."""
    remote_traceback: str | None = None
    """The formatted traceback of that task's error, from the process that ran it."""


class CycleLimitExceededError(GraflowRuntimeError):
    """Raised when ``next_iteration`` is called after a task used up its ``max_cycles``."""

    def __init__(self, task_id: str, cycle_count: int, max_cycles: int) -> None:
        super().__init__(
            f"CycleLimitExceededError(task_id={task_id}, cycle_count={cycle_count}, "
            f"max_cycles={max_cycles})"
        )
        self.task_id = task_id
        self.cycle_count = cycle_count
        self.max_cycles = max_cycles


class RetryLimitExceededError(GraflowRuntimeError):
    """Raised when a task still fails after its last allowed retry."""

    def __init__(
        self,
        task_id: str,
        retry_count: int,
        max_retries: int,
        last_error: BaseException | None = None,
    ) -> None:
        super().__init__(
            f"RetryLimitExceededError(task_id={task_id}, retry_count={retry_count}, "
            f"max_retries={max_retries})",
            cause=last_error,
        )
        self.task_id = task_id
        self.retry_count = retry_count
        self.max_retries = max_retries
        self.last_error = last_error

    def __str__(self) -> str:
        # Upstream's form: the last error is in ``cause``/``last_error``, not in the text.
        return self.message


class TaskError(GraflowRuntimeError):
    """Raised when a task failed in a way that has no exception of its own to carry.

    Examples: its result or exception could not be pickled back from a worker, or the
    exception itself could not be rebuilt. ``remote_traceback`` holds the formatted
    traceback from the process that ran the task.
    """

    def __init__(
        self,
        task_id: str,
        message: str,
        cause: BaseException | None = None,
        *,
        attempt: int = 0,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(f"Error in task '{task_id}': {message}", cause=cause)
        self.task_id = task_id
        self.attempt = attempt
        self.remote_traceback = remote_traceback


class WorkerLost(TaskError):
    """Raised when the worker process running a task died ``max_deliveries`` times."""

    def __init__(self, task_id: str, deliveries: int, detail: str = "") -> None:
        text = f"worker process died while running it ({deliveries} deliveries)"
        if detail:
            text = f"{text}: {detail}"
        super().__init__(task_id, text)
        self.deliveries = deliveries


class DeadLettered(TaskError):
    """Raised when a node parked a run's work item in the dead-letter stream instead of running it.

    ``reason`` is the node's short token (``signature``, ``unsigned``, ``version``,
    ``format``, ``deliveries``, ...); the message says what to do about it.
    """

    def __init__(self, task_id: str, reason: str, detail: str, hint: str) -> None:
        super().__init__(task_id, f"dead-lettered by a node ({reason}): {detail}; {hint}")
        self.reason = reason
        self.detail = detail


class WriteRefused(GraflowRuntimeError):
    """Raised when Redis refused for good to store a task's result or a run's state (out of
    memory under ``noeviction``, a value over its size limit): running again cannot help."""

    def __init__(self, detail: str, task_id: str | None = None, hint: str = "") -> None:
        what = f"the result of task '{task_id}'" if task_id else "the run's writes"
        hint = hint or (
            "free memory on the Redis server (maxmemory, maxmemory-policy) and rerun; the "
            "task is not run again for this"
        )
        super().__init__(f"Redis refused to store {what}: {detail}; {hint}")
        self.task_id = task_id
        self.detail = detail


class ResultTooLarge(WriteRefused):
    """Raised when a task's result is larger than the biggest value Redis accepts."""

    def __init__(self, task_id: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"it is {size_bytes} bytes, over the {limit_bytes} bytes Redis takes in one "
            "value (proto-max-bulk-len)",
            task_id,
            "return a smaller value, or write the data elsewhere (a file, object storage) "
            "and return where it is",
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class TaskTimeoutError(TaskError):
    """Raised when a task ran past its ``timeout_s`` and its worker was killed."""

    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(task_id, f"timed out after {timeout_s:g} s")
        self.timeout_s = timeout_s


class WorkflowTimeoutError(GraflowRuntimeError, TimeoutError):
    """Raised when a whole run exceeded the ``timeout_s`` given to ``graflow.run``."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"workflow did not finish within {timeout_s:g} s")
        self.timeout_s = timeout_s


class RunInterrupted(GraflowRuntimeError):
    """Raised when a run was stopped by SIGINT/SIGTERM (after draining in-flight tasks)."""

    def __init__(self, signal_name: str, drained: bool) -> None:
        how = "after in-flight tasks finished" if drained else "at once"
        super().__init__(f"run interrupted by {signal_name}, stopped {how}")
        self.signal_name = signal_name
        self.drained = drained


class ParallelGroupError(GraflowRuntimeError):
    """Raised when a parallel group's execution policy rejects its members' outcomes."""

    def __init__(
        self,
        message: str,
        group_id: str,
        failed_tasks: list[tuple[str, str | None]],
        successful_tasks: list[str],
    ) -> None:
        super().__init__(message)
        self.group_id = group_id
        self.failed_tasks = failed_tasks
        self.successful_tasks = successful_tasks
        self.member_errors: dict[str, BaseException] = {}
        """Each failed member's own error, by member id (set by the engine)."""


class MaxStepsExceeded(GraflowRuntimeError):
    """Raised when a run reached its ``max_steps`` with tasks still queued.

    ``result`` is the RunResult of what did complete (set by ``graflow.run``).
    """

    def __init__(self, run_id: str, max_steps: int, pending: int) -> None:
        super().__init__(
            f"run {run_id} reached max_steps={max_steps} with {pending} task(s) still queued: "
            "a loop without an exit? End it with terminate_workflow or max_cycles, or raise "
            "max_steps (--max-steps)"
        )
        self.run_id = run_id
        self.max_steps = max_steps
        self.pending = pending
        self.result: object = None
        self.stats: object = None
        self.context: object = None


class RunLost(GraflowRuntimeError):
    """Raised when Redis no longer holds a run it was serving (restart without persistence,
    FLUSHALL, a failover that lost writes): the run cannot finish."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(
            f"Redis lost run {run_id}: {detail}. Redis restarted without persistence, was "
            "flushed, or failed over without these writes; rerun the workflow (and turn on "
            "appendonly on the Redis server to survive restarts)"
        )
        self.run_id = run_id


class GraflowWorkflowCanceledError(GraflowRuntimeError):
    """Raised when a task called ``cancel_workflow``."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        text = (
            f"Workflow canceled by task '{task_id}': {message}"
            if task_id
            else f"Workflow canceled: {message}"
        )
        super().__init__(text)
        self.task_id = task_id
        self.reason = message


class RunCanceled(GraflowWorkflowCanceledError):
    """Raised in a run's producer when someone stopped the run (``graflow cancel RUN_ID``)."""

    def __init__(self, run_id: str, by: str) -> None:
        super().__init__(f"run {run_id} was canceled ({by})")
        self.run_id = run_id


class LockHeld(GraflowError):
    """Raised when another run holds the lock a run asked for (``graflow run --lock``)."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(f"lock {name!r} is held by another run ({holder})")
        self.name = name
        self.holder = holder


class GraphCompilationError(GraflowError):
    """Raised when a graph is malformed, before anything runs."""


GraphError = GraphCompilationError


class DuplicateTaskError(GraphCompilationError):
    """Raised when a task id is added to a graph that already has it."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Duplicate task ID: {task_id}")
        self.task_id = task_id


class UnknownTaskError(GraphCompilationError, GraflowRuntimeError, KeyError):
    """Raised when a task id (start node, goto target, ...) is not in the graph."""

    def __init__(
        self, task_id: str, known: list[str] | None = None, *, edge_only: bool = False
    ) -> None:
        known_text = ""
        if known is not None:
            shown = ", ".join(sorted(known)[:20])
            more = "" if len(known) <= 20 else f", ... ({len(known)} in all)"
            known_text = f". Available nodes: {shown or 'none'}{more}"
        if edge_only:
            text = (
                f"Node '{task_id}' has no task: only an edge names it (add_edge, or '>>' on "
                "an id); wire the task object itself into this workflow"
            )
        else:
            text = f"Node '{task_id}' not found in graph"
        GraphCompilationError.__init__(self, text + known_text)
        self.task_id = task_id

    def __str__(self) -> str:
        return GraphCompilationError.__str__(self)


class ConfigError(GraflowError):
    """Raised when a setting, backend name or option value is invalid."""


class UnknownHandlerError(ConfigError, ValueError):
    """Raised when a task names a handler that is not registered on the engine."""

    def __init__(self, handler_type: str, known: list[str]) -> None:
        ConfigError.__init__(
            self, f"Unknown handler type: {handler_type}. Supported: {', '.join(sorted(known))}"
        )
        self.handler_type = handler_type


class UnknownPolicyError(ConfigError, ValueError):
    """Raised when a parallel group's policy is neither a known name nor a policy object."""


class CheckpointError(ConfigError):
    """Raised when a checkpoint cannot be written, read or resumed; ``path`` names it.

    A ConfigError: what it asks for is a change of the checkpoint location or option
    (another path, ``fresh=True``), and the command line reports it as a usage error.
    """

    def __init__(self, path: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(f"checkpoint {path}: {message}", cause=cause)
        self.path = path


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """Raised when there is no checkpoint at the path given to resume from."""


class CorruptCheckpoint(CheckpointError):
    """Raised when a checkpoint's bytes are damaged (bad header, checksum or content)."""


class TruncatedCheckpoint(CorruptCheckpoint):
    """Raised when a checkpoint is shorter than its header says (a torn or cut-off copy)."""


class ForeignCheckpoint(CheckpointError):
    """Raised when a file is not a graflow checkpoint, or is the checkpoint of another workflow."""


class CheckpointVersionError(CheckpointError):
    """Raised when a checkpoint was written in a format version this graflow cannot read."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            path,
            f"format version {found} is not supported (this graflow reads version {supported})",
        )
        self.found = found
        self.supported = supported


class BackendError(GraflowError):
    """Raised when an execution backend (process pool, Redis) fails."""


class BackendUnavailable(BackendError):
    """Raised when a backend cannot be reached (Redis down, pool shut down)."""


class RedisAccessError(BackendUnavailable):
    """Raised when Redis is there but refuses graflow: credentials, certificates or ACL rights.

    A BackendUnavailable to code that retries outages, but the command line exits 2 (a
    configuration error: retrying cannot help until it is fixed). Its message says what to
    change: the URL, the TLS files or the server's ACL. No message shows the password.
    """


class RedisAuthError(RedisAccessError):
    """Raised when Redis refuses the username or password of the URL (or needs one)."""


class RedisTLSError(RedisAccessError):
    """Raised when the TLS handshake with Redis fails: an untrusted or unreadable certificate."""


class RedisPermissionError(RedisAccessError):
    """Raised when the Redis user may not run a command graflow needs or touch graflow's keys."""


class BarrierTimeout(BackendError):
    """Raised when a parallel group's barrier was not reached within the allowed time."""


class PoisonMessage(BackendError):
    """Raised when a queued message is undecodable, unsigned, forged or from another version."""


def as_runtime_error(ex: BaseException) -> GraflowRuntimeError:
    """Return ``ex`` if it already is a runtime error, else wrap it as upstream does."""
    if isinstance(ex, GraflowRuntimeError):
        return ex
    return GraflowRuntimeError(f"An error occurred: {ex}", cause=ex)


class RejectedBlob(PoisonMessage):
    """Raised when a blob read from Redis is unsigned, forged, truncated or from another version.

    ``reason`` is a short token for metrics and dead letters: ``unsigned``, ``truncated``,
    ``format``, ``signature`` or ``version``; the message explains it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
