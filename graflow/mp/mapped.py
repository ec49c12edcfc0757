"""``bytes`` objects that live in a copy-on-write mapping of a shared-memory segment.

A CPython ``bytes`` object is a fixed header (reference count, type, length, hash) followed by
its data and a NUL. A segment written by ``shm.share`` has that layout already: a blank slot
of ``HEADER_BYTES``, the data, a NUL. A reader maps the segment privately, writes a header into
the slot (the kernel copies that one page) and has a real ``bytes`` object whose data is the
segment's page cache: no copy, whatever the size::

    segment:  [ slot | data ............................ | \\0 ]
    mapping:  [ hdr  | data (shared pages, never written) | \\0 ]
                 ^ the object

Lifetime. The object was not made by Python's allocator, so it must never be handed back to
it. This module keeps one reference of its own on every such object (a count in the header,
never released), so its count never falls to zero and it is never freed. ``collect`` unmaps
the objects whose only remaining reference is that one: nothing else can reach them any more.
It runs whenever a new object is mapped; the worker runs it after every message and the
supervisor after every run and before it forks a worker.

A forked child inherits the mappings with everything else; those its copy of the parent's
objects still refers to stay mapped in the child (sharing the parent's pages) until the child
drops them or exits.

The layout is checked against a live ``bytes`` object once per process; where it differs
(another interpreter or version, a debug build) or ``mmap`` is not reachable, ``available``
is False and readers copy instead.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import threading
from typing import Any

__all__ = ["HEADER_BYTES", "available", "collect", "map_bytes", "mapped_count"]

HEADER_BYTES = 32  # ob_refcnt, ob_type, ob_size, ob_shash
_HEADER = struct.Struct("=qQqq")

_lock = threading.Lock()
_live: dict[int, int] = {}  # address of a mapped object -> length of its mapping
_libc: Any = None  # the C library's mmap and munmap, or False where they are not usable


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def available() -> bool:
    """Whether ``map_bytes`` can make bytes objects in this process."""
    global _libc
    if _libc is None:
        _libc = _load() if _layout_matches() else False
    return _libc is not False


def _layout_matches() -> bool:
    if sys.implementation.name != "cpython" or not sys.platform.startswith("linux"):
        return False
    if bytes.__basicsize__ != HEADER_BYTES + 1 or hasattr(sys, "gettotalrefcount"):
        return False
    probe = b"graflow"
    raw = ctypes.string_at(id(probe), HEADER_BYTES + len(probe) + 1)
    _refcnt, kind, size, _hash = _HEADER.unpack_from(raw)
    return kind == id(bytes) and size == len(probe) and raw[HEADER_BYTES:] == probe + b"\0"


def _load() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (AttributeError, OSError):
        return False
    return libc


def map_bytes(fd: int, size: int) -> bytes:
    """The ``size`` data bytes of the segment open at ``fd`` as a bytes object, not copied.

    The caller has checked that the file holds ``HEADER_BYTES + size + 1`` bytes and that
    ``available()`` is true. The segment's data must never change afterwards.

    Raises:
        OSError: the kernel refused the mapping.
    """
    length = HEADER_BYTES + size + 1
    collect()
    addr = _libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap of a shared value: {os.strerror(errno)}")
    # Reference count 1: this module's own reference, held until ``collect`` unmaps it.
    ctypes.memmove(addr, _HEADER.pack(1, id(bytes), size, -1), HEADER_BYTES)
    # The caller's reference exists before the object is registered: a ``collect`` in
    # another thread never sees it with this module's reference alone.
    value: bytes = ctypes.cast(addr, ctypes.py_object).value
    with _lock:
        _live[addr] = length
    return value


def collect() -> int:
    """Unmap every mapped bytes object nobody refers to any more; return how many went."""
    gone = 0
    with _lock:
        for addr, length in list(_live.items()):
            if ctypes.c_ssize_t.from_address(addr).value == 1:
                del _live[addr]
                _libc.munmap(addr, length)
                gone += 1
    return gone


def mapped_count() -> int:
    """How many mapped bytes objects this process holds (referenced or not yet collected)."""
    with _lock:
        return len(_live)
