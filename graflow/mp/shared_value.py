"""Large results kept in shared memory by the supervisor, and forwarded from there.

A task that returns a large ``bytes``, ``bytearray`` or contiguous numpy array
(``FORWARD_MIN_BYTES`` or more) writes it to a segment of its own. The supervisor adopts the
segment and stores a ``SharedValue`` in the run's channel at once. A task that takes the
value as an argument receives the segment's name, not the value, and reads it itself::

    worker A: result -> segment ──name──▶ supervisor: adopt (map when asked for)
                                              │ B's item carries the name
    worker B: read_shared(name) ◀─────────────┘

A ``bytes`` value is mapped where it is read (``graflow.mp.mapped``), a numpy array mapped
copy-on-write (writable, each reader's writes its own): no copy anywhere after A's write. A
``bytearray`` (which must own resizable memory) is copied: by the supervisor in a
thread started at once (a ``read`` call, off the GIL), and by each task that takes it.

The segments of a run are removed when the run ends; mappings made before outlive them.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from graflow.channels.base import Deferred
from graflow.mp import mapped, shm

__all__ = ["FORWARD_MIN_BYTES", "SharedValue"]

FORWARD_MIN_BYTES = 1024 * 1024


class SharedValue(Deferred):
    """A result in an adopted segment: mapped when first asked for, or read by a thread."""

    __slots__ = ("_error", "_lock", "_reader", "_resolved", "_value", "shared")

    def __init__(self, shared: shm.Shared) -> None:
        self.shared = shared
        self._value: Any = None
        self._error: BaseException | None = None
        self._resolved = False
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        if shared.kind == "bytearray" or (shared.kind == "bytes" and not mapped.available()):
            # A copy takes a while: start it now, so that it is done by the time it is asked for.
            self._reader = threading.Thread(
                target=self._read, name="graflow-shared-read", daemon=True
            )
            self._reader.start()

    def _read(self) -> None:
        ref = self.shared.ref
        try:
            shared = self.shared
            self._value = shm.read_shared(shared.kind, ref.name, ref.size_bytes, shared.layout)
        except BaseException as exc:  # noqa: BLE001 - raised to whoever resolves the value
            self._error = exc
        self._resolved = True

    def resolve(self) -> Any:
        if self._reader is not None:
            self._reader.join()
        else:
            with self._lock:
                if not self._resolved:
                    self._read()
        if self._error is not None:
            raise self._error
        return self._value

    def release(self) -> None:
        """Read or map the value if not done yet, then remove the segment.

        A mapping outlives the segment's name: the value stays readable after the run.
        """
        with contextlib.suppress(BaseException):
            self.resolve()  # an error stays recorded for whoever resolves it later
        shm.release([self.shared.ref])

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels to a worker of the same pool as the segment's name (see the module doc).
        ref = self.shared.ref
        return (shm.read_shared, (self.shared.kind, ref.name, ref.size_bytes, self.shared.layout))
