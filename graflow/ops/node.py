"""``graflow supervisor``: serve a Redis queue with worker processes, and optionally metrics."""

from __future__ import annotations

import argparse
import logging
import os
import time

from graflow.config import RedisTLS, Settings, redact_url
from graflow.exceptions import BackendUnavailable, ConfigError, RedisAccessError
from graflow.ops.console import Console
from graflow.ops.metrics import NodeMetrics, serve_metrics
from graflow.ops.run import redis_tls_of, redis_url_of, trace_setup_of
from graflow.redis.connect import connect
from graflow.redis.node import NodeSettings, run_node
from graflow.redis.signing import load_secret
from graflow.redis.status import open_client

__all__ = ["supervisor_command", "wait_for_redis"]

logger = logging.getLogger(__name__)


def _node_settings(args: argparse.Namespace, env: Settings) -> Settings:
    url = redis_url_of(args.redis, env)
    if not url:
        raise ConfigError("--redis URL is required (or GRAFLOW_REDIS_URL / REDIS_HOST)")
    tls = redis_tls_of(args, env)
    return Settings(
        redis_url=url,
        queue=args.queue or env.queue,
        processes=args.processes or env.processes or os.cpu_count() or 1,
        worker_id=args.node_id or env.worker_id,
        secret=None if args.secret_file else env.secret,  # --secret-file wins over the env
        secret_file=args.secret_file or env.secret_file,
        lease_s=args.lease_s,
        max_deliveries=args.max_deliveries,
        grace_s=args.grace_s,
        redis_ca_cert=tls.ca_cert,
        redis_cert=tls.cert,
        redis_key=tls.key,
        threads=env.threads if args.threads is None else args.threads,
        max_async=env.max_async if args.max_async is None else args.max_async,
    )


def _serve_metrics(args: argparse.Namespace, env: Settings, queue: str) -> NodeMetrics:
    url = env.redis_url or ""
    metrics = NodeMetrics(open_client(url, env.redis_tls), queue)
    try:
        port = serve_metrics(metrics, args.metrics_addr, args.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {args.metrics_port}: cannot listen on {args.metrics_addr}: "
            f"{exc.strerror or exc}"
        ) from exc
    logger.info("metrics served at http://%s:%d/metrics", args.metrics_addr, port)
    return metrics


def wait_for_redis(url: str, tls: RedisTLS, wait_s: float) -> None:
    """Connect to Redis, retrying with back-off for up to ``wait_s`` while it is unreachable.

    A node started with (or before) its Redis server waits for it instead of exiting (#14);
    Redis refusing the credentials or certificates is not retried.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.1
    said = False
    while True:
        try:
            connect(url, tls)
            return
        except RedisAccessError:
            raise
        except BackendUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if not said:
                logger.warning(
                    "Redis at %s does not answer yet (%s); waiting up to %.0f s (--wait-redis-s)",
                    redact_url(url),
                    exc.message,
                    wait_s,
                )
                said = True
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def supervisor_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """Run one node until SIGTERM/SIGINT; returns the exit code."""
    settings = _node_settings(args, env)
    url = settings.redis_url or ""
    secret = load_secret(settings.secret, settings.secret_file)
    # Exit 4 when Redis is still not there after --wait-redis-s, 2 at once if it refuses us.
    wait_for_redis(url, settings.redis_tls, getattr(args, "wait_redis_s", 0.0))
    metrics = None
    if args.metrics_port is not None:
        metrics = _serve_metrics(args, settings, settings.queue)
    node = NodeSettings(
        url=url,
        queue=settings.queue,
        tls=settings.redis_tls,
        processes=settings.processes or 1,
        node_id=settings.worker_id,
        lease_ms=int(settings.lease_s * 1000),
        max_deliveries=settings.max_deliveries,
        grace_s=settings.grace_s,
        tracing=trace_setup_of(args, env),
        threads=settings.threads,
        max_async=settings.max_async,
    )
    return run_node(node, secret, metrics)
