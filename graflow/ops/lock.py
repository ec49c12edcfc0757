"""Run locks: ``graflow run --lock NAME`` keeps two runs of the same job from overlapping.

Locally the lock is ``flock(LOCK_EX | LOCK_NB)`` (``msvcrt.locking`` on Windows) on
``<runtime dir>/graflow/<name>.lock`` (``$XDG_RUNTIME_DIR``, else a private directory under
the temp dir): the kernel releases it when the holder exits, however it exits, so a crashed
run never leaves a stale lock. Under ``--redis`` it is a lease in Redis
(``graflow.redis.lock``), which spans hosts.

Worker processes forked while the lock is held inherit its file descriptor; each closes
its copy at once (``os.register_at_fork``), so a worker that outlives its run does not keep
the next run out. (Closing a copy does not release the lock: that takes every copy.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from graflow.exceptions import ConfigError, LockHeld

__all__ = ["FileRunLock", "check_lock_name", "lock_dir"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_lock_name(name: str) -> str:
    """``name`` if it can name a lock (letters, digits, ``_.-``; at most 100); else ConfigError."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--lock {name!r}: use letters, digits, '_', '.' and '-' (at most 100, "
            "not starting with '.' or '-')"
        )
    return name


def lock_dir(runtime_dir: str | None) -> Path:
    """The per-user directory of lock files, created private (0700) if needed."""
    base = Path(runtime_dir) if runtime_dir else Path(tempfile.gettempdir())
    path = base / "graflow" if runtime_dir else base / f"graflow-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(f"lock directory {str(path)!r} is not a directory of this user")
    return path


if sys.platform == "win32":  # pragma: no cover - the tests run on Linux
    import msvcrt

    def _try_lock(fd: int) -> None:
        """Lock ``fd``'s first byte or raise BlockingIOError (held by another process)."""
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(str(exc)) from exc

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        """flock ``fd`` or raise BlockingIOError (held by another process)."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_at_start(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64)


class FileRunLock:
    """An exclusive, non-blocking flock on one file, held until ``release`` or exit."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = check_lock_name(name)
        self.path = directory / f"{name}.lock"
        self._fd: int | None = None
        if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
            os.register_at_fork(after_in_child=self._forget)

    def acquire(self) -> None:
        """Take the lock, or raise LockHeld naming the holder's pid."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            _try_lock(fd)
        except BlockingIOError:
            holder = _read_at_start(fd).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(self.name, f"pid {holder}, {self.path}") from None
        if sys.platform != "win32":  # Windows: the locked byte cannot be rewritten
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        logger.debug("lock %r taken (%s)", self.name, self.path)

    def release(self) -> None:
        """Let the lock go (the file stays: removing it would race with the next taker)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if sys.platform != "win32":
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            _unlock(fd)
            os.close(fd)

    def _forget(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> FileRunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
