"""The ``graflow`` command: argparse -> Settings -> one call; errors -> exit codes.

Exit codes: 0 success, 1 the workflow failed, 2 usage or configuration error, 3 another run
holds the lock, 4 Redis unavailable, 128+N stopped by signal N (130 for Ctrl-C).
The commands themselves live in ``graflow.ops`` (run, node, admin); this module only
parses, sets up logging and output, and maps what escapes to an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from graflow.config import Settings
from graflow.core.export import to_ascii, to_dot, to_mermaid
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
from graflow.ops.logs import Redactor, RunTag, configure_logging, secrets_in
from graflow.ops.report import failure_summary
from graflow.ops.target import graph_of, load_target, put_working_directory_on_path
from graflow.trace.setup import TRACERS

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "load_target",
    "main",
]

Command = Callable[[argparse.Namespace, Settings, Console], int]

_RUN_EXAMPLE = """examples:
  graflow run examples/word_count.py --processes 4
  graflow run mypkg.flows:nightly --redis redis://localhost:6379/0 --set day=2026-11-27 --json
  */5 * * * * graflow run mypkg.flows:sync --lock sync --quiet || logger -t graflow "failed: $?"

exit codes: 0 succeeded, 1 the workflow failed (task, error and hint on stderr; the
  traceback with -v), 2 usage or configuration error (also Redis refusing the password,
  certificate or ACL user), 3 --lock held by another run, 4 Redis unavailable (retry
  later), 130 interrupted (Ctrl-C), 143 SIGTERM.
progress: on a terminal, a live line on stderr (done, queued, running, failed, rate,
  elapsed); off with --quiet, --no-progress, or when stderr is not a terminal.
"""
_SUPERVISOR_EXAMPLE = """examples:
  graflow supervisor --redis redis://redis:6379/0 --processes 8 --queue default
  graflow supervisor --redis redis://redis:6379/0 --metrics-port 9464   # then scrape /metrics
  graflow supervisor --redis redis+cluster://r1:7000,r2:7000,r3:7000
  graflow supervisor --redis rediss://graflow:PASSWORD@redis:6380/0 --redis-ca-cert ca.pem

metrics: graflow_tasks_total{queue,status=started|succeeded|failed|retried},
  graflow_task_duration_seconds (histogram), graflow_queue_depth, graflow_tasks_in_flight,
  graflow_dead_letters, graflow_worker_deaths_total, graflow_redis_up

environment: GRAFLOW_REDIS_URL (or REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD),
  GRAFLOW_REDIS_CA_CERT, GRAFLOW_REDIS_CERT, GRAFLOW_REDIS_KEY, GRAFLOW_QUEUE,
  MAX_CONCURRENT_TASKS, WORKER_ID, GRAFLOW_SECRET, GRAFLOW_SECRET_FILE
"""
_STATUS_EXAMPLE = """examples:
  graflow status --redis redis://localhost:6379/0
  graflow status --redis redis://localhost:6379/0 --queue default --json | jq .queues

shows each queue's waiting entries (XLEN less those in flight), the tasks in flight with
their age (XPENDING), dead letters, live nodes and workers from their heartbeats (last
seen, done, failed, tasks/s), and run locks. Worker figures lag by up to lease/3 seconds.
"""
_DLQ_EXAMPLE = """examples:
  graflow dlq list --redis redis://localhost:6379/0 --queue default
  graflow dlq show 1732700000000-0 --redis redis://localhost:6379/0
  graflow dlq requeue --all --redis redis://localhost:6379/0
  graflow dlq purge --yes --redis redis://localhost:6379/0

entries land in the dead-letter stream when they cannot be run: undecodable, unsigned or
forged payloads, or tasks whose workers died --max-deliveries times.
"""


def _at_least(minimum: float, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text!r}")
        return value

    return parse


def _above_zero(text: str) -> float:
    value: float = _at_least(0.0, float)(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value: int = _at_least(0, int)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {text!r}")
    return value


def _common(verbose_default: Any) -> argparse.ArgumentParser:
    """-v and --log-json, accepted before and after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=verbose_default,
        help="debug logs, and full tracebacks on failure",
    )
    common.add_argument(
        "--log-json",
        action="store_true",
        default=verbose_default,
        help="log one JSON object per line (ts, level, logger, message, run_id, task_id)",
    )
    return common


