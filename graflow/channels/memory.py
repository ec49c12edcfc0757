"""``MemoryChannel``: a thread-safe in-process channel holding plain Python objects.

Readers take no lock: a value and its expiry live together in one dict entry, so a single
dict lookup (atomic in CPython) sees both. Every write takes one short mutex, so the
read-modify-write operations (``append``, ``atomic_add``) cannot interleave with a plain
``set`` or ``delete`` of the same key and lose it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from numbers import Real
from typing import Any

from graflow.channels.base import Channel, Deferred

__all__ = ["MemoryChannel"]

_MISSING: Any = object()


class _Expiring:
    """A value stored with a TTL, and the ``time.monotonic()`` instant it expires."""

    __slots__ = ("deadline", "value")

    def __init__(self, value: Any, deadline: float) -> None:
        self.value = value
        self.deadline = deadline


def _is_number(value: Any) -> bool:
    """True for real numbers other than bools."""
    # The exact-type test first: isinstance against the numbers ABCs is several times slower.
    return type(value) in (int, float) or (isinstance(value, Real) and not isinstance(value, bool))


def _deadline(ttl: float) -> float:
    """The monotonic expiry instant for ``ttl`` seconds from now; ValueError if ``ttl`` is bad."""
    if not (_is_number(ttl) and 0 < ttl < math.inf):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return time.monotonic() + float(ttl)


class MemoryChannel(Channel):
    """A channel kept in a dict of this process, shared by reference (values are not copied).

    Extra keyword arguments (backend options meant for other channels) are accepted and ignored.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name)
        self._data: dict[str, Any] = {}
        self._mutex = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value and TTL it had."""
        entry = value if ttl is None else _Expiring(value, _deadline(ttl))
        # Plain acquire/release: on this hot path it costs half of a ``with`` block.
        self._mutex.acquire()
        try:
            self._data[key] = entry
        finally:
            self._mutex.release()

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when it is missing or expired."""
        value = self.peek(key, default)
        if isinstance(value, Deferred):
            return value.resolve()
        return value

    def peek(self, key: str, default: Any = None) -> Any:
        """Like ``get``, but a Deferred value comes back as it is, unresolved."""
        value = self._data.get(key, default)
        if value.__class__ is not _Expiring:
            return value
        if value.deadline > time.monotonic():
            return value.value
        self._drop(key, value)
        return default

    def exists(self, key: str) -> bool:
        """True if ``key`` holds a live value."""
        value = self._data.get(key, _MISSING)
        if value.__class__ is not _Expiring:
            return value is not _MISSING
        if value.deadline > time.monotonic():
            return True
        self._drop(key, value)
        return False

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it held a live value."""
        with self._mutex:
            value = self._data.pop(key, _MISSING)
        if value.__class__ is _Expiring:
            return bool(value.deadline > time.monotonic())
        return value is not _MISSING

    def keys(self) -> list[str]:
        """Every live key, in insertion order."""
        with self._mutex:
            self._purge_expired()
            return list(self._data)

    def clear(self) -> None:
        """Remove every key (locks held through ``lock`` stay held)."""
        with self._mutex:
            self._data.clear()

    def snapshot(self) -> dict[str, Any]:
        """Every live key and its value, taken at one instant."""
        with self._mutex:
            self._purge_expired()
            values = {
                key: value.value if value.__class__ is _Expiring else value
                for key, value in self._data.items()
            }
        for key, value in values.items():
            if isinstance(value, Deferred):
                values[key] = value.resolve()
        return values

    def update(self, mapping: Mapping[str, Any]) -> None:
        """``set`` every item of ``mapping``, without TTL, in one step."""
        with self._mutex:
            self._data.update(mapping)

    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the end of the list under ``key``; return the new length."""
        return self._push(key, value, ttl, at_front=False)

    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the front of the list under ``key``; return the new length."""
        return self._push(key, value, ttl, at_front=True)

    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        """Add ``amount`` to the number under ``key`` (missing: 0); return the new value."""
        if not _is_number(amount):
            raise TypeError(f"amount must be a number, got {type(amount).__name__}")
        with self._mutex:
            current, deadline = self._live_entry(key)
            if current is _MISSING:
                current = 0
            elif not _is_number(current):
                raise TypeError(
                    f"Key '{key}' holds {type(current).__name__}, expected int or float"
                )
            result: int | float = current + amount
            self._data[key] = result if deadline is None else _Expiring(result, deadline)
            return result

    @contextmanager
    def lock(self, key: str, timeout: float = 10.0) -> Iterator[None]:
        """Hold the re-entrant lock named ``key``; ``TimeoutError`` if not free within timeout."""
        if not timeout >= 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        key_lock = self._locks.get(key)
        if key_lock is None:
            key_lock = self._locks.setdefault(key, threading.RLock())
        if not key_lock.acquire(timeout=timeout):
            raise TimeoutError(
                f"Could not acquire lock '{key}' of channel '{self.name}' within {timeout} s"
            )
        try:
            yield
        finally:
            key_lock.release()

    def __getstate__(self) -> dict[str, Any]:
        now = time.monotonic()
        entries: dict[str, tuple[Any, float | None]] = {}
        with self._mutex:
            for key, value in self._data.items():
                if value.__class__ is not _Expiring:
                    entries[key] = (value, None)
                elif value.deadline > now:
                    # Monotonic clocks differ between hosts: carry the time left instead.
                    entries[key] = (value.value, value.deadline - now)
        for key, (value, remaining) in entries.items():
            if isinstance(value, Deferred):
                entries[key] = (value.resolve(), remaining)
        return {"name": self.name, "entries": entries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._data = {}
        self._mutex = threading.Lock()
        self._locks = {}
        now = time.monotonic()
        for key, (value, remaining) in state["entries"].items():
            self._data[key] = value if remaining is None else _Expiring(value, now + remaining)

    def _push(self, key: str, value: Any, ttl: float | None, *, at_front: bool) -> int:
        """Add ``value`` at one end of the list under ``key``, creating it when missing."""
        deadline = None if ttl is None else _deadline(ttl)
        with self._mutex:
            items, old_deadline = self._live_entry(key)
            if items is _MISSING:
                items = []
            elif not isinstance(items, list):
                raise TypeError(f"Value under key '{key}' is not a list: {type(items).__name__}")
            if at_front:
                items.insert(0, value)
            else:
                items.append(value)
            deadline = old_deadline if deadline is None else deadline
            self._data[key] = items if deadline is None else _Expiring(items, deadline)
            return len(items)

    def _live_entry(self, key: str) -> tuple[Any, float | None]:
        """The live value under ``key`` (or ``_MISSING``) and its deadline; hold the mutex."""
        value = self._data.get(key, _MISSING)
        if value.__class__ is not _Expiring:
            return (value.resolve() if isinstance(value, Deferred) else value), None
        if value.deadline > time.monotonic():
            inner = value.value
            return (inner.resolve() if isinstance(inner, Deferred) else inner), value.deadline
        del self._data[key]
        return _MISSING, None

    def _drop(self, key: str, entry: _Expiring) -> None:
        """Remove the expired ``entry`` unless a writer replaced it meanwhile."""
        with self._mutex:
            if self._data.get(key) is entry:
                del self._data[key]

    def _purge_expired(self) -> None:
        """Remove every expired entry; hold the mutex."""
        now = time.monotonic()
        expired = [
            key
            for key, value in self._data.items()
            if value.__class__ is _Expiring and value.deadline <= now
        ]
        for key in expired:
            del self._data[key]
