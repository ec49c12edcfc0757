"""``graflow runs list`` and ``graflow runs show``: the run history on a terminal or as JSON."""

from __future__ import annotations

import argparse
import json
import time

from graflow.config import Settings
from graflow.exceptions import ConfigError
from graflow.history.location import reader_store
from graflow.history.model import RunRecord, TaskSummary, summarize_tasks
from graflow.history.store import HistoryStore
from graflow.ops import EXIT_OK
from graflow.ops.console import Console
from graflow.ops.run import redis_tls_of, redis_url_of

__all__ = ["runs_command"]

_BAR_WIDTH = 40


def runs_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """``graflow runs list|show``; returns the exit code."""
    redis_url = redis_url_of(args.redis, env)
    # Listing a history that does not exist yet lists no run; showing one is an error.
    listing = args.action == "list"
    tls = redis_tls_of(args, env)
    store = reader_store(args.history, env, redis_url=redis_url, redis_tls=tls, create=listing)
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


def _show(store: HistoryStore, args: argparse.Namespace, console: Console) -> None:
    run_id = args.run_id
    if run_id == "last":
        recent = store.list_runs(limit=50)
        run_id = max(recent, key=lambda r: r.started_at).run_id if recent else run_id
    detail = store.get_run(run_id)
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
