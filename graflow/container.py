"""The container entry point: ``python -m graflow.container`` runs what GRAFLOW_MODE says.

    GRAFLOW_MODE=worker    graflow supervisor --node-id <WORKER_ID or host-pid-random> [OPTIONS]
                           serves the Redis queue until SIGTERM, drains, exits 0
    GRAFLOW_MODE=producer  graflow run $GRAFLOW_TARGET [OPTIONS]   against the environment's Redis,
                           exits with the run's exit code (0, 1 failed, 2 usage, 4 no Redis)
    --health               exit 0 when Redis answers PING and, for a worker, a heartbeat of
                           this node is fresh; 1 otherwise (Docker's HEALTHCHECK)
    OPTIONS                any other option goes to that command: --metrics-port, --lease-s,
                           --grace-s, --lock, --checkpoint, --resume, --json, ... (compose's
                           ``command:``); --metrics-port listens on 0.0.0.0 here

Everything else comes from the environment through ``Settings.from_env`` (GRAFLOW_REDIS_URL
or REDIS_HOST/REDIS_PORT/REDIS_DB/REDIS_PASSWORD, GRAFLOW_REDIS_CA_CERT, GRAFLOW_REDIS_CERT,
GRAFLOW_REDIS_KEY, GRAFLOW_QUEUE, MAX_CONCURRENT_TASKS, WORKER_ID, GRAFLOW_SECRET,
GRAFLOW_SECRET_FILE); the Redis URL is never put on a command line,
where a password in it would show in ``ps``. Like ``graflow.cli``, this module is an edge:
it reads the environment and maps errors to exit codes.

A worker without WORKER_ID is named ``<hostname>-<pid>-<random>``; in a container the
hostname is the container's, so ``--health`` finds the node by that prefix.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType

import redis
from redis.exceptions import RedisClusterException

from graflow import cli
from graflow.config import Settings
from graflow.exceptions import ConfigError
from graflow.redis import keys
from graflow.redis.connect import RedisClient
from graflow.redis.connect import client as redis_client

__all__ = ["default_node_id", "is_healthy", "main"]

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1

_HEALTH_TIMEOUT_S = 2.0
_GLOB_SPECIAL = frozenset("*?[]\\")


def default_node_id(hostname: str | None = None) -> str:
    """A node id unique per process: ``<hostname>-<pid>-<random>``."""
    host = hostname if hostname is not None else socket.gethostname()
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


def _candidate_nodes(client: RedisClient, settings: Settings, hostname: str) -> list[str]:
    """This container's node ids: WORKER_ID, or the registered ids that start with the host."""
    if settings.worker_id:
        return [settings.worker_id]
    pattern = f"{_glob_escape(hostname)}-*"
    members: Iterable[bytes] = client.sscan_iter(keys.nodes_index(), match=pattern, count=200)
    return [m.decode() for m in members]


def _newest_beat(fields: Mapping[bytes, bytes]) -> float | None:
    """The latest ``<consumer>:seen`` time of a node heartbeat hash."""
    seen = []
    for name, value in fields.items():
        if name.endswith(b":seen"):
            try:
                seen.append(float(value))
            except ValueError:
                continue
    return max(seen, default=None)


