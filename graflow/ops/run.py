"""``graflow run``: take the lock, run with live progress, report; each outcome an exit code.

args ─▶ lock (flock, or Redis lease) ─▶ load TARGET ─▶ graflow.run(engine=hooked)
                                               │ on_progress ─▶ RunWatch ─▶ ProgressLine
outcome ─▶ stdout: text or one JSON summary;  stderr: failure, hint, traceback with -v
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from graflow import runner
from graflow.config import REDIS_URL_SCHEMES, RedisTLS, Settings
from graflow.core.engine import WorkflowEngine
from graflow.exceptions import (
    BackendUnavailable,
    ConfigError,
    GraflowError,
    GraphCompilationError,
    LockHeld,
    RedisAccessError,
    RunInterrupted,
)
from graflow.ops import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from graflow.ops.console import Console
from graflow.ops.lock import FileRunLock, check_lock_name, lock_dir
from graflow.ops.progress import ProgressLine, RunWatch
from graflow.ops.report import (
    describe_error,
    failure_summary,
    hint_for,
    member_failures,
    specific_hint,
    success_summary,
    traceback_of,
)
from graflow.ops.run_metrics import RunMetrics, publishing
from graflow.ops.target import load_target
from graflow.redis.connect import connect
from graflow.redis.lock import RedisRunLock
from graflow.trace.setup import TraceSetup, check_otel_installed, open_tracer

__all__ = ["parse_sets", "redis_tls_of", "redis_url_of", "run_command", "trace_setup_of"]


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as initial channel values (JSON if it parses, else text)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def redis_url_of(flag_value: str | None, env: Settings) -> str | None:
    """``--redis URL`` if given (checked, naming the flag), else the environment's URL."""
    if flag_value is None:
        return env.redis_url
    if not flag_value.startswith(REDIS_URL_SCHEMES):
        scheme = flag_value.partition("://")[0] if "://" in flag_value else flag_value[:12]
        raise ConfigError(
            f"--redis: the URL must start with {', '.join(REDIS_URL_SCHEMES)} (got {scheme!r})"
        )
    return flag_value


def redis_tls_of(args: argparse.Namespace, env: Settings) -> RedisTLS:
    """The TLS files of ``--redis-ca-cert``/``--redis-cert``/``--redis-key``, else the env's."""
    return RedisTLS(
        getattr(args, "redis_ca_cert", None) or env.redis_ca_cert,
        getattr(args, "redis_cert", None) or env.redis_cert,
        getattr(args, "redis_key", None) or env.redis_key,
    )


def trace_setup_of(args: argparse.Namespace, env: Settings) -> TraceSetup | None:
    """Where ``--tracer otel`` (or GRAFLOW_TRACER=otel) sends spans; None: not traced."""
    name = getattr(args, "tracer", None) or env.tracer
    if name != "otel":
        return None
    check_otel_installed()
    endpoint = getattr(args, "otlp_endpoint", None) or env.otlp_endpoint
    return TraceSetup(endpoint, env.service_name)


@contextlib.contextmanager
def _lock(name: str | None, redis_url: str | None, tls: RedisTLS, env: Settings) -> Iterator[None]:
    if not name:
        yield
        return
    check_lock_name(name)
    if redis_url:
        with RedisRunLock(connect(redis_url, tls), name):
            yield
    else:
        with FileRunLock(lock_dir(env.runtime_dir), name):
            yield


@contextlib.contextmanager
def _watching(
    args: argparse.Namespace, console: Console, watch: RunWatch, redis_url: str | None
) -> Iterator[None]:
    live = not (args.quiet or args.no_progress) and console.stderr.isatty()
    if not live:
        yield
        return
    line = ProgressLine(console.stderr, workers=_workers(args, redis_url))
    watch.line = line
    console.guard = line.paused
    line.start()
    try:
        yield
    finally:
        line.stop()
        console.guard = None
        watch.line = None


def _workers(args: argparse.Namespace, redis_url: str | None) -> int | None:
    """How many tasks can run at once locally; None on Redis (the nodes decide)."""
    if redis_url:
        return None
    return max(1, args.processes) if args.processes is not None else os.cpu_count() or 1


def _execute(
    args: argparse.Namespace, env: Settings, redis_url: str | None, watch: RunWatch
) -> runner.RunResult:
    if args.processes == 0 and args.timeout_s is not None and not redis_url:
        raise ConfigError(f"--timeout-s {args.timeout_s:g}: needs worker processes, not 0")
    initial = parse_sets(args.set)
    target = load_target(args.target)
    engine = WorkflowEngine()
    engine.on_progress = watch
    backend = "redis" if redis_url else "inprocess" if args.processes == 0 else "pool"
    tls = redis_tls_of(args, env)
    engine.observer = runner.recorder_for(
        target, args.history, backend, redis_url, tls, label=args.target
    )
    setup = trace_setup_of(args, env)
    return runner.run(
        target,
        start=args.start,
        processes=None if redis_url else args.processes,
        max_steps=args.max_steps,
        initial_channel=initial,
        timeout_s=args.timeout_s,
        redis=redis_url,
        redis_tls=redis_tls_of(args, env),
        queue=args.queue or env.queue,
        secret=None if args.secret_file else env.secret,  # --secret-file wins over the env
        secret_file=args.secret_file or env.secret_file,
        engine=engine,
        checkpoint=args.checkpoint,
        checkpoint_every_s=args.checkpoint_every_s,
        # Without --resume an existing checkpoint is refused (CheckpointError, exit 2).
        resume=args.resume if args.checkpoint else (args.resume or None),
        fresh=args.fresh,
        history=args.history,  # "off" must reach the runner too: no observer means none
        # A tracer from open_tracer sends what is left and stops its exporter after the run.
        tracer=open_tracer(setup) if setup is not None else "off",
    )


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives and no backend drains on it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the command like Ctrl-C (the pool and Redis runs drain on it instead)."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class _Failure:
    """How a run ended when it did not succeed."""

    error: BaseException
    status: str
    exit_code: int


