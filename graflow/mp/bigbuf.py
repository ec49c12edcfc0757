"""Large ``bytes`` and ``bytearray`` objects filled in one pass, on huge pages where possible.

Receiving a large value ends in one copy into a new object that owns its memory. For 100 MB
that copy is cheap (~10 ms); what costs is the kernel faulting in the destination 4 KiB at a
time: ~25,000 faults, each zeroing a page first. ``bytes(data)`` or ``os.read(fd, n)`` pay
both, about three times the copy alone.

Here the object is made uninitialised (``PyBytes_FromStringAndSize(NULL, n)``, the C API's way
of building a bytes object in place), its memory is marked for transparent huge pages
(``madvise(MADV_HUGEPAGE)``, which on a kernel whose THP mode is ``madvise`` is the only way
to get them), and it is filled by ``read`` or ``memmove`` without the GIL. The object is not
seen by anyone until it is full, so its immutability is never observably broken.

Where the C API or ``madvise`` is missing (another interpreter, another OS), the plain way is
used: same result, slower.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

__all__ = ["HUGE_MIN_BYTES", "filled_from_buffer", "filled_from_fd"]

# Below a few huge pages, marking them buys nothing.
HUGE_MIN_BYTES = 4 * 1024 * 1024
_HUGE = 2 * 1024 * 1024
_MADV_HUGEPAGE = 14  # Linux

_api: Any = None
_madvise: Any = None


def _setup() -> bool:
    global _api, _madvise
    if _api is not None:
        return _api is not False
    try:
        _api = {bytes: _c_pair("PyBytes"), bytearray: _c_pair("PyByteArray")}
    except (AttributeError, OSError):
        _api = False
        return False
    if sys.platform.startswith("linux"):
        try:
            madvise = ctypes.CDLL(None, use_errno=True).madvise
            madvise.restype = ctypes.c_int
            madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = madvise
        except (AttributeError, OSError):
            _madvise = None
    return True


def _c_pair(prefix: str) -> tuple[Any, Any]:
    """``<prefix>_FromStringAndSize`` and ``<prefix>_AsString`` of the C API, typed."""
    new = getattr(ctypes.pythonapi, f"{prefix}_FromStringAndSize")
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    ptr = getattr(ctypes.pythonapi, f"{prefix}_AsString")
    ptr.restype = ctypes.c_void_p
    ptr.argtypes = [ctypes.py_object]
    return new, ptr


def _fresh(kind: type, size: int) -> tuple[Any, int]:
    """An uninitialised ``kind`` of ``size`` bytes and the address of its first byte."""
    new, ptr = _api[kind]
    obj = new(None, size)
    addr = ptr(obj)
    if _madvise is not None and size >= HUGE_MIN_BYTES:
        # The 2 MiB-aligned interior; a refusal (no THP in this kernel) only costs speed.
        lo = (addr + _HUGE - 1) & ~(_HUGE - 1)
        hi = (addr + size) & ~(_HUGE - 1)
        if hi > lo:
            _madvise(lo, hi - lo, _MADV_HUGEPAGE)
    return obj, addr


def filled_from_fd(kind: type, fd: int, size: int) -> tuple[Any, int]:
    """A new ``kind`` (bytes or bytearray) read from ``fd``, and how many bytes were read.

    Fewer than ``size`` bytes read (a short file) is for the caller to treat as an error;
    the rest of the object is then undefined.
    """
    if size == 0 or not _setup():
        return _plain_from_fd(kind, fd, size)
    obj, addr = _fresh(kind, size)
    with memoryview((ctypes.c_char * size).from_address(addr)).cast("B") as view:
        return obj, _read_into(fd, view)


def filled_from_buffer(kind: type, source: memoryview) -> Any:
    """A new ``kind`` (bytes or bytearray) holding a copy of the writable ``source``."""
    size = source.nbytes
    if size < HUGE_MIN_BYTES or source.readonly or not _setup():
        return kind(source)
    obj, addr = _fresh(kind, size)
    ctypes.memmove(addr, ctypes.addressof(ctypes.c_char.from_buffer(source)), size)
    return obj


def _plain_from_fd(kind: type, fd: int, size: int) -> tuple[Any, int]:
    if kind is bytearray:
        out = bytearray(size)
        with memoryview(out) as view:
            return out, _read_into(fd, view)
    parts: list[bytes] = []
    done = 0
    while done < size:
        data = os.read(fd, size - done)
        if not data:
            break
        parts.append(data)
        done += len(data)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), done


def _read_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd`` (``readv`` runs without the GIL); bytes read."""
    done = 0
    size = view.nbytes
    while done < size:
        n = os.readv(fd, [view[done:]])
        if n == 0:
            break
        done += n
    return done
