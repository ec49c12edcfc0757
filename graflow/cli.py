"""The ``graflow`` command: argparse -> Settings -> one call; errors -> exit codes.

Exit codes: 0 success, 1 the workflow failed, 2 usage or configuration error,
3 another run holds the lock, 4 Redis unavailable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graflow.config import Settings
from graflow.core.export import to_ascii, to_dot, to_mermaid
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import (
    BackendUnavailable,
    ConfigError,
    GraflowError,
    GraflowRuntimeError,
    GraphCompilationError,
    RunInterrupted,
)

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

_RUN_EXAMPLE = """example:
  graflow run examples/word_count.py --processes 4
  graflow run mypkg.flows:nightly --redis redis://localhost:6379/0 --set day=2026-11-27 --json
"""
_SUPERVISOR_EXAMPLE = """example:
  graflow supervisor --redis redis://redis:6379/0 --processes 8 --queue default

environment: GRAFLOW_REDIS_URL (or REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD),
  GRAFLOW_QUEUE, MAX_CONCURRENT_TASKS, WORKER_ID, GRAFLOW_SECRET, GRAFLOW_SECRET_FILE
"""


class UsageError(Exception):
    """Raised for a bad command line (exit code 2)."""


def load_target(spec: str) -> Any:
    """The workflow named by ``module:attr``, ``file.py:attr`` or ``file.py``."""
    path_part, _, attr = spec.partition(":")
    if path_part.endswith(".py") or "/" in path_part:
        path = Path(path_part)
        if not path.is_file():
            raise UsageError(f"TARGET {spec!r}: no such file {path_part!r}")
        module_spec = importlib.util.spec_from_file_location(f"graflow_target_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"TARGET {spec!r}: cannot load {path_part!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        sys.path.insert(0, str(path.resolve().parent))
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path_part)
        except ImportError as exc:
            raise UsageError(f"TARGET {spec!r}: cannot import {path_part!r}: {exc}") from exc
    if attr:
        try:
            target = module
            for part in attr.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"TARGET {spec!r}: {path_part!r} has no attribute {attr!r}") from None
        return target() if callable(target) and not hasattr(target, "graph") else target
    found = [v for v in vars(module).values() if isinstance(v, WorkflowContext)]
    if len(found) != 1:
        names = [v.name for v in found]
        raise UsageError(
            f"TARGET {spec!r}: expected one workflow in the file, found {len(found)} {names}; "
            "name it as FILE.py:ATTR"
        )
    return found[0]


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _cmd_run(args: argparse.Namespace) -> int:
    import graflow.runner as runner  # noqa: PLC0415 - the pool is only imported when used

    env = Settings.from_env()
    target = load_target(args.target)
    started = time.time()
    redis_url = args.redis or (env.redis_url if args.processes is None else None)
    try:
        result = runner.run(
            target,
            start=args.start,
            processes=None if redis_url else args.processes,
            max_steps=args.max_steps,
            initial_channel=_parse_sets(args.set),
            timeout_s=args.timeout_s,
            redis=redis_url,
            queue=args.queue or env.queue,
            secret=env.secret,
            secret_file=args.secret_file or env.secret_file,
        )
    except GraflowRuntimeError as exc:
        _report_failure(args, exc, started)
        return EXIT_FAILED
    summary = {
        "run_id": result.run_id,
        "status": "succeeded",
        "value": _jsonable(result.value),
        "started_at": started,
        "wall_s": round(time.time() - started, 6),
        "tasks": result.stats.as_dict(),
        "completed": len(result.completed),
        "max_steps_reached": result.max_steps_reached,
        "failures": [],
    }
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(
            f"run {result.run_id} succeeded in {summary['wall_s']:.3f} s: "
            f"{len(result.completed)} task(s); value: {result.value!r}"
        )
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _report_failure(args: argparse.Namespace, exc: GraflowError, started: float) -> None:
    task_id = getattr(exc, "task_id", None)
    cause = exc.cause if exc.cause is not None else exc
    if args.json:
        print(
            json.dumps(
                {
                    "status": "failed",
                    "wall_s": round(time.time() - started, 6),
                    "failures": [
                        {"task_id": task_id, "error": str(exc), "type": type(cause).__name__}
                    ],
                }
            )
        )
    where = f"task '{task_id}'" if task_id else "the workflow"
    print(f"graflow: {where} failed: {exc}", file=sys.stderr)
    print("hint: rerun with -v for the full traceback", file=sys.stderr)
    if args.verbose:
        logging.getLogger("graflow").exception("run failed", exc_info=exc)


def _cmd_supervisor(args: argparse.Namespace) -> int:
    from graflow.redis.node import NodeSettings, run_node  # noqa: PLC0415 - loads redis
    from graflow.redis.signing import load_secret  # noqa: PLC0415 - loads redis

    env = Settings.from_env()
    url = args.redis or env.redis_url
    if not url:
        raise UsageError("--redis URL is required (or GRAFLOW_REDIS_URL / REDIS_HOST)")
    processes = args.processes or env.processes or 1
    settings = Settings(
        redis_url=url,
        queue=args.queue or env.queue,
        processes=processes,
        worker_id=args.node_id or env.worker_id,
        secret=env.secret,
        secret_file=args.secret_file or env.secret_file,
        lease_s=args.lease_s,
        max_deliveries=args.max_deliveries,
        grace_s=args.grace_s,
    )
    secret = load_secret(settings.secret, settings.secret_file)
    from graflow.redis.producer import connect  # noqa: PLC0415 - loads redis

    connect(url)
    node = NodeSettings(
        url=url,
        queue=settings.queue,
        processes=processes,
        node_id=settings.worker_id,
        lease_ms=int(settings.lease_s * 1000),
        max_deliveries=settings.max_deliveries,
        grace_s=settings.grace_s,
    )
    return run_node(node, secret)


def _cmd_graph(args: argparse.Namespace) -> int:
    target = load_target(args.target)
    graph = target.graph if hasattr(target, "graph") else target
    if args.format == "mermaid":
        print(to_mermaid(graph))
    elif args.format == "dot":
        print(to_dot(graph))
    else:
        print(to_ascii(graph))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="graflow", description="Run workflows of plain Python functions."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks, debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run a workflow",
        description="Run a workflow on a local process pool or on Redis nodes.",
        epilog=_RUN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", help="module:attr, path/to/file.py:attr or path/to/file.py")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--processes", type=int, help="local worker processes (0: in-process)")
    where.add_argument("--redis", metavar="URL", help="run on the nodes serving this Redis")
    run.add_argument("--queue", help="Redis queue name (default: default)")
    run.add_argument("--start", metavar="ID", help="start task id")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="initial channel value (JSON or plain text); repeatable",
    )
    run.add_argument("--max-steps", type=int, default=10_000)
    run.add_argument("--timeout-s", type=float)
    run.add_argument("--secret-file", help="signing secret for Redis runs")
    run.add_argument("--json", action="store_true", help="print one JSON summary")
    run.add_argument("--quiet", action="store_true", help="print nothing on success")
    run.set_defaults(func=_cmd_run)

    sup = sub.add_parser(
        "supervisor",
        help="serve a Redis queue with worker processes",
        description="Run one graflow node: worker processes that serve a Redis queue.",
        epilog=_SUPERVISOR_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sup.add_argument("--redis", metavar="URL", help="redis://[user:password@]host:port/db")
    sup.add_argument("--processes", type=int, help="worker processes (default: 1)")
    sup.add_argument("--queue", help="queue name (default: default)")
    sup.add_argument("--node-id", help="name of this node (default: host-pid-random)")
    sup.add_argument("--secret-file", help="file holding the signing secret shared by all hosts")
    sup.add_argument(
        "--lease-s",
        type=float,
        default=30.0,
        help="a dead worker's tasks are redelivered after this long",
    )
    sup.add_argument("--max-deliveries", type=int, default=3)
    sup.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    sup.set_defaults(func=_cmd_supervisor)

    graph = sub.add_parser(
        "graph",
        help="print a workflow's graph",
        description="Print a workflow's graph as Mermaid, DOT or text.",
        epilog="example:\n  graflow graph examples/pipeline.py --format mermaid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument("target")
    graph.add_argument("--format", choices=("mermaid", "dot", "text"), default="mermaid")
    graph.set_defaults(func=_cmd_graph)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graflow`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.error(str(exc))
    except (ConfigError, GraphCompilationError) as exc:
        print(f"graflow: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendUnavailable as exc:
        print(f"graflow: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RunInterrupted as exc:
        print(f"graflow: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("graflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE
