"""What ``graflow run`` says when a run ends: the JSON summary, the failure and its hint."""

from __future__ import annotations

import json
import time
import traceback
from typing import TYPE_CHECKING, Any

from graflow.exceptions import (
    CycleLimitExceededError,
    GraflowError,
    GraflowWorkflowCanceledError,
    ParallelGroupError,
    RetryLimitExceededError,
    TaskTimeoutError,
    WorkerLost,
    WorkflowTimeoutError,
)

if TYPE_CHECKING:
    from graflow.runner import RunResult

__all__ = [
    "describe_error",
    "failure_summary",
    "hint_for",
    "member_failures",
    "specific_hint",
    "success_summary",
    "traceback_of",
]

_REPR_MAX = 200


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _timings(started: float) -> dict[str, Any]:
    now = time.time()
    return {
        "started_at": _iso(started),
        "finished_at": _iso(now),
        "wall_s": round(now - started, 6),
    }


def _value_fields(value: Any) -> dict[str, Any]:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return {"value": None, "value_repr": repr(value)[:_REPR_MAX]}
    return {"value": value}


def success_summary(result: RunResult, started: float) -> dict[str, Any]:
    """The ``--json`` summary of a run that succeeded."""
    stats = result.stats
    return {
        "run_id": result.run_id,
        "status": "succeeded",
        "exit_code": 0,
        **_value_fields(result.value),
        **_timings(started),
        "tasks": {
            "succeeded": stats.tasks_run - stats.failures,
            "failed": stats.failures,
            "retries": stats.retries,
            "worker_deaths": stats.worker_deaths,
            "completed": len(result.completed),
        },
        "max_steps_reached": result.max_steps_reached,
        "waited_for_node_s": round(result.waited_for_node_s, 3),
        "failures": [],
    }


def failure_summary(
    status: str,
    exit_code: int,
    error: BaseException,
    run_id: str | None,
    started: float,
    counters: dict[str, Any],
) -> dict[str, Any]:
    """The ``--json`` summary of a run that did not succeed (failed, interrupted, locked...)."""
    task_id, kind, message = describe_error(error)
    tasks = {_COUNTER_NAMES[k]: counters[k] for k in _COUNTER_NAMES if k in counters}
    failures = [
        {
            "task_id": task_id,
            "type": kind,
            "error": message,
            "hint": hint_for(error) if status == "failed" else None,
        }
    ]
    for member_id, member_error, group_id in member_failures(error):
        _, member_kind, member_message = describe_error(member_error)
        failures.append(
            {
                "task_id": member_id,
                "type": member_kind,
                "error": member_message,
                "hint": hint_for(member_error),
                "group": group_id,
            }
        )
    return {
        "run_id": run_id,
        "status": status,
        "exit_code": exit_code,
        "value": None,
        **_timings(started),
        "tasks": tasks,
        "failures": failures,
    }


_COUNTER_NAMES = {
    "done": "succeeded",
    "failed": "failed",
    "retries": "retries",
    "worker_deaths": "worker_deaths",
    "completed": "completed",
}


def member_failures(error: BaseException) -> list[tuple[str, BaseException, str]]:
    """(member id, its error, group id) of each failed member of a failed group, nested
    groups flattened; upstream-style policies that give only messages get a plain error."""
    if not isinstance(error, ParallelGroupError):
        return []
    found: list[tuple[str, BaseException, str]] = []
    errors = dict(error.member_errors)
    for member_id, text in error.failed_tasks:
        if member_id not in errors:
            errors[member_id] = GraflowError(text or "failed")
    for member_id, member_error in errors.items():
        found.append((member_id, member_error, error.group_id))
        found += member_failures(member_error)
    return found


def describe_error(error: BaseException) -> tuple[str | None, str, str]:
    """The failing task (if known), the error's type, and one line on what went wrong."""
    task_id = getattr(error, "task_id", None)
    cause = error.cause if isinstance(error, GraflowError) else None
    kind = type(error).__name__
    if kind == "GraflowRuntimeError" and cause is not None:
        kind = type(cause).__name__  # a task's own exception, wrapped
        message = f"{kind}: {cause}"
    elif isinstance(error, RetryLimitExceededError) and error.last_error is not None:
        last = error.last_error
        message = f"{error.retry_count} attempts, last {type(last).__name__}: {last}"
    elif isinstance(error, CycleLimitExceededError):
        message = (
            f"task {error.task_id!r} asked for another iteration after its "
            f"{error.cycle_count} of max_cycles={error.max_cycles}"
        )
    else:
        message = str(error)
    first_line = message.strip().splitlines()[0] if message.strip() else kind
    return (str(task_id) if task_id is not None else None), kind, first_line


def hint_for(error: BaseException, *, verbose: bool = False) -> str:
    """One line on what to try next (``verbose``: the traceback is shown already)."""
    hint = _hint(error)
    if verbose:
        hint = hint.replace("rerun with -v for the last traceback", "its last traceback follows")
        hint = hint.replace("rerun with -v for the full traceback", "the traceback follows")
    return hint


def specific_hint(error: BaseException) -> str | None:
    """The hint for ``error`` unless it is only the generic 'see the traceback'."""
    hint = _hint(error)
    return None if hint == _GENERIC_HINT else hint


_GENERIC_HINT = "rerun with -v for the full traceback"


def _hint(error: BaseException) -> str:
    if "could not load the run's code" in str(error):
        return (
            "the worker cannot import the workflow's modules: start its node where they "
            "import (the project directory, or PYTHONPATH), with the same packages installed"
        )
    if isinstance(error, CycleLimitExceededError):
        return "raise @task(max_cycles=...) or end the loop sooner (ctx.next_iteration)"
    if isinstance(error, WorkerLost):
        return "its worker process died (out of memory? os._exit? a crash in C code): check dmesg"
    if isinstance(error, TaskTimeoutError):
        return "it ran past @task(timeout_s=...): raise that timeout or split the task"
    if isinstance(error, WorkflowTimeoutError):
        return "the run took longer than --timeout-s: raise it"
    if isinstance(error, RetryLimitExceededError):
        return "it failed on every retry: rerun with -v for the last traceback"
    if isinstance(error, GraflowWorkflowCanceledError):
        return "a task called cancel_workflow(); its message says why"
    if isinstance(error, ParallelGroupError):
        return (
            "the group's policy rejected its members' outcomes: see the failed members "
            "(a policy such as 'best_effort' or AtLeastNGroupPolicy lets a group succeed anyway)"
        )
    return _GENERIC_HINT


def traceback_of(error: BaseException) -> str:
    """The traceback that explains ``error``: the failing task's own when there is one."""
    remote = getattr(error, "remote_traceback", None)
    if remote:
        task_id = getattr(error, "task_id", None)
        return f"traceback of task {task_id!r}:\n{remote.rstrip()}"
    cause = error.cause if isinstance(error, GraflowError) else None
    shown = cause if cause is not None and cause.__traceback__ is not None else error
    return "".join(traceback.format_exception(shown)).rstrip()
