"""SIGTERM and Ctrl-C during a run: drain first, stop at once on a second Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from graflow.exceptions import RunInterrupted

__all__ = ["drain_on_signals"]

logger = logging.getLogger(__name__)


@contextmanager
def drain_on_signals(
    backend: Any, grace_s: float, on_drain: Callable[[], None] | None = None
) -> Iterator[None]:
    """While a run is active on the main thread, SIGTERM/SIGINT set ``backend.draining``.

    The backend then stops dispatching, lets in-flight tasks finish within ``grace_s`` and
    raises RunInterrupted; a second SIGINT raises it at once. Elsewhere than on the main
    thread (where Python delivers signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if backend.draining is not None and signum == signal.SIGINT:
            raise RunInterrupted(name, drained=False)
        if backend.draining is None:
            # Drain first, log after: a 2nd SIGINT landing while this handler logs runs
            # the handler again, nested, and must find the run already draining.
            backend.draining = (name, time.monotonic() + grace_s)
            if on_drain is not None:
                on_drain()
            logger.warning("%s received: finishing in-flight tasks, then stopping", name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
