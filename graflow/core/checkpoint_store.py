"""The checkpoint container, and the stores that keep one: a file, or a key in Redis.

A checkpoint is one byte string:

    GRAFLOW-CHECKPOINT 1\\n                        magic and format version, read first
    {"state_bytes": N, "blob_bytes": M, "sha256": "...", "python": "3.11.9", ...}\\n
    N bytes: the run state as JSON (ids, counters, pending work; see graflow.core.checkpoint)
    M bytes: a pickle (channel contents, tasks added at run time, or a whole ExecutionContext)

The first line tells a graflow checkpoint and its version before anything else is parsed; the
SHA-256 over state and pickle catches a damaged copy before a byte of it is unpickled, so a bad
checkpoint ends in a named error (``CorruptCheckpoint``, ``TruncatedCheckpoint``,
``ForeignCheckpoint``, ``CheckpointVersionError``), never in a traceback from pickle.

Writes are atomic: a file store writes ``<path>.tmp``, fsyncs it, renames it over ``<path>``
and fsyncs the directory, so a crash at any instant leaves the old checkpoint or the new one.
The Redis store (``graflow.redis.checkpoint``) writes in one transaction.

Loading a checkpoint unpickles it: keep checkpoints where only the run's user can write.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Protocol

from graflow.exceptions import (
    CheckpointError,
    CheckpointVersionError,
    ConfigError,
    CorruptCheckpoint,
    ForeignCheckpoint,
    TruncatedCheckpoint,
)

__all__ = [
    "FORMAT_VERSION",
    "STORE_FACTORIES",
    "CheckpointStore",
    "Container",
    "FileCheckpointStore",
    "decode",
    "encode",
    "open_store",
    "read_file",
    "write_file",
]

FORMAT_VERSION: Final = 1
MAGIC: Final = b"GRAFLOW-CHECKPOINT "
_MAX_HEADER: Final = 4096


@dataclass(frozen=True)
class Container:
    """A decoded checkpoint: its state (JSON), its pickle (not yet loaded) and its header."""

    state: dict[str, Any]
    blob: bytes
    header: dict[str, Any]


def encode(state: dict[str, Any], blob: bytes) -> bytes:
    """The bytes of a checkpoint holding ``state`` and the pickle ``blob``."""
    body = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
    header = {
        "state_bytes": len(body),
        "blob_bytes": len(blob),
        "sha256": hashlib.sha256(body + blob).hexdigest(),
        "python": platform.python_version(),
        "graflow": _graflow_version(),
    }
    head = MAGIC + b"%d\n" % FORMAT_VERSION + json.dumps(header).encode() + b"\n"
    return b"".join((head, body, blob))


@functools.cache
def _graflow_version() -> str:
    try:
        return metadata.version("graflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def decode(data: bytes, where: str) -> Container:
    """Check and split the checkpoint ``data`` read from ``where`` (named in every error)."""
    first, rest = _split_line(data, 0, where, "its first line")
    if not first.startswith(MAGIC):
        raise ForeignCheckpoint(where, "is not a graflow checkpoint (no GRAFLOW-CHECKPOINT line)")
    try:
        version = int(first[len(MAGIC) :])
    except ValueError:
        raise CorruptCheckpoint(where, "its format version is unreadable") from None
    if version != FORMAT_VERSION:
        raise CheckpointVersionError(where, version, FORMAT_VERSION)
    line, start = _split_line(data, rest, where, "its header")
    header = _header(line, where)
    size_state = header["state_bytes"]
    size_blob = header["blob_bytes"]
    end = start + size_state + size_blob
    if len(data) < end:
        raise TruncatedCheckpoint(where, f"{len(data)} bytes where its header announces {end}")
    if len(data) > end:
        raise CorruptCheckpoint(where, f"{len(data) - end} unexpected byte(s) after its end")
    if hashlib.sha256(data[start:end]).hexdigest() != header["sha256"]:
        raise CorruptCheckpoint(where, "its checksum does not match: the file is damaged")
    try:
        state = json.loads(data[start : start + size_state])
    except ValueError as exc:
        raise CorruptCheckpoint(where, f"its state is unreadable: {exc}") from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(where, "its state is not a JSON object")
    return Container(state, data[start + size_state : end], header)


def _split_line(data: bytes, start: int, where: str, what: str) -> tuple[bytes, int]:
    """The line of ``data`` at ``start`` (without its newline) and where the next one starts."""
    end = data.find(b"\n", start, start + _MAX_HEADER)
    if end < 0:
        if len(data) - start < _MAX_HEADER:
            if start == 0 and not MAGIC.startswith(data[: len(MAGIC)]):
                raise ForeignCheckpoint(where, "is not a graflow checkpoint")
            raise TruncatedCheckpoint(where, f"it ends inside {what}")
        raise ForeignCheckpoint(where, "is not a graflow checkpoint")
    return data[start:end], end + 1


def _header(line: bytes, where: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        raise CorruptCheckpoint(where, "its header is unreadable") from None
    fields = (("state_bytes", int), ("blob_bytes", int), ("sha256", str))
    if not isinstance(header, dict) or not all(
        isinstance(header.get(name), kind) for name, kind in fields
    ):
        raise CorruptCheckpoint(where, "its header lacks sizes or checksum")
    if header["state_bytes"] < 0 or header["blob_bytes"] < 0:
        raise CorruptCheckpoint(where, "its header has negative sizes")
    return header


class CheckpointStore(Protocol):
    """Where one checkpoint is kept. ``write`` replaces it atomically; not thread-safe."""

    location: str
    """The path or URL, as shown in errors and logs."""

    def read(self) -> bytes | None:
        """The checkpoint's bytes, or None if there is none (CheckpointError if unreadable)."""

    def write(self, data: bytes) -> None:
        """Replace the checkpoint with ``data``, all or nothing (CheckpointError on failure)."""


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: ``path.tmp``, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CheckpointError(str(path), f"cannot be written: {exc}", cause=exc) from exc


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(str(path), f"cannot be read: {exc}", cause=exc) from exc