def _classify(exc: BaseException, started_run: bool) -> _Failure:
    if isinstance(exc, Terminated):
        return _Failure(exc, "interrupted", 128 + exc.signum)
    if isinstance(exc, KeyboardInterrupt):
        return _Failure(exc, "interrupted", EXIT_INTERRUPTED)
    if isinstance(exc, RunInterrupted):
        return _Failure(exc, "interrupted", 128 + signal.Signals[exc.signal_name].value)
    if isinstance(exc, LockHeld):
        return _Failure(exc, "locked", EXIT_LOCKED)
    if isinstance(exc, RedisAccessError):
        return _Failure(exc, "error", EXIT_USAGE)  # configuration: a retry cannot help
    if isinstance(exc, BackendUnavailable):
        return _Failure(exc, "unavailable", EXIT_UNAVAILABLE)
    if isinstance(exc, ConfigError) or (isinstance(exc, GraphCompilationError) and not started_run):
        return _Failure(exc, "error", EXIT_USAGE)
    return _Failure(exc, "failed", EXIT_FAILED)


def run_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """Run ``args.target`` as ``graflow run`` was asked to; returns the exit code."""
    started = time.time()
    watch = RunWatch(console.tag, None)
    port, path = getattr(args, "metrics_port", None), getattr(args, "metrics_file", None)
    if port is None and path is None:
        return _run_and_report(args, env, console, watch, started)
    metrics = RunMetrics(args.metrics_name or args.target, lambda: watch.counters)
    try:
        with publishing(metrics, port=port, addr=args.metrics_addr, path=path):
            code = _run_and_report(args, env, console, watch, started)
            metrics.finish(code)
    except ConfigError as exc:  # the metrics endpoint or file, before the run started
        failure = _classify(exc, False)
        _report_failure(args, console, failure, started, watch)
        return failure.exit_code
    return code


def _run_and_report(
    args: argparse.Namespace, env: Settings, console: Console, watch: RunWatch, started: float
) -> int:
    try:
        redis_url = None if args.processes is not None else redis_url_of(args.redis, env)
        with (
            _sigterm_interrupts(),
            _lock(args.lock, redis_url, redis_tls_of(args, env), env),
            _watching(args, console, watch, redis_url),
        ):
            result = _execute(args, env, redis_url, watch)
    except (GraflowError, KeyboardInterrupt) as exc:
        failure = _classify(exc, bool(watch.counters))
        _report_failure(args, console, failure, started, watch)
        return failure.exit_code
    if args.json:
        console.say(json.dumps(success_summary(result, started), default=str))
    elif not args.quiet:
        value = repr(result.value)
        value = value if len(value) <= 200 else value[:197] + "..."
        console.say(
            f"run {result.run_id} succeeded in {time.time() - started:.3f} s: "
            f"{len(result.completed)} task(s); value: {value}"
        )
    return EXIT_OK


def _report_failure(
    args: argparse.Namespace, console: Console, failure: _Failure, started: float, watch: RunWatch
) -> None:
    run_id = console.tag.run_id
    exc, status = failure.error, failure.status
    if args.json:
        summary = failure_summary(status, failure.exit_code, exc, run_id, started, watch.counters)
        console.say(json.dumps(summary, default=str))
    task_id, kind, message = describe_error(exc)
    run = f"run {run_id}" if run_id else "run"
    details = None
    if status == "failed":
        where = f" in task {task_id!r}" if task_id else ""
        text = f"{run} failed{where}: {message}" + _members_text(exc)
        hint = hint_for(exc, verbose=args.verbose)
        details = _tracebacks(exc) if args.verbose else None
    elif status == "interrupted":
        how = "interrupted"
        if isinstance(exc, RunInterrupted):
            how = message.removeprefix("run ")
        elif isinstance(exc, Terminated):
            how = f"interrupted by {exc}"
        text, hint = f"{run} {how}", None
    elif status == "locked":
        holder = exc.holder if isinstance(exc, LockHeld) else message
        text = f"--lock {args.lock!r}: held by another run ({holder}); not starting"
        hint = "wait for that run to end (its lock goes when it exits)"
    else:
        text, hint = message, None
    console.fail(text, hint=hint, details=details, task_id=task_id, status=status, error_type=kind)


def _members_text(exc: BaseException) -> str:
    """One line per failed member of a failed group: its id, error type and message."""
    lines = []
    for member_id, error, group_id in member_failures(exc):
        _, kind, message = describe_error(error)
        message = message.removeprefix(f"Error in task '{member_id}': ")
        text = message if message.startswith(f"{kind}:") else f"{kind}: {message}"
        lines.append(f"\n  member {member_id!r} of {group_id!r} failed: {text}")
        hint = specific_hint(error)
        if hint is not None:
            lines.append(f"\n    hint: {hint}")
    return "".join(lines)


def _tracebacks(exc: BaseException) -> str:
    """The traceback of ``exc``, then each failed member's own."""
    parts = [traceback_of(exc)]
    parts += [traceback_of(error) for _, error, _ in member_failures(exc)]
    return "\n".join(parts)