_TARGET_HELP = (
    "module:attr, path/to/file.py:attr or path/to/file.py (its one top-level workflow, else "
    "its build()); attr is a workflow or a function returning one; modules are imported "
    "from the working directory first, as with python -m"
)
_PATH_NOTE = """
modules: like python -m, the working directory comes first on sys.path (then
  PYTHONPATH), in this process and in its worker processes.
"""
_URL_HELP = (
    "redis://[user:password@]host:port/db, rediss://... (TLS) or "
    "redis+cluster://host:port[,host:port...] (or GRAFLOW_REDIS_URL)"
)


def _tls_options(parser: argparse.ArgumentParser) -> None:
    """The certificate files of a rediss:// connection, on every command that takes a URL."""
    tls = parser.add_argument_group("TLS (rediss:// and rediss+cluster:// URLs)")
    tls.add_argument(
        "--redis-ca-cert",
        metavar="PEM",
        help="CA certificate that signed the server's (or GRAFLOW_REDIS_CA_CERT)",
    )
    tls.add_argument(
        "--redis-cert", metavar="PEM", help="client certificate (or GRAFLOW_REDIS_CERT)"
    )
    tls.add_argument(
        "--redis-key", metavar="PEM", help="client certificate's key (or GRAFLOW_REDIS_KEY)"
    )


def _redis_options(parser: argparse.ArgumentParser, queue_help: str) -> None:
    parser.add_argument("--redis", metavar="URL", help=_URL_HELP)
    _tls_options(parser)
    parser.add_argument("--queue", metavar="NAME", help=queue_help)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run",
        parents=[common],
        help="run a workflow",
        description="Run a workflow on a local process pool or on Redis nodes.",
        epilog=_RUN_EXAMPLE + _PATH_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", help=_TARGET_HELP)
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--processes",
        metavar="N",
        type=_at_least(0, int),
        help="local worker processes (default: one per core; 0: in this process)",
    )
    where.add_argument(
        "--redis", metavar="URL", help="run on the nodes serving this Redis: " + _URL_HELP
    )
    _tls_options(run)
    run.add_argument("--queue", metavar="NAME", help="Redis queue name (default: default)")
    run.add_argument("--start", metavar="ID", help="start task id")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="initial channel value (JSON or plain text); repeatable",
    )
    run.add_argument(
        "--max-steps",
        metavar="N",
        type=_at_least(1, int),
        help="fail the run (exit 1) if it takes N steps with tasks still queued (default: "
        "10,000 plus one per task of the workflow)",
    )
    run.add_argument("--timeout-s", metavar="S", type=_above_zero, help="fail the run after S s")
    run.add_argument(
        "--lock",
        metavar="NAME",
        help="exit 3 if another run holds lock NAME (a file lock; in Redis with --redis)",
    )
    run.add_argument("--secret-file", help="signing secret for Redis runs")
    run.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress, no output on success")
    run.add_argument("--no-progress", action="store_true", help="no live progress line")
    run.add_argument(
        "--history",
        metavar="off|PATH",
        help="record the run in this SQLite file, or nowhere (or GRAFLOW_HISTORY; default: "
        "$XDG_STATE_HOME/graflow/history.db, in Redis for --redis runs)",
    )
    _add_run_checkpoint(run)
    _add_run_metrics(run)
    _trace_options(run)
    run.set_defaults(handler="graflow.ops.run:run_command")


def _add_run_metrics(run: argparse.ArgumentParser) -> None:
    """``graflow run`` options of Prometheus metrics (graflow.ops.run_metrics)."""
    metrics = run.add_argument_group(
        "metrics (graflow_run_tasks_total{workflow,status}, graflow_run_exit_code, ...)"
    )
    metrics.add_argument(
        "--metrics-port",
        metavar="P",
        type=_port,
        help="serve Prometheus metrics on this port while the run lasts (0: any free port)",
    )
    metrics.add_argument(
        "--metrics-addr",
        metavar="ADDR",
        default="127.0.0.1",
        help="address the metrics endpoint listens on (default: 127.0.0.1, this host only; "
        "0.0.0.0 for every interface, e.g. in a container)",
    )
    metrics.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="keep the metrics in PATH (every 15 s, and at the end: how the run ended), for "
        "node_exporter's textfile collector",
    )
    metrics.add_argument(
        "--metrics-name",
        metavar="NAME",
        help="the metrics' workflow label (default: TARGET)",
    )