class FileCheckpointStore:
    """A checkpoint in one file, replaced by atomic rename."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def read(self) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        return read_file(self.path)

    def write(self, data: bytes) -> None:
        """Replace the file atomically."""
        write_file(self.path, data)


# Stores in optional layers, by URL scheme: factory(location, options) -> store. Their modules
# register themselves on import; naming the module lets a location ask for them first.
STORE_FACTORIES: dict[str, Callable[[str, dict[str, Any]], CheckpointStore]] = {}
_STORE_MODULES: Final = {
    "redis": "graflow.redis.checkpoint",
    "rediss": "graflow.redis.checkpoint",
    "unix": "graflow.redis.checkpoint",
    "redis+cluster": "graflow.redis.checkpoint",
    "rediss+cluster": "graflow.redis.checkpoint",
}


def open_store(location: str, options: dict[str, Any] | None = None) -> CheckpointStore:
    """The store for ``location``: a file path, or a URL such as ``redis://host:6379/0#name``."""
    if not isinstance(location, str | os.PathLike) or not str(location):
        raise ConfigError(f"checkpoint must be a path or URL, got {location!r}")
    text = str(location)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return FileCheckpointStore(text)
    if scheme == "file":
        return FileCheckpointStore(text[len("file://") :])
    factory = STORE_FACTORIES.get(scheme)
    if factory is None and scheme in _STORE_MODULES:
        importlib.import_module(_STORE_MODULES[scheme])
        factory = STORE_FACTORIES.get(scheme)
    if factory is None:
        raise ConfigError(
            f"checkpoint {text!r}: no checkpoint store for {scheme}:// "
            "(use a file path or redis://host:port/db#name)"
        )
    return factory(text, dict(options or {}))
