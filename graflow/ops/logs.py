"""Log lines of the ``graflow`` command: one line per event, text or JSON, never a secret.

Text:  2026-11-27T19:55:59.418Z WARNING graflow.core.engine [run 9f3c...]: message
JSON:  {"ts": "...", "level": "WARNING", "logger": "...", "message": "...", "pid": 1,
        "run_id": "9f3c...", "task_id": "load"}   (run_id/task_id when they apply)

The run id comes from the run being watched (``RunTag``) unless a record carries its own
(``extra={"run_id": ...}``), and likewise ``task_id``. Every formatted line, traceback
included, goes through a ``Redactor`` that replaces the Redis password and the signing
secret with ``***``. Forked worker processes inherit these handlers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TextIO

from graflow.config import url_password_forms
from graflow.core.scope import current_task_context

__all__ = ["LogHandler", "Redactor", "RunTag", "configure_logging", "secrets_in"]

_MIN_SECRET_CHARS = 4  # shorter strings would blank out ordinary words


class Redactor:
    """Replaces each known secret string in a text with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = {s for s in secrets if len(s) >= _MIN_SECRET_CHARS}
        self.secrets = sorted(found, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        """Redact ``secrets`` too."""
        self.secrets = Redactor([*self.secrets, *secrets]).secrets

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def secrets_in(redis_url: str | None, secret: str | None) -> list[str]:
    """The strings to keep out of logs: the URL's password (as written and decoded), ``secret``."""
    found = [secret] if secret else []
    return found + url_password_forms(redis_url)


class RunTag:
    """The run the command is watching, for log lines that do not name one."""

    def __init__(self) -> None:
        self.run_id: str | None = None


def _timestamp(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


class _Formatter(logging.Formatter):
    def __init__(self, redact: Redactor, tag: RunTag) -> None:
        super().__init__()
        self.redact = redact
        self.tag = tag

    def ids(self, record: logging.LogRecord) -> tuple[str | None, str | None]:
        run_id = getattr(record, "run_id", None)
        task_id = getattr(record, "task_id", None)
        # A line a task logs itself names no ids: take them from the task running in the
        # thread that logs (in-process, in a forked pool worker and on a Redis node alike).
        running = current_task_context.get()
        if running is not None:
            task_id = task_id or getattr(running, "task_id", None)
            if run_id is None:
                with contextlib.suppress(AttributeError):
                    run_id = running.session_id
        return run_id or self.tag.run_id, task_id


def _names_task(message: str, task_id: str) -> bool:
    """True if ``message`` already says which task it is about ("task load", "task 'load'")."""
    return f"task {task_id}" in message or f"task {task_id!r}" in message


class TextFormatter(_Formatter):
    """``<UTC time> <LEVEL> <logger> [run <id> task <id>]: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        run_id, task_id = self.ids(record)
        tags = []
        if run_id and run_id not in message:
            tags.append(f"run {run_id}")
        if task_id and not _names_task(message, task_id):
            tags.append(f"task {task_id}")
        where = f" [{' '.join(tags)}]" if tags else ""
        line = f"{_timestamp(record.created)} {record.levelname} {record.name}{where}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


class JsonFormatter(_Formatter):
    """One JSON object per line; a traceback goes in ``exc``, escaped onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        run_id, task_id = self.ids(record)
        data: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if run_id:
            data["run_id"] = run_id
        if task_id:
            data["task_id"] = task_id
        for name in ("hint", "error_type", "status", "traceback"):
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(data, default=str))


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg] # generic only in typeshed
    """A stderr handler that lets a live progress line step aside for each log line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.guard: Callable[[], AbstractContextManager[Any]] = nullcontext

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard():
            super().emit(record)


def configure_logging(
    *, level: int, json_lines: bool, redact: Redactor, tag: RunTag, stream: TextIO | None = None
) -> LogHandler:
    """Send every log record to stderr as text or JSON lines; returns the handler."""
    handler = LogHandler(stream or sys.stderr)
    formatter = JsonFormatter if json_lines else TextFormatter
    handler.setFormatter(formatter(redact, tag))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
