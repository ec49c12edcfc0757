"""``@task(timeout_s=...)`` for tasks run in-process (``processes=0``).

A worker process past a task's timeout is killed by its supervisor; in-process there is no
process to kill, so the deadline is kept this way (#18):

    main thread, POSIX   SIGALRM at the deadline raises TaskTimeoutError inside the task:
                         pure-Python code stops there (a call into C ends first)
    any other thread     the task runs in a helper thread joined with the timeout; past it
                         the attempt fails with TaskTimeoutError and the helper is left to
                         finish in the background (a thread cannot be stopped), with a warning

Either way the attempt ends as a failed completion at its deadline and retries follow the
task's policy, as on the process pool.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from graflow.core.spec import Completion, WorkItem
from graflow.exceptions import TaskTimeoutError

__all__ = ["run_with_deadline"]

logger = logging.getLogger(__name__)


def _timed_out(item: WorkItem, timeout_s: float, started: float) -> Completion:
    error = TaskTimeoutError(item.task_id, timeout_s)
    return Completion(
        item.seq,
        item.task_id,
        False,
        None,
        error,
        None,
        time.perf_counter() - started,
        f"TaskTimeoutError: task {item.task_id!r} timed out after {timeout_s:g} s (in-process)",
        True,
    )


def _by_alarm(item: WorkItem, timeout_s: float, run: Callable[[], Completion]) -> Completion:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeoutError(item.task_id, timeout_s)

    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return run()  # the task's own failure handling turns the alarm into its error
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except TaskTimeoutError:  # the alarm fired after the task returned, at its deadline
        return _timed_out(item, timeout_s, started)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _by_thread(item: WorkItem, timeout_s: float, run: Callable[[], Completion]) -> Completion:
    started = time.perf_counter()
    outcome: list[Completion] = []
    context = contextvars.copy_context()
    helper = threading.Thread(
        target=lambda: outcome.append(context.run(run)),
        name=f"graflow-timed-{item.task_id}",
        daemon=True,
    )
    helper.start()
    helper.join(timeout_s)
    if outcome:
        return outcome[0]
    logger.warning(
        "task %s ran past its timeout_s=%g in-process and keeps running in a background "
        "thread (only a worker process can be stopped: processes >= 1)",
        item.task_id,
        timeout_s,
    )
    return _timed_out(item, timeout_s, started)


def run_with_deadline(
    item: WorkItem, timeout_s: float | None, run: Callable[[], Completion]
) -> Completion:
    """``run()``'s completion, or a TaskTimeoutError completion once ``timeout_s`` passed."""
    if timeout_s is None:
        return run()
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and hasattr(signal, "setitimer"):
        return _by_alarm(item, timeout_s, run)
    return _by_thread(item, timeout_s, run)
