"""``python -m graflow.worker.main``: one TaskWorker as a process of its own (upstream's CLI).

Every flag defaults to an environment variable: ``WORKER_ID`` (``worker_<pid>``),
``MAX_CONCURRENT_TASKS`` (4), ``POLL_INTERVAL`` (0.1), ``REDIS_HOST`` (localhost),
``REDIS_PORT`` (6379), ``REDIS_DB`` (0), ``REDIS_KEY_PREFIX`` (graflow), ``LOG_LEVEL`` (INFO),
``GRAFLOW_QUEUE`` (default); blobs are signed with ``GRAFLOW_SECRET``, else the file named by
``--secret-file``/``GRAFLOW_SECRET_FILE``, else the per-user default secret file.

Exit codes: 0 stopped by SIGTERM or SIGINT (tasks in hand finished or handed back),
1 Redis does not answer PING, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from graflow.exceptions import BackendUnavailable, ConfigError
from graflow.queue.distributed import DistributedTaskQueue
from graflow.redis.producer import connect
from graflow.redis.signing import Signer, load_secret
from graflow.worker.worker import TaskWorker

__all__ = ["build_parser", "main"]

logger = logging.getLogger("graflow.worker")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_IDLE_S = 0.5


def _env_number(env: Mapping[str, str], name: str, default: str, kind: type[int | float]) -> str:
    """``env[name]`` (or ``default``) if it reads as ``kind``; ConfigError naming it otherwise."""
    raw = env.get(name) or default
    try:
        kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser, with defaults taken from ``env``."""
    level = (env.get("LOG_LEVEL") or "INFO").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL={level!r} is not one of {', '.join(_LOG_LEVELS)}")
    parser = argparse.ArgumentParser(
        prog="python -m graflow.worker.main", description="TaskWorker independent process"
    )
    add = parser.add_argument
    add("--worker-id", default=env.get("WORKER_ID") or f"worker_{os.getpid()}")
    add(
        "--max-concurrent-tasks",
        type=int,
        default=int(_env_number(env, "MAX_CONCURRENT_TASKS", "4", int)),
    )
    add(
        "--poll-interval",
        type=float,
        default=float(_env_number(env, "POLL_INTERVAL", "0.1", float)),
    )
    add("--redis-host", default=env.get("REDIS_HOST") or "localhost")
    add("--redis-port", type=int, default=int(_env_number(env, "REDIS_PORT", "6379", int)))
    add("--redis-db", type=int, default=int(_env_number(env, "REDIS_DB", "0", int)))
    add("--redis-key-prefix", default=env.get("REDIS_KEY_PREFIX") or "graflow")
    add("--queue", default=env.get("GRAFLOW_QUEUE") or "default", help="queue name to serve")
    add("--secret-file", default=env.get("GRAFLOW_SECRET_FILE") or None)
    add("--log-level", type=str.upper, choices=_LOG_LEVELS, default=level)
    return parser


def _redis_url(host: str, port: int, db: int) -> str:
    """``redis://host:port/db``, with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"redis://{host}:{port}/{db}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run a TaskWorker until SIGTERM/SIGINT; return the exit code."""
    env = os.environ if env is None else env
    try:
        args = build_parser(env).parse_args(argv)
    except ConfigError as exc:
        print(f"graflow.worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        secret = load_secret(env.get("GRAFLOW_SECRET") or None, args.secret_file)
        client = connect(_redis_url(args.redis_host, args.redis_port, args.redis_db))
        queue = DistributedTaskQueue(
            client, key_prefix=args.redis_key_prefix, queue=args.queue, signer=Signer(secret)
        )
        worker = TaskWorker(
            queue,
            worker_id=args.worker_id,
            max_concurrent_tasks=args.max_concurrent_tasks,
            poll_interval=args.poll_interval,
        )
    except BackendUnavailable as exc:
        logger.error("cannot start worker %s: %s", args.worker_id, exc)
        return 1
    except ConfigError as exc:
        logger.error("cannot start worker %s: %s", args.worker_id, exc)
        return 2
    worker.start()
    # The worker's SIGTERM/SIGINT handlers stop it; this thread only waits for that.
    while worker.is_running:
        time.sleep(_IDLE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
