"""Large results kept in shared memory by the supervisor, and forwarded from there.

A task that returns a large ``bytes`` or ``bytearray`` (``FORWARD_MIN_BYTES`` or more) writes
it to a segment of its own. The supervisor adopts the segment and stores a ``SharedValue``
in the run's channel at once, while a thread copies the bytes out (a ``read`` call, off the
GIL). A task that takes the value as an argument receives the segment's name, not the
bytes, and reads it itself: the supervisor's copy is never on the way::

    worker A: result -> segment ──name──▶ supervisor: adopt, read in the background
                                              │ B's item carries the name
    worker B: read_shared(name) ◀─────────────┘

The segments of a run are removed when the run ends, after every value was read.
"""

from __future__ import annotations

import threading
from typing import Any

from graflow.channels.base import Deferred
from graflow.mp import shm

__all__ = ["FORWARD_MIN_BYTES", "SharedValue"]

FORWARD_MIN_BYTES = 1024 * 1024


class SharedValue(Deferred):
    """A result in an adopted segment, read out by a thread of its own."""

    __slots__ = ("_error", "_reader", "_value", "shared")

    def __init__(self, shared: shm.Shared) -> None:
        self.shared = shared
        self._value: Any = None
        self._error: BaseException | None = None
        self._reader = threading.Thread(target=self._read, name="graflow-shared-read", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        ref = self.shared.ref
        try:
            self._value = shm.read_shared(self.shared.kind, ref.name, ref.size_bytes)
        except BaseException as exc:  # noqa: BLE001 - raised to whoever resolves the value
            self._error = exc

    def resolve(self) -> Any:
        self._reader.join()
        if self._error is not None:
            raise self._error
        return self._value

    def release(self) -> None:
        """Read the value if not done yet, then remove the segment."""
        self._reader.join()
        shm.release([self.shared.ref])

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels to a worker of the same pool as the segment's name (see the module doc).
        ref = self.shared.ref
        return (shm.read_shared, (self.shared.kind, ref.name, ref.size_bytes))
