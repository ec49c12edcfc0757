"""The ``Channel`` contract: a run's shared key-value store with TTLs, lists and counters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["Channel", "Deferred"]

_MISSING: Any = object()


class Deferred:
    """A stored value still to be made: a channel holding one returns ``resolve()``.

    The process pool stores large results this way while their bytes are still being read
    out of shared memory (graflow.mp.shared_value): the scheduler can forward them to the
    next task without waiting. ``resolve`` is idempotent and thread-safe.
    """

    __slots__ = ()

    def resolve(self) -> Any:
        """The value itself (blocks until it is ready)."""
        raise NotImplementedError


class Channel(ABC):
    """A named key-value store shared by the tasks of one run.

    Every method is safe to call from several threads at once; ``append``, ``prepend`` and
    ``atomic_add`` are atomic. ``ttl`` is in seconds and must be positive; a key whose TTL
    has passed behaves as if it were never set. ``lock`` is advisory: only other ``lock``
    callers wait for it, plain reads and writes do not.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and TTL it had."""

    @abstractmethod
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when it is missing or expired."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True if ``key`` holds a live value."""

    @abstractmethod
    def keys(self) -> list[str]:
        """Every live key."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every key."""

    @abstractmethod
    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the end of the list under ``key``; return the new length.

        A missing key starts an empty list; a key holding a non-list raises ``TypeError``.
        A ``ttl`` resets the key's expiry; without one the key keeps the expiry it had.
        """

    @abstractmethod
    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the front of the list under ``key``; return the new length."""

    @abstractmethod
    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        """Add ``amount`` to the number under ``key`` (missing: 0); return the new value.

        Raises ``TypeError`` if the key or ``amount`` is not a number. The key keeps its TTL.
        """

    @contextmanager
    def lock(self, key: str, timeout: float = 10.0) -> Iterator[None]:
        """Hold the advisory lock named ``key``; this base version does not lock at all."""
        yield

    def snapshot(self) -> dict[str, Any]:
        """Every live key and its value."""
        contents: dict[str, Any] = {}
        for key in self.keys():
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                contents[key] = value
        return contents

    def update(self, mapping: Mapping[str, Any]) -> None:
        """``set`` every item of ``mapping``, without TTL."""
        for key, value in mapping.items():
            self.set(key, value)
