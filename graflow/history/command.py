"""``graflow runs list`` and ``graflow runs show``: the run history on a terminal or as JSON."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from graflow.config import Settings
from graflow.exceptions import ConfigError
from graflow.history.location import reader_store
from graflow.history.model import AttemptRecord, RunDetail, RunRecord
from graflow.history.store import HistoryStore
from graflow.ops import EXIT_OK
from graflow.ops.console import Console
from graflow.ops.run import redis_tls_of, redis_url_of

__all__ = ["TaskSummary", "runs_command", "summarize_tasks"]

_BAR_WIDTH = 40


def runs_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """``graflow runs list|show``; returns the exit code."""
    redis_url = redis_url_of(args.redis, env)
    store = reader_store(args.history, env, redis_url=redis_url, redis_tls=redis_tls_of(args, env))
    try:
        if args.action == "list":
            _list(store, args, console)
        else:
            _show(store, args, console)
    finally:
        store.close()
    return EXIT_OK


def _list(store: HistoryStore, args: argparse.Namespace, console: Console) -> None:
    runs = store.list_runs(status=args.status, workflow=args.workflow, limit=args.limit)
    if args.json:
        console.say(json.dumps([r.as_dict() for r in runs]))
        return
    if not runs:
        console.say(f"no runs recorded in {store.location}")
        return
    rows: list[tuple[str, ...]] = [
        ("RUN", "WORKFLOW", "STATUS", "EXIT", "STARTED", "TOOK", "TASKS", "BACKEND")
    ]
    rows += [_list_row(r) for r in runs]
    console.say(_table(rows))


def _list_row(run: RunRecord) -> tuple[str, ...]:
    took = run.duration_s if run.duration_s is not None else time.time() - run.started_at
    done = run.counts.get("succeeded", 0)
    failed = run.counts.get("failed", 0)
    tasks = f"{done}/{run.tasks}" + (f" ({failed} failed)" if failed else "")
    return (
        run.run_id[:12],
        run.workflow or "-",
        str(run.status),
        "-" if run.exit_code is None else str(run.exit_code),
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at)),
        _seconds(took),
        tasks,
        run.backend,
    )


@dataclass
class TaskSummary:
    """One task of a run: its last state, how many attempts, where and when it ran."""

    task_id: str
    state: str
    attempts: int
    worker: str
    start_offset_s: float | None
    duration_s: float | None
    error: str
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain values."""
        return dict(self.__dict__)


def summarize_tasks(detail: RunDetail) -> list[TaskSummary]:
    """Per task (in the order they were first queued): last state, attempts, worker, times."""
    by_task: dict[str, list[AttemptRecord]] = {}
    ordered = sorted(detail.attempts, key=lambda a: (a.queued_at is None, a.queued_at or 0.0))
    for attempt in ordered:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    start = detail.run.started_at
    out = []
    for task_id, attempts in by_task.items():
        last = attempts[-1]
        first_start = next((a.started_at for a in attempts if a.started_at is not None), None)
        ran = [a for a in attempts if a.started_at is not None]
        out.append(
            TaskSummary(
                task_id=task_id,
                state=last.state,
                attempts=len(ran),
                worker=last.worker,
                start_offset_s=None if first_start is None else first_start - start,
                duration_s=last.duration_s,
                error=last.error,
                traceback=last.traceback,
            )
        )
    return out


def _show(store: HistoryStore, args: argparse.Namespace, console: Console) -> None:
    detail = store.get_run(args.run_id)
    if detail is None:
        raise ConfigError(
            f"no run {args.run_id!r} in {store.location} (or the prefix names several runs): "
            "'graflow runs list' shows the recent ones"
        )
    tasks = summarize_tasks(detail)
    if args.json:
        console.say(
            json.dumps({**detail.as_dict(), "tasks": [t.as_dict() for t in tasks]}, default=str)
        )
        return
    console.say(_describe_run(detail.run))
    timeline = console.stdout.isatty() or args.timeline
    console.say(_task_table(tasks, detail.run, timeline))
    failures = [t for t in tasks if t.state == "failed" and (t.error or t.traceback)]
    for task in failures:
        console.say(f"\ntask {task.task_id} failed: {task.error}")
        if task.traceback:
            console.say(task.traceback.rstrip())


def _describe_run(run: RunRecord) -> str:
    took = "" if run.duration_s is None else f" in {_seconds(run.duration_s)}"
    code = "" if run.exit_code is None else f", exit code {run.exit_code}"
    lines = [
        f"run {run.run_id}: {run.workflow or '(unnamed)'} {run.status}{took}{code}",
        f"  target {run.target or '-'}, {run.backend} on {run.host} (pid {run.pid}), "
        f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.started_at))}",
    ]
    if run.error:
        lines.append(f"  error: {run.error}")
    return "\n".join(lines)


def _task_table(tasks: list[TaskSummary], run: RunRecord, timeline: bool) -> str:
    header = ("TASK", "STATE", "ATTEMPTS", "WORKER", "START", "TOOK")
    rows: list[tuple[str, ...]] = [header + (("TIMELINE",) if timeline else ())]
    end = run.ended_at or time.time()
    span = max(end - run.started_at, 1e-6)
    for task in tasks:
        row: tuple[str, ...] = (
            task.task_id,
            task.state,
            str(task.attempts),
            task.worker or "-",
            "-" if task.start_offset_s is None else f"+{_seconds(task.start_offset_s)}",
            "-" if task.duration_s is None else _seconds(task.duration_s),
        )
        if timeline:
            row += (_bar(task, span),)
        rows.append(row)
    return _table(rows)


def _bar(task: TaskSummary, span: float) -> str:
    """The task's place in the run as a bar of ``_BAR_WIDTH`` characters."""
    if task.start_offset_s is None:
        return "." * _BAR_WIDTH
    begin = int(task.start_offset_s / span * _BAR_WIDTH)
    length = max(1, round((task.duration_s or 0.0) / span * _BAR_WIDTH))
    begin = min(begin, _BAR_WIDTH - 1)
    length = min(length, _BAR_WIDTH - begin)
    mark = "#" if task.state == "succeeded" else "x" if task.state == "failed" else "="
    return "." * begin + mark * length + "." * (_BAR_WIDTH - begin - length)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.1f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{value / 60:.1f}m"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
