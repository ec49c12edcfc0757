"""Large buffers of a message travel through POSIX shared memory, not through the pipe.

``encode`` pickles a value (cloudpickle, protocol 5) and moves every buffer of at least
``threshold_bytes`` out of band: each is written once into a fresh segment, a tmpfs file
``/dev/shm/graflow_<creator pid>_<random hex>``. Only the pickle and the ``SegmentRef``s cross
the pipe. ``decode`` maps each segment, unlinks it at once (the mapping outlives the name) and
unpickles with the mappings as the out-of-band buffers::

    sender                          /dev/shm                          receiver
    encode --write()-------> graflow_<pid>_<hex> ---mmap, unlink---> decode
       `--- pickle + [SegmentRef] ----------- pipe ---------------------^

Copies: one on encode. None on decode for numpy arrays (the array's base is the mapping,
unmapped when the array dies) and for ``bytes``: their segments are written in the layout of
a bytes object, which the reader maps copy-on-write into a real ``bytes`` (``mapped``). One
for ``bytearray``, which must own memory it can resize.

Who removes a segment: the receiver, in ``decode``. The sender, via ``release``, when the
receiver died before decoding. The supervisor, via ``sweep_orphans``, for segments of a
process that died between creating and sending them.

Segments are files under /dev/shm (Linux); where there is none (macOS, Windows) ``AVAILABLE``
is False, nothing is shared and values travel in band.
"""

from __future__ import annotations

import importlib
import io
import logging
import mmap
import os
import pickle
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import cloudpickle
import psutil

from graflow.exceptions import BackendError, PoisonMessage
from graflow.mp import bigbuf, mapped

__all__ = [
    "AVAILABLE",
    "SHM_DIR",
    "SegmentRef",
    "Shared",
    "adopt",
    "decode",
    "encode",
    "is_shareable",
    "read_shared",
    "release",
    "share",
    "sweep_orphans",
]

logger = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
AVAILABLE = os.path.isdir(SHM_DIR)
"""False where there is no /dev/shm (macOS, Windows): values then travel in band, which
is correct everywhere and costs one copy more (#18)."""
DEFAULT_THRESHOLD_BYTES = 64 * 1024

_NAME_RE = re.compile(r"graflow_(\d+)_[0-9a-f]{16}")
_BYTES = "bytes"
_BYTEARRAY = "bytearray"
_NDARRAY = "ndarray"

# Why not multiprocessing.shared_memory.SharedMemory, which is the same shm_open + mmap:
# - In 3.11 every instance registers with the resource tracker (a helper process, started on
#   first use). We create in one process and unlink in another, so the creator's registration
#   would make the tracker unlink again at exit and warn about "leaked" segments, and an
#   unregister from the receiver races with the creator's (KeyError tracebacks in the tracker).
#   Segments here are never registered: the unlinking rules above and sweep_orphans own them.
# - SharedMemory.close() raises BufferError while a numpy array still views the mapping, so a
#   zero-copy result could not outlive the object; a bare mmap lives exactly as long as its
#   views do.
# - Copying into a mapped tmpfs file dies of SIGBUS when /dev/shm is full (64 MiB by default
#   under Docker); write() reports ENOSPC instead, and encode falls back to in-band. It is also
#   about twice as fast as faulting the pages in through the mapping.


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """Names one shared-memory segment holding one out-of-band buffer."""

    name: str
    size_bytes: int
    framed: bool = False  # laid out as a bytes object (``mapped``): header slot, data, NUL


@dataclass(frozen=True, slots=True)
class Shared:
    """A large result alone in a segment (see ``share``): bytes, bytearray or numpy array.

    Unlike the buffers of ``encode``, such a segment is not unlinked by its first reader: the
    supervisor ``adopt``s it, so that it can hand the same segment to every task that takes
    the value as an argument (``read_shared``), and removes it when the run ends.
    """

    kind: str  # "bytes", "bytearray" or "ndarray"
    ref: SegmentRef
    layout: tuple[Any, tuple[int, ...], str] | None = None  # an array's dtype, shape, order


def is_shareable(value: Any, min_bytes: int) -> bool:
    """Whether ``share`` takes ``value``: a bytes, bytearray or plain contiguous numpy array
    of at least ``min_bytes``."""
    if not AVAILABLE:
        return False
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value) >= min_bytes
    if kind.__name__ != "ndarray" or kind.__module__ != "numpy":
        return False
    flags = value.flags
    return bool(
        value.nbytes >= min_bytes
        and not value.dtype.hasobject
        and (flags.c_contiguous or flags.f_contiguous)
    )


