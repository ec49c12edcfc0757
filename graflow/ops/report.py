"""What ``graflow run`` says when a run ends: the JSON summary, the failure and its hint."""

from __future__ import annotations

import json
import time
import traceback
from typing import TYPE_CHECKING, Any

from graflow.exceptions import (
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

__all__ = ["describe_error", "failure_summary", "hint_for", "success_summary", "traceback_of"]

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
    names = {"done": "succeeded", "failed": "failed", "retries": "retries"}
    tasks = {names[k]: counters[k] for k in names if k in counters}
    return {
        "run_id": run_id,
        "status": status,
        "exit_code": exit_code,
        "value": None,
        **_timings(started),
        "tasks": tasks,
        "failures": [
            {
                "task_id": task_id,
                "type": kind,
                "error": message,
                "hint": hint_for(error) if status == "failed" else None,
            }
        ],
    }


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
    else:
        message = str(error)
    first_line = message.strip().splitlines()[0] if message.strip() else kind
    return (str(task_id) if task_id is not None else None), kind, first_line


def hint_for(error: BaseException) -> str:
    """One line on what to try next."""
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
        return "the group's policy rejected its members' outcomes: see the failed members above"
    return "rerun with -v for the full traceback"


def traceback_of(error: BaseException) -> str:
    """The traceback that explains ``error``: the failing task's own when there is one."""
    remote = getattr(error, "remote_traceback", None)
    if remote:
        task_id = getattr(error, "task_id", None)
        return f"traceback of task {task_id!r}:\n{remote.rstrip()}"
    cause = error.cause if isinstance(error, GraflowError) else None
    shown = cause if cause is not None and cause.__traceback__ is not None else error
    return "".join(traceback.format_exception(shown)).rstrip()
