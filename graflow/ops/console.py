"""Where a command's words go: results to stdout, messages to stderr, no secret in either."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TextIO

from graflow.ops.logs import LogHandler, Redactor, RunTag

__all__ = ["Console"]

logger = logging.getLogger("graflow.cli")


class Console:
    """The output side of one ``graflow`` command.

    ``say`` writes a result to stdout; ``fail`` reports an error on stderr, as plain lines or,
    with ``--log-json``, as one JSON log record. Both redact secrets.
    """

    def __init__(
        self,
        redact: Redactor,
        tag: RunTag,
        *,
        log_json: bool = False,
        verbose: bool = False,
        log_handler: LogHandler | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.redact = redact
        self.tag = tag
        self.log_handler = log_handler
        self.log_json = log_json
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @property
    def guard(self) -> Callable[[], AbstractContextManager[Any]] | None:
        """What each log line is written inside of (a live progress line steps aside)."""
        return self.log_handler.guard if self.log_handler is not None else None

    @guard.setter
    def guard(self, guard: Callable[[], AbstractContextManager[Any]] | None) -> None:
        if self.log_handler is not None:
            self.log_handler.guard = guard or nullcontext

    def say(self, text: str) -> None:
        """Write a result line (or lines) to stdout."""
        print(self.redact(text), file=self.stdout, flush=True)

    def fail(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: str | None = None,
        **fields: Any,
    ) -> None:
        """Report an error: ``graflow: <message>``, then ``hint: <hint>``, then ``details``."""
        if self.log_json:
            extra = {k: v for k, v in fields.items() if v is not None}
            if hint:
                extra["hint"] = hint
            if details:
                extra["traceback"] = details
            logger.error("%s", message, extra=extra)
            return
        lines = [f"graflow: {message}"]
        if hint:
            lines.append(f"hint: {hint}")
        if details:
            lines.append(details)
        print(self.redact("\n".join(lines)), file=self.stderr, flush=True)