def share(value: Any) -> Shared:
    """Write a value ``is_shareable`` accepts to a segment of its own.

    Raises:
        OSError: /dev/shm cannot take it.
    """
    kind = type(value)
    if kind is bytes or kind is bytearray:
        with memoryview(value) as view:
            name = _BYTES if kind is bytes else _BYTEARRAY
            return Shared(name, _store(view, framed=True))
    # A numpy array: its raw memory, bare; a reader maps it back into an array.
    order = "C" if value.flags.c_contiguous else "F"
    with pickle.PickleBuffer(value).raw() as view:
        return Shared(_NDARRAY, _store(view), (value.dtype, value.shape, order))


def adopt(shared: Shared) -> Shared:
    """Take over a segment another process made: rename it after this process.

    The segment then outlives its creator (whose exit or death sweeps its own segments) and
    is this process's to remove, or ``sweep_orphans``' once this process is gone.
    """
    name = f"graflow_{os.getpid()}_{secrets.token_hex(8)}"
    try:
        os.rename(_path(shared.ref.name), _path(name))
    except FileNotFoundError as exc:
        raise BackendError(f"shared-memory segment {shared.ref.name} is gone", exc) from exc
    ref = SegmentRef(name, shared.ref.size_bytes, shared.ref.framed)
    return Shared(shared.kind, ref, shared.layout)


def read_shared(
    kind: str, name: str, size_bytes: int, layout: tuple[Any, tuple[int, ...], str] | None = None
) -> Any:
    """The value in a segment made by ``share`` (the segment stays).

    A ``bytes`` value is mapped, not copied, where the interpreter allows (``mapped``): the
    object's data is the segment's memory. A numpy array is mapped copy-on-write: writable,
    and a write stays in the reader's copy. A ``bytearray``, or a ``bytes`` elsewhere, is
    copied out once by a ``read`` system call, which runs without holding the GIL, into
    memory on huge pages where the kernel allows (``bigbuf``).
    """
    if kind not in (_BYTES, _BYTEARRAY, _NDARRAY):
        raise PoisonMessage(f"unknown shared value kind {kind!r}")
    fd = _open_segment(name, size_bytes, framed=kind != _NDARRAY, flags=os.O_RDONLY)
    try:
        if kind == _NDARRAY:
            return _mapped_array(fd, size_bytes, layout, name)
        if kind == _BYTES and mapped.available():
            return mapped.map_bytes(fd, size_bytes)
        os.lseek(fd, mapped.HEADER_BYTES, os.SEEK_SET)
        value, done = bigbuf.filled_from_fd(bytes if kind == _BYTES else bytearray, fd, size_bytes)
    finally:
        os.close(fd)
    return _checked(value, done, size_bytes, name)


def _open_segment(name: str, size_bytes: int, *, framed: bool, flags: int) -> int:
    """An open descriptor of segment ``name``, checked to hold ``size_bytes`` of data.

    Raises:
        BackendError: the segment is gone, or its size is not what its ref says (a forged
            size must not make a reader allocate or map what the segment does not hold).
    """
    try:
        fd = os.open(_path(name), flags)
    except FileNotFoundError as exc:
        raise BackendError(f"shared-memory segment {name} is gone", exc) from exc
    framing = mapped.HEADER_BYTES + 1 if framed else 0
    if os.fstat(fd).st_size != size_bytes + framing:
        os.close(fd)
        raise BackendError(f"shared-memory segment {name} is not {size_bytes} bytes")
    return fd


def _mapped_array(fd: int, size_bytes: int, layout: Any, name: str) -> Any:
    # numpy is no dependency of graflow; unpickling the layout's dtype imported it already.
    numpy = importlib.import_module("numpy")
    try:
        dtype, shape, order = layout
        view = mmap.mmap(fd, size_bytes, flags=mmap.MAP_PRIVATE)
        return numpy.frombuffer(view, dtype=dtype).reshape(shape, order=order)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"shared-memory segment {name}: not an array of {layout!r}") from exc


def _checked(value: bytes | bytearray, done: int, size_bytes: int, name: str) -> bytes | bytearray:
    if done != size_bytes:
        raise BackendError(f"shared-memory segment {name} is not {size_bytes} bytes")
    return value


