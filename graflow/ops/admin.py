"""``graflow status`` and ``graflow dlq``: look at a Redis deployment, and mend its queues."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from graflow.config import Settings, signing_secret
from graflow.exceptions import ConfigError
from graflow.ops import EXIT_FAILED, EXIT_OK
from graflow.ops.console import Console
from graflow.ops.run import redis_tls_of, redis_url_of
from graflow.ops.view import (
    dead_letter_json,
    dead_letter_text,
    dead_letters_text,
    status_json,
    status_text,
)
from graflow.redis import dlq, keys
from graflow.redis.lease import cancel_run
from graflow.redis.signing import Signer, load_secret
from graflow.redis.status import open_client, read_status, unavailable_on_error

__all__ = ["cancel_command", "dlq_command", "status_command"]


def _client(args: argparse.Namespace, env: Settings) -> Any:
    url = redis_url_of(args.redis, env)
    if not url:
        raise ConfigError("--redis URL is required (or GRAFLOW_REDIS_URL / REDIS_HOST)")
    return open_client(url, redis_tls_of(args, env))


def _queue(name: str) -> str:
    try:
        keys.queue_stream(name)
    except ConfigError as exc:
        raise ConfigError(f"--queue {name!r}: {exc}") from None
    return name


def status_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """Print queues, tasks in flight, dead letters, live nodes and throughput."""
    queue = _queue(args.queue) if args.queue else None
    status = read_status(_client(args, env), queue)
    console.say(status_json(status) if args.json else status_text(status))
    return EXIT_OK


def cancel_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """Stop a running Redis run: its producer fails with RunCanceled, nodes skip its items."""
    try:
        keys.run_prefix(args.run_id)
    except ConfigError as exc:
        raise ConfigError(f"RUN_ID {args.run_id!r}: {exc}") from None
    client = _client(args, env)
    by = f"canceled with 'graflow cancel' at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    with unavailable_on_error(f"cannot cancel run {args.run_id}"):
        running = cancel_run(client, args.run_id, by)
    if args.json:
        console.say(json.dumps({"run_id": args.run_id, "was_running": running}))
    elif running:
        console.say(f"run {args.run_id} canceled: its producer stops within seconds")
    else:
        console.say(f"run {args.run_id} has no live producer; its queued items are skipped")
    return EXIT_OK


def dlq_command(args: argparse.Namespace, env: Settings, console: Console) -> int:
    """List, show, requeue or purge the dead letters of a queue."""
    queue = _queue(args.queue or env.queue)
    client = _client(args, env)
    action = {"list": _list, "show": _show, "requeue": _requeue, "purge": _purge}[args.action]
    with unavailable_on_error(f"cannot {args.action} the dead letters of queue {queue!r}"):
        return action(client, queue, args, env, console)


def _list(client: Any, queue: str, args: argparse.Namespace, env: Settings, out: Console) -> int:
    total = dlq.count_dead(client, queue)
    letters = dlq.list_dead(client, queue, args.count)
    if args.json:
        entries = [dead_letter_json(d) for d in letters]
        out.say(json.dumps({"queue": queue, "total": total, "entries": entries}))
    else:
        out.say(dead_letters_text(queue, total, letters))
    return EXIT_OK


def _show(client: Any, queue: str, args: argparse.Namespace, env: Settings, out: Console) -> int:
    entry_id = dlq.check_entry_id(args.id)
    try:
        letter = dlq.read_dead(client, queue, entry_id)
    except KeyError:
        out.fail(f"no dead letter {entry_id} in queue {queue!r}", hint="see: graflow dlq list")
        return EXIT_FAILED
    items: Any = None
    if letter.blob is not None:
        try:
            signer = Signer(load_secret(*signing_secret(None, args.secret_file, env)))
            items = dlq.describe_blob(letter.blob, signer)
        except ConfigError as exc:
            items = f"not readable: {exc}"
    if args.json:
        out.say(json.dumps(dead_letter_json(letter, items), default=str))
    else:
        out.say(dead_letter_text(letter, items))
    return EXIT_OK


def _requeue(client: Any, queue: str, args: argparse.Namespace, env: Settings, out: Console) -> int:
    if args.all == bool(args.ids):
        raise ConfigError("dlq requeue: give entry IDs or --all (not both)")
    if args.all:
        outcome = dlq.requeue_all(client, queue)
    else:
        outcome = dlq.requeue(client, queue, [dlq.check_entry_id(i) for i in args.ids])
    moved = [i for i, what in outcome.items() if what == "requeued"]
    stuck = {i: what for i, what in outcome.items() if what != "requeued"}
    if args.json:
        out.say(json.dumps({"queue": queue, "requeued": moved, "not_requeued": stuck}))
    else:
        out.say(f"requeued {len(moved)} entr{'y' if len(moved) == 1 else 'ies'} to {queue!r}")
    for entry_id, what in stuck.items():
        reason = "no such dead letter" if what == "missing" else "it has no run id or payload"
        out.fail(f"{entry_id} not requeued: {reason}")
    return EXIT_FAILED if stuck else EXIT_OK


def _purge(client: Any, queue: str, args: argparse.Namespace, env: Settings, out: Console) -> int:
    if not args.yes:
        count = dlq.count_dead(client, queue)
        raise ConfigError(
            f"dlq purge: deletes the {count} dead letter(s) of queue {queue!r} for good; "
            "add --yes to confirm"
        )
    removed = dlq.purge(client, queue)
    if args.json:
        out.say(json.dumps({"queue": queue, "purged": removed}))
    else:
        out.say(f"purged {removed} dead letter(s) of queue {queue!r}")
    return EXIT_OK