def is_healthy(settings: Settings, hostname: str, *, now: float | None = None) -> tuple[bool, str]:
    """(healthy, why): Redis answers and, for a worker, this node's heartbeat is fresh.

    A heartbeat is fresh when a worker of the node wrote it within ``settings.lease_s``
    (workers beat every lease/3; the hash expires soon after they stop).
    """
    if not settings.redis_url:
        return False, "no Redis configured (GRAFLOW_REDIS_URL or REDIS_HOST)"
    try:
        client = redis_client(settings.redis_url, settings.redis_tls, timeout_s=_HEALTH_TIMEOUT_S)
    except (redis.RedisError, RedisClusterException) as exc:
        return False, f"Redis does not answer: {exc}"
    try:
        client.ping()
        if settings.mode == "producer":
            return True, "Redis answers"
        node_ids = _candidate_nodes(client, settings, hostname)
        pipe = client.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(keys.node(node_id))
        beats = [_newest_beat(fields) for fields in pipe.execute()] if node_ids else []
    except redis.RedisError as exc:
        return False, f"Redis does not answer: {exc}"
    finally:
        client.close()
    newest = max((b for b in beats if b is not None), default=None)
    if newest is None:
        return False, "no heartbeat of this node in Redis"
    age_s = (time.time() if now is None else now) - newest
    if age_s > settings.lease_s:
        return False, f"the newest heartbeat of this node is {age_s:.0f} s old"
    return True, f"heartbeat {age_s:.1f} s old"


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As PID 1 (no init in the container) a signal without a handler is ignored, so
    # `docker stop` would wait out its grace period; graflow installs its own drain
    # handlers once the node or the run starts, this one only covers start-up.
    raise SystemExit(128 + signum)


def _run_worker(settings: Settings, options: list[str]) -> int:
    node_id = settings.worker_id or default_node_id()
    if "--metrics-port" in options and "--metrics-addr" not in options:
        # Scraped from outside the container: every interface, not the default loopback.
        options = [*options, "--metrics-addr", "0.0.0.0"]
    return cli.main(["supervisor", "--node-id", node_id, *options])


def _run_producer(target: str | None, options: list[str]) -> int:
    if not target:
        print(
            "graflow: GRAFLOW_TARGET is required when GRAFLOW_MODE=producer "
            "(module:attr, e.g. examples.word_count:build)",
            file=sys.stderr,
        )
        return cli.EXIT_USAGE
    if "--metrics-port" in options and "--metrics-addr" not in options:
        options = [*options, "--metrics-addr", "0.0.0.0"]
    return cli.main(["run", target, *options])


_EPILOG = """\
Any other option goes to the command of GRAFLOW_MODE (see its --help), e.g. in compose:
  worker:   command: ["--metrics-port", "9464", "--lease-s", "60", "--grace-s", "20"]
  producer: command: ["--json", "--lock", "nightly", "--checkpoint", "/data/nightly.ckpt",
                      "--resume", "--metrics-file", "/data/nightly.prom"]
--metrics-port listens on 0.0.0.0 in a container unless --metrics-addr says otherwise.

environment: GRAFLOW_MODE=worker|producer, GRAFLOW_TARGET (producer), GRAFLOW_REDIS_URL or
  REDIS_HOST/REDIS_PORT/REDIS_DB/REDIS_PASSWORD, GRAFLOW_REDIS_CA_CERT, GRAFLOW_REDIS_CERT,
  GRAFLOW_REDIS_KEY, GRAFLOW_QUEUE, MAX_CONCURRENT_TASKS, WORKER_ID, GRAFLOW_SECRET,
  GRAFLOW_SECRET_FILE
"""


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m graflow.container",
        description="Run a graflow worker node (graflow supervisor) or producer (graflow run "
        "$GRAFLOW_TARGET) as GRAFLOW_MODE says.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--health", action="store_true", help="exit 0 if this container is healthy, else 1"
    )
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the container image; returns the exit code."""
    try:
        args, options = _parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed --health
        return exc.code if isinstance(exc.code, int) else cli.EXIT_USAGE
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"graflow: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY if args.health else cli.EXIT_USAGE
    if args.health:
        healthy, why = is_healthy(settings, socket.gethostname())
        print(f"{'healthy' if healthy else 'unhealthy'}: {why}")
        return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY
    if not settings.redis_url:
        print("graflow: set GRAFLOW_REDIS_URL or REDIS_HOST", file=sys.stderr)
        return cli.EXIT_USAGE
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.mode == "producer":
        return _run_producer(os.environ.get("GRAFLOW_TARGET"), options)
    return _run_worker(settings, options)


if __name__ == "__main__":
    sys.exit(main())