class _OutOfBand:
    """Buffer callback: keeps buffers of at least ``min_bytes`` out of band, for copying later."""

    def __init__(self, min_bytes: int) -> None:
        self.min_bytes = min_bytes
        self.buffers: list[pickle.PickleBuffer] = []
        self.values: set[int] = set()  # ids of the buffers that carry a bytes value

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        with buffer.raw() as view:
            if view.nbytes < self.min_bytes:
                return True
        self.buffers.append(buffer)
        return False  # a falsy result is what sends the buffer out of band

    def release(self) -> None:
        """Drop the exports, so a bytearray the caller owns can be resized again."""
        for buffer in self.buffers:
            buffer.release()
        self.buffers.clear()


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no type hints
    """Cloudpickle pickler that also sends large ``bytes`` and ``bytearray`` out of band."""

    def __init__(self, file: IO[bytes], out_of_band: _OutOfBand) -> None:
        super().__init__(file, protocol=5, buffer_callback=out_of_band)
        self._min_bytes = out_of_band.min_bytes
        self._values = out_of_band.values
        self._pids: dict[int, tuple[str, pickle.PickleBuffer]] = {}

    def persistent_id(self, obj: Any) -> tuple[str, pickle.PickleBuffer] | None:
        """Return a PickleBuffer-carrying id for a large bytes or bytearray, else None."""
        # The C pickler writes exact bytes and bytearray in band and never offers them to
        # reducer_override or the dispatch table; persistent_id is the one hook it calls for
        # every object. The PickleBuffer in the id then reaches the buffer callback.
        kind = type(obj)
        if (kind is bytes or kind is bytearray) and len(obj) >= self._min_bytes:
            # One id per object keeps aliasing (the tuple is memoized) and, since the id
            # holds the object, no id() is reused by a temporary freed mid-dump.
            pid = self._pids.get(id(obj))
            if pid is None:
                pid = (_BYTES if kind is bytes else _BYTEARRAY, pickle.PickleBuffer(obj))
                self._pids[id(obj)] = pid
                if kind is bytes:
                    self._values.add(id(pid[1]))
            return pid
        return None


class _Unpickler(pickle.Unpickler):
    """Unpickler that rebuilds the bytes and bytearray objects ``_Pickler`` sent out of band."""

    def __init__(self, file: IO[bytes], buffers: list[memoryview]) -> None:
        super().__init__(file, buffers=buffers)
        self._loaded: dict[int, tuple[object, bytes | bytearray]] = {}

    def persistent_load(self, pid: Any) -> bytes | bytearray:
        """Copy an out-of-band buffer into the bytes or bytearray it was sent as."""
        seen = self._loaded.get(id(pid))
        if seen is not None:
            return seen[1]
        if not (isinstance(pid, tuple) and len(pid) == 2):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        kind, buffer = pid
        if kind == _BYTES:
            # A framed segment arrives as a mapped bytes object (a read-only view of it).
            whole = buffer.obj if isinstance(buffer, memoryview) else buffer
            if type(whole) is bytes and len(whole) == buffer.nbytes:
                value: bytes | bytearray = whole
            else:
                value = bigbuf.filled_from_buffer(bytes, buffer)
        elif kind == _BYTEARRAY:
            value = bigbuf.filled_from_buffer(bytearray, buffer)
        else:
            raise pickle.UnpicklingError(f"unknown persistent id kind {kind!r}")
        self._loaded[id(pid)] = (pid, value)
        return value


def encode(
    obj: Any, *, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES
) -> tuple[bytes, list[SegmentRef]]:
    """Pickle ``obj``, writing each buffer of at least ``threshold_bytes`` to its own segment.

    The caller must get every returned ref to ``decode`` or ``release``. When /dev/shm cannot
    take the buffers (full, missing), the result is an in-band pickle with no refs.
    """
    if not AVAILABLE:
        return cloudpickle.dumps(obj, protocol=5), []
    out_of_band = _OutOfBand(max(threshold_bytes, 1))
    try:
        file = io.BytesIO()
        _Pickler(file, out_of_band).dump(obj)
        data = file.getvalue()
        if not out_of_band.buffers:
            return data, []
        try:
            return data, _store_all(out_of_band.buffers, out_of_band.values)
        except OSError as exc:
            logger.warning("shared memory unavailable (%s): pickling the value in band", exc)
            in_band: bytes = cloudpickle.dumps(obj, protocol=5)
            return in_band, []
    finally:
        out_of_band.release()


