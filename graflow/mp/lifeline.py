"""A worker process dies with the process that started it, and cleans up after itself.

    supervisor (driver) ──fork/spawn──▶ worker
          │ SIGKILLed                     │ kernel: PR_SET_PDEATHSIG ──▶ SIGTERM to the worker
          ▼                               ▼ (elsewhere: a thread sees the parent pid change)
        gone                     sweep own /dev/shm segments and the dead parent's, exit

A worker waiting for its next message already stops on pipe EOF; one running a long task
does not read its pipe, so without this it would run on as an orphan and leave its shared
memory segments behind until the next graflow run (#14). The signal handler sweeps only when
the parent really is gone: a SIGTERM sent by anyone else keeps its default meaning.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from types import FrameType

from graflow.mp import shm

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCH_INTERVAL_S = 1.0
_EXIT_PARENT_GONE = 1


def _sweep_and_exit() -> None:
    """Unlink this worker's segments, and those of dead processes (its parent), then exit."""
    with contextlib.suppress(OSError):
        shm.sweep_orphans(os.getpid())
        shm.sweep_orphans()
    os._exit(_EXIT_PARENT_GONE)


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` when the parent exits; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """Thread body where there is no parent-death signal: poll the parent pid."""
    stop = threading.Event()
    while not stop.wait(_WATCH_INTERVAL_S):
        if os.getppid() != parent_pid:
            _sweep_and_exit()


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit (after sweeping its shared memory) once ``parent_pid`` is gone.

    Call it first thing in the worker process; ``parent_pid`` is the pid of the process that
    started it, read there (a worker that checks ``os.getppid()`` only now could miss a
    parent that died in between).
    """

    def on_term(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != parent_pid:
            _sweep_and_exit()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # someone else's SIGTERM: die as usual
        os.kill(os.getpid(), signal.SIGTERM)

    if _set_parent_death_signal(signal.SIGTERM):
        signal.signal(signal.SIGTERM, on_term)
    else:
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="graflow-lifeline", daemon=True
        ).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was asked for
        _sweep_and_exit()
