"""Framing of supervisor <-> worker messages over multiprocessing pipes.

A message is a tuple whose first element is one of the ``Msg`` codes, pickled by
``graflow.core.codec`` (the C pickler; functions and classes that cannot be imported by name,
such as closures, lambdas and tasks defined in ``__main__``, travel by value). A message
whose pickle would exceed the shared-memory threshold is re-encoded with its large buffers in
shared-memory segments (graflow.mp.shm), so only segment names travel through the pipe.

Frame: one tag byte, then the payload.
    b"P" + pickle                         small message
    b"S" + pickle((segment refs, pickle)) large message, buffers out of band
"""

from __future__ import annotations

import pickle
from enum import IntEnum
from multiprocessing.connection import Connection
from typing import Any

from graflow.core import codec
from graflow.mp import shm

__all__ = ["Msg", "Sealed", "dumps", "loads", "recv", "seal", "segments", "send"]

_PLAIN = b"P"
_SHARED = b"S"


class Msg(IntEnum):
    """Message codes (first element of every message tuple)."""

    RUN = 1  # (RUN, run_id, graph_blob, handlers_blob)
    NODES = 2  # (NODES, run_id, [executable, ...])
    ITEMS = 3  # (ITEMS, run_id, [codec.encode_item(item, after), ...])
    END_RUN = 4  # (END_RUN, run_id)
    STOP = 5  # (STOP,)
    CHAN_REPLY = 6  # (CHAN_REPLY, request number, ok, value)
    DONE = 10  # (DONE, [codec.encode_outcome(outcome), ...])
    CHAN = 11  # (CHAN, run_id, op, args, request number, caller in the worker)
    RETIRING = 12  # (RETIRING, reason)


_BUFFERS = (bytes, bytearray, memoryview)
_SCALARS = (int, float, str, bool, type(None))
_SEQUENCES = (tuple, list)


def _has_large_buffer(obj: Any, threshold_bytes: int, budget: list[int], depth: int) -> bool:
    """True if ``obj`` visibly holds a bytes-like value or array of ``threshold_bytes``+."""
    if isinstance(obj, _SCALARS):
        return False
    if isinstance(obj, _BUFFERS):
        return len(obj) >= threshold_bytes
    if depth == 0:
        return False
    if isinstance(obj, _SEQUENCES):
        items: Any = obj
    elif isinstance(obj, dict):
        items = obj.values()
    else:
        nbytes = getattr(obj, "nbytes", None) if type(obj).__module__ == "numpy" else None
        return isinstance(nbytes, int) and nbytes >= threshold_bytes
    for item in items:
        if isinstance(item, _SCALARS):
            continue
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if _has_large_buffer(item, threshold_bytes, budget, depth - 1):
            return True
    return False


_PLAIN_VALUES = (type(None), bool, int, float, str, bytes, bytearray)


class Sealed:
    """A value pickled on its own inside a message, so that if it cannot be rebuilt on the
    other side only its task fails, not the whole batch it travels in."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sealed, (self.blob,))

    def open(self) -> Any:
        """The value (raises whatever unpickling it raises)."""
        return pickle.loads(self.blob)


def seal(value: Any) -> Any:
    """``value`` itself when it always unpickles (plain data, numpy), else a Sealed copy."""
    kind = type(value)
    if kind in _PLAIN_VALUES or kind.__module__ == "numpy" or kind is shm.Shared:
        return value
    if kind in (list, tuple, dict) and len(value) == 0:
        return value
    return Sealed(codec.dumps(value))


def dumps(obj: Any, threshold_bytes: int) -> bytes:
    """Encode a message; raises the pickling error if it cannot be pickled at all."""
    # A visible large buffer goes straight to shared memory: pickling it in band first
    # would copy it once more for nothing.
    data = b""
    if not _has_large_buffer(obj, threshold_bytes, [32], 4):
        data = codec.dumps(obj)
        if len(data) < threshold_bytes:
            return _PLAIN + data
    payload, refs = shm.encode(obj, threshold_bytes=threshold_bytes)
    if not refs:
        return _PLAIN + (data or payload)
    try:
        return _SHARED + pickle.dumps((refs, payload), protocol=5)
    except BaseException:
        shm.release(refs)
        raise


def loads(frame: bytes) -> Any:
    """Decode a message made by ``dumps`` (unlinks its shared-memory segments)."""
    tag = frame[:1]
    view = memoryview(frame)[1:]
    if tag == _PLAIN:
        return pickle.loads(view)
    if tag == _SHARED:
        refs, payload = pickle.loads(view)
        return shm.decode(payload, refs)
    raise ValueError(f"malformed frame (tag {tag!r})")


def segments(frame: bytes) -> list[shm.SegmentRef]:
    """The shared-memory segments a frame made by ``dumps`` names (none for a small one)."""
    if frame[:1] != _SHARED:
        return []
    refs, _payload = pickle.loads(memoryview(frame)[1:])
    return list(refs)


def send(conn: Connection, obj: Any, threshold_bytes: int) -> None:
    """Encode and send one message; if the send fails, its segments are removed."""
    frame = dumps(obj, threshold_bytes)
    try:
        conn.send_bytes(frame)
    except BaseException:
        shm.release(segments(frame))
        raise


def recv(conn: Connection) -> Any:
    """Receive and decode one message (EOFError when the other side is gone)."""
    return loads(conn.recv_bytes())