def decode(data: bytes, refs: Sequence[SegmentRef], *, unlink: bool = True) -> Any:
    """Rebuild what ``encode`` made, mapping its segments rather than copying them.

    With ``unlink`` (the default) every segment is unlinked once mapped, and also when decoding
    fails; without it the caller must ``release`` the refs later.

    Raises:
        BackendError: a segment is gone or shorter than its ref says.
        PoisonMessage: a ref does not name a graflow segment.
    """
    views: list[memoryview] = []
    try:
        for ref in refs:
            views.append(_map(ref))
            if unlink:
                _unlink(ref.name)
    except BaseException:
        if unlink:
            release(refs)
        raise
    return _Unpickler(io.BytesIO(data), views).load()


def release(refs: Iterable[SegmentRef]) -> None:
    """Unlink segments that will never be decoded; segments already gone are skipped."""
    for ref in refs:
        # A name that is not ours names no segment to release; decode is where it is an error.
        if _NAME_RE.fullmatch(ref.name) is not None:
            _unlink(ref.name)


def sweep_orphans(pid: int | None = None) -> int:
    """Unlink segments left by dead processes, or all of ``pid``'s; return how many went.

    With ``pid`` its segments go whether or not it runs: pass a process known to be dead, after
    draining its pipe (a ref still in the pipe would then fail to decode), or the caller's own
    pid at shutdown. Without it, segments go whose creator no longer runs or is a zombie.
    """
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return 0
    alive: dict[int, bool] = {}
    removed = 0
    for name in names:
        match = _NAME_RE.fullmatch(name)
        if match is None:
            continue
        owner = int(match.group(1))
        if pid is not None:
            if owner != pid:
                continue
        else:
            if owner not in alive:
                alive[owner] = _is_alive(owner)
            if alive[owner]:
                continue
        if _unlink(name):
            removed += 1
    return removed


def _store_all(buffers: list[pickle.PickleBuffer], values: set[int]) -> list[SegmentRef]:
    refs: list[SegmentRef] = []
    try:
        for buffer in buffers:
            with buffer.raw() as view:
                # bytes values framed (a reader maps a bytes object); others bare: a reader
                # maps numpy arrays writable and copies a bytearray out.
                refs.append(_store(view, framed=id(buffer) in values))
    except BaseException:
        release(refs)
        raise
    return refs


def _store(view: memoryview, *, framed: bool = False) -> SegmentRef:
    """Write ``view`` to a new segment; ``framed``: in the layout of a bytes object (``mapped``)."""
    name, fd = _create_segment()
    try:
        if framed:
            _write_all(fd, memoryview(bytes(mapped.HEADER_BYTES)))
        _write_all(fd, view)
        if framed:
            _write_all(fd, memoryview(b"\0"))
    except BaseException:
        _unlink(name)
        raise
    finally:
        os.close(fd)
    return SegmentRef(name, view.nbytes, framed)


def _write_all(fd: int, view: memoryview) -> None:
    written = 0
    while written < view.nbytes:
        written += os.write(fd, view[written:])


def _create_segment() -> tuple[str, int]:
    while True:
        # The creator's pid in the name is what lets sweep_orphans find a dead process's leftovers.
        name = f"graflow_{os.getpid()}_{secrets.token_hex(8)}"
        try:
            return name, os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue


def _map(ref: SegmentRef) -> memoryview:
    fd = _open_segment(ref.name, ref.size_bytes, framed=ref.framed, flags=os.O_RDWR)
    try:
        if ref.framed and mapped.available():
            return memoryview(mapped.map_bytes(fd, ref.size_bytes))
        # Read-write and shared: numpy arrays come back writeable, and nobody else maps it.
        offset = mapped.HEADER_BYTES if ref.framed else 0
        length = os.fstat(fd).st_size
        whole = memoryview(mmap.mmap(fd, length)) if length else memoryview(b"")
        return whole[offset : offset + ref.size_bytes]
    finally:
        os.close(fd)


def _unlink(name: str) -> bool:
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        return False
    return True


def _path(name: str) -> str:
    # A forged name such as "../x" must not make decode or release unlink an arbitrary file.
    if _NAME_RE.fullmatch(name) is None:
        raise PoisonMessage(f"not a graflow shared-memory segment name: {name!r}")
    return os.path.join(SHM_DIR, name)


def _is_alive(pid: int) -> bool:
    # A reused pid keeps a dead creator's segments until that process ends too: safe, just late.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