def _add_run_checkpoint(run: argparse.ArgumentParser) -> None:
    """``graflow run`` options of checkpoint/resume (graflow.core.checkpoint)."""
    saved = run.add_argument_group("checkpoints (a rerun after a crash continues the run)")
    saved.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="keep the run's progress in PATH (a file, or redis://host:port/db#name)",
    )
    how = saved.add_mutually_exclusive_group()
    how.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in PATH (a finished one is not run again)",
    )
    how.add_argument("--fresh", action="store_true", help="start over, replacing what PATH holds")
    saved.add_argument(
        "--checkpoint-every-s",
        metavar="S",
        type=_at_least(0.0, float),
        help="write PATH at most every S s while tasks complete (default: 60)",
    )


def _add_supervisor(sub: Any, common: argparse.ArgumentParser) -> None:
    sup = sub.add_parser(
        "supervisor",
        parents=[common],
        help="serve a Redis queue with worker processes",
        description="Run one graflow node: worker processes that serve a Redis queue.",
        epilog=_SUPERVISOR_EXAMPLE + _PATH_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sup.add_argument("--redis", metavar="URL", help=_URL_HELP)
    _tls_options(sup)
    sup.add_argument(
        "--processes",
        type=_at_least(1, int),
        help="worker processes (default: MAX_CONCURRENT_TASKS, else one per core, as run)",
    )
    sup.add_argument(
        "--threads",
        type=int,
        help="io=True tasks each worker process runs at once (default: GRAFLOW_THREADS or 16)",
    )
    sup.add_argument(
        "--max-async",
        type=int,
        help="async tasks each worker process keeps in flight (default: GRAFLOW_MAX_ASYNC or 1000)",
    )
    sup.add_argument("--queue", help="queue name (default: default)")
    sup.add_argument("--node-id", help="name of this node (default: host-pid-random)")
    sup.add_argument("--secret-file", help="file holding the signing secret shared by all hosts")
    sup.add_argument(
        "--lease-s",
        type=_above_zero,
        default=30.0,
        help="a dead worker's tasks are redelivered after this long",
    )
    sup.add_argument("--max-deliveries", type=_at_least(1, int), default=3)
    sup.add_argument(
        "--wait-redis-s",
        metavar="S",
        type=_at_least(0.0, float),
        default=60.0,
        help="wait up to S s for Redis to accept connections at start (default: 60; then exit 4)",
    )
    sup.add_argument("--grace-s", type=_at_least(0.0, float), default=10.0, help="drain time")
    sup.add_argument(
        "--metrics-port",
        metavar="P",
        type=_port,
        help="serve Prometheus metrics on this port (0: any free port, logged)",
    )
    sup.add_argument(
        "--metrics-addr",
        metavar="ADDR",
        default="127.0.0.1",
        help="address the metrics endpoint listens on (default: 127.0.0.1, this host only; "
        "0.0.0.0 for every interface, e.g. in a container)",
    )
    _trace_options(sup)
    sup.set_defaults(handler="graflow.ops.node:supervisor_command")


def _trace_options(parser: argparse.ArgumentParser) -> None:
    """``--tracer`` / ``--otlp-endpoint`` (graflow.trace; needs graflow[otel])."""
    traced = parser.add_argument_group("tracing (OpenTelemetry, needs graflow[otel])")
    traced.add_argument(
        "--tracer",
        choices=TRACERS,
        help="otel: a span per run and per task attempt, sent over OTLP/HTTP "
        "(default: GRAFLOW_TRACER, else off)",
    )
    traced.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="OTLP/HTTP traces URL (default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else http://localhost:4318/v1/traces)",
    )


