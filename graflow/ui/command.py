"""``graflow ui``: serve the dashboard (graflow.ui.app) with uvicorn until interrupted."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal

from graflow.config import Settings, redact_url
from graflow.exceptions import ConfigError
from graflow.history.location import reader_store
from graflow.ops import EXIT_OK
from graflow.ops.console import Console
from graflow.ops.run import redis_tls_of, redis_url_of
from graflow.redis.connect import connect

__all__ = ["is_loopback", "ui_command"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """``graflow ui``; returns the exit code when the server stops."""
    token = args.token or env.ui_token
    if not is_loopback(args.host) and not token:
        raise ConfigError(
            f"--host {args.host}: the dashboard answers other machines there, so it needs a "
            "token: --token SECRET or GRAFLOW_UI_TOKEN (or keep the default --host 127.0.0.1)"
        )
    try:
        import uvicorn  # noqa: PLC0415 - the optional graflow[ui] extra, only for this command

        from graflow.ui.app import create_app  # noqa: PLC0415 - imports starlette, as above
    except ImportError as exc:
        raise ConfigError(
            f"graflow ui needs the ui extra ({exc.name} is missing): pip install 'graflow[ui]'"
        ) from None
    redis_url = redis_url_of(args.redis, env)
    tls = redis_tls_of(args, env)
    store = reader_store(args.history, env, redis_url=redis_url, redis_tls=tls, create=True)
    client = connect(redis_url, tls) if redis_url else None
    where = redact_url(redis_url) if redis_url else store.location
    suffix = "/?token=..." if token else "/"

    def ready() -> None:
        logger.info(
            "graflow ui on http://%s:%d%s (runs from %s)", args.host, args.port, suffix, where
        )

    app = create_app(store, redis=client, token=token, on_ready=ready)
    # uvicorn stops on SIGTERM, then raises it again for the handler it found: that one lets
    # the command return (exit 0) instead of dying by the signal.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
