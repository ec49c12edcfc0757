"""Values that cannot cross a process boundary, for the tests of every backend.

Module-level, so that they pickle by reference: a worker (forked, spawned, or a Redis node
started from the repository) imports this module to rebuild them.
"""

from __future__ import annotations

import threading
from typing import Any


class LockedError(Exception):
    """An exception that will not pickle: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgError(Exception):
    """An exception that pickles but fails to unpickle (args do not match __init__)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def raise_on_load() -> None:
    raise RuntimeError("this value cannot be rebuilt")


class Unloadable:
    """A value that pickles, but whose unpickling raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (raise_on_load, ())