def _add_status(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show queues, tasks in flight, dead letters and nodes",
        description="Show what a Redis deployment of graflow is doing right now.",
        epilog=_STATUS_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _redis_options(status, "only this queue (default: every queue)")
    status.set_defaults(handler="graflow.ops.admin:status_command")


def _add_dlq(sub: Any, common: argparse.ArgumentParser) -> None:
    dlq = sub.add_parser(
        "dlq",
        parents=[common],
        help="list, show, requeue or purge dead letters",
        description="Look at and mend the dead-letter stream of a queue.",
        epilog=_DLQ_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    queue_help = "queue name (default: GRAFLOW_QUEUE or default)"
    specs = {
        "list": ("list the oldest dead letters", "graflow dlq list --count 20"),
        "show": ("show one dead letter and its tasks", "graflow dlq show 1732700000000-0"),
        "requeue": ("move dead letters back to the queue", "graflow dlq requeue --all"),
        "purge": ("delete every dead letter of the queue", "graflow dlq purge --yes"),
    }
    for name, (summary, example) in specs.items():
        action = actions.add_parser(
            name,
            parents=[common],
            help=summary,
            description=summary + ".",
            epilog=f"example:\n  {example} --redis redis://localhost:6379/0",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _redis_options(action, queue_help)
        action.set_defaults(handler="graflow.ops.admin:dlq_command")
    action_parsers = actions.choices
    action_parsers["list"].add_argument("--count", type=_at_least(1, int), default=50)
    action_parsers["show"].add_argument("id", metavar="ID", help="dead-letter entry id")
    action_parsers["show"].add_argument("--secret-file", help="secret to decode the payload")
    action_parsers["requeue"].add_argument("ids", metavar="ID", nargs="*")
    action_parsers["requeue"].add_argument("--all", action="store_true", help="every entry")
    action_parsers["purge"].add_argument("--yes", action="store_true", help="really purge")


def _add_cancel(sub: Any, common: argparse.ArgumentParser) -> None:
    cancel = sub.add_parser(
        "cancel",
        parents=[common],
        help="stop a run on Redis",
        description="Stop a run on Redis: its producer fails (RunCanceled, exit 1) within "
        "seconds, and nodes skip the run's queued items.",
        epilog="example:\n  graflow cancel 3f2a...e9 --redis redis://localhost:6379/0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cancel.add_argument("run_id", metavar="RUN_ID", help="the run id (graflow run prints it)")
    cancel.add_argument("--redis", metavar="URL", help=_URL_HELP)
    _tls_options(cancel)
    cancel.add_argument("--json", action="store_true", help="print JSON instead of text")
    cancel.set_defaults(handler="graflow.ops.admin:cancel_command")


def _graph_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    graph = graph_of(load_target(args.target))
    if args.format == "mermaid":
        console.say(to_mermaid(graph))
    elif args.format == "dot":
        console.say(to_dot(graph))
    else:
        console.say(to_ascii(graph))
    return EXIT_OK


_RUNS_EXAMPLE = """examples:
  graflow runs list --status failed --limit 5
  graflow runs show last          # the latest run; a run id or a unique prefix of one
  graflow runs list --redis redis://redis:6379/0 --workflow nightly --json
"""


def _add_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    runs = sub.add_parser(
        "runs",
        parents=[common],
        help="list recorded runs, or show one task by task",
        description="The run history: local runs in SQLite, Redis runs in Redis.",
        epilog=_RUNS_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("list", "recent runs, live ones first"), ("show", "one run's tasks")):
        action = actions.add_parser(name, parents=[common], help=text, description=text)
        if name == "show":
            action.add_argument(
                "run_id", metavar="RUN_ID", help="a run id, a unique prefix of one, or 'last'"
            )
            action.add_argument("--timeline", action="store_true", help="bars even off a tty")
        else:
            action.add_argument("--status", help="only runs in this state (failed, running...)")
            action.add_argument("--workflow", metavar="NAME", help="only this workflow's runs")
            action.add_argument("--limit", metavar="N", type=_at_least(1, int), default=20)
        action.add_argument(
            "--redis", metavar="URL", help="the history of Redis runs: " + _URL_HELP
        )
        _tls_options(action)
        action.add_argument("--history", metavar="PATH", help="SQLite file (or GRAFLOW_HISTORY)")
        action.add_argument("--json", action="store_true", help="print JSON instead of text")
        action.set_defaults(handler="graflow.history.command:runs_command")


_UI_EXAMPLE = """examples:
  graflow ui                                    # http://127.0.0.1:8265/, local runs
  graflow ui --redis redis://redis:6379/0       # Redis runs, nodes, queues, dead letters
  GRAFLOW_UI_TOKEN=s3cret graflow ui --host 0.0.0.0   # other machines: a token required
"""


def _add_ui(sub: Any, common: argparse.ArgumentParser) -> None:
    ui = sub.add_parser(
        "ui",
        parents=[common],
        help="serve the web dashboard (needs graflow[ui])",
        description="A web dashboard of runs, their graphs and timelines, nodes and queues.",
        epilog=_UI_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ui.add_argument("--redis", metavar="URL", help="Redis runs, nodes and queues: " + _URL_HELP)
    _tls_options(ui)
    ui.add_argument("--history", metavar="PATH", help="SQLite file (or GRAFLOW_HISTORY)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=_port, default=8265, help="port (default 8265)")
    ui.add_argument("--token", help="required by the pages (or GRAFLOW_UI_TOKEN); must be set "
                    "for any --host other than loopback")  # fmt: skip
    ui.set_defaults(handler="graflow.ui.command:ui_command")


def _add_graph(sub: Any, common: argparse.ArgumentParser) -> None:
    graph = sub.add_parser(
        "graph",
        parents=[common],
        help="print a workflow's graph",
        description="Print a workflow's graph as Mermaid, DOT or text.",
        epilog="examples:\n  graflow graph examples/pipeline.py --format mermaid\n"
        "  graflow graph examples.word_count:build --format text\n" + _PATH_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument("target", help=_TARGET_HELP)
    graph.add_argument("--format", choices=("mermaid", "dot", "text"), default="mermaid")
    graph.set_defaults(handler=_graph_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="graflow",
        parents=[_common(False)],
        description="Run workflows of plain Python functions.",
        epilog="run 'graflow COMMAND --help' for a command's options and an example",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(argparse.SUPPRESS)  # after the command name: same flags, no reset
    commands = (_add_run, _add_supervisor, _add_status, _add_dlq, _add_cancel, _add_graph)
    for add in (*commands, _add_runs, _add_ui):
        add(sub, common)
    return parser


def _console(args: argparse.Namespace) -> Console:
    tag = RunTag()
    redact = Redactor(secrets_in(getattr(args, "redis", None), None))
    level = logging.INFO
    if args.verbose:
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    handler = configure_logging(level=level, json_lines=args.log_json, redact=redact, tag=tag)
    return Console(redact, tag, log_json=args.log_json, verbose=args.verbose, log_handler=handler)


def _command(handler: Command | str) -> Command:
    """The function of a command; named ones are imported only when run (the pool, Redis and
    prometheus_client take half a second to import, which --help and graph do not need)."""
    if not isinstance(handler, str):
        return handler
    module, _, name = handler.partition(":")
    command: Command = getattr(importlib.import_module(module), name)
    return command


def _exit_code(exc: BaseException) -> int:
    # Redis refusing our credentials, certificates or ACL user is a configuration error: a
    # retry (which exit 4 invites) cannot succeed until someone fixes it.
    if isinstance(exc, ConfigError | GraphCompilationError | RedisAccessError):
        return EXIT_USAGE
    if isinstance(exc, LockHeld):
        return EXIT_LOCKED
    if isinstance(exc, BackendUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, RunInterrupted):
        return 128 + signal.Signals[exc.signal_name].value
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


_IMPORTING_COMMANDS = frozenset({"run", "supervisor", "graph"})
_STATUS_OF_EXIT = {
    EXIT_FAILED: "failed",
    EXIT_USAGE: "error",
    EXIT_LOCKED: "locked",
    EXIT_UNAVAILABLE: "unavailable",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graflow`` command; returns the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        # The reader of stdout went away (`graflow graph ... | head`): stop quietly, as a
        # command killed by SIGPIPE would, and keep the interpreter's final flush silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE.value
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 after --help, 2 for a bad command line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = _console(args)
    if args.command in _IMPORTING_COMMANDS:
        put_working_directory_on_path()
    try:
        env = Settings.from_env()
        console.redact.add(secrets_in(env.redis_url, env.secret))
        return int(_command(args.handler)(args, env, console))
    except (GraflowError, KeyboardInterrupt) as exc:
        code = _exit_code(exc)
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        hint = "rerun with -v for the traceback" if code == EXIT_FAILED else None
        if args.verbose:
            hint = None  # the traceback follows
        details = None
        if args.verbose and code == EXIT_FAILED:
            details = "".join(traceback.format_exception(exc)).rstrip()
        console.fail(message, hint=hint, details=details)
        if args.command == "run" and args.json:  # stopped before the run command took over
            status = _STATUS_OF_EXIT.get(code, "interrupted")
            summary = failure_summary(status, code, exc, None, time.time(), {})
            console.say(json.dumps(summary, default=str))
        return code
