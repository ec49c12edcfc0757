"""Large bytes and bytearray objects built in place (graflow.mp.bigbuf)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from graflow.mp import bigbuf, shm

SIZES = [0, 1, 4095, bigbuf.HUGE_MIN_BYTES - 1, bigbuf.HUGE_MIN_BYTES + 12_345]


def _pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


@pytest.mark.parametrize("kind", [bytes, bytearray])
@pytest.mark.parametrize("size", SIZES)
def test_filled_from_fd_is_an_ordinary_object_with_the_file_contents(
    tmp_path: Path, kind: type, size: int
) -> None:
    data = _pattern(size)
    path = os.path.join(str(tmp_path), "blob")
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        value, done = bigbuf.filled_from_fd(kind, fd, size)
    finally:
        os.close(fd)
    assert done == size
    assert type(value) is kind
    assert value == data
    if size > 1:  # (b"" and one-byte bytes objects are shared singletons)
        # Only the caller holds it (no reference leaked by the C-API calls).
        assert sys.getrefcount(value) == 2
    if kind is bytes:
        assert hash(value) == hash(data)
        assert {value: 1}[data] == 1
    else:
        value.append(7)  # an ordinary, resizable bytearray
        assert len(value) == size + 1


def test_filled_from_fd_reports_a_short_file(tmp_path: Path) -> None:
    path = os.path.join(str(tmp_path), "short")
    with open(path, "wb") as f:
        f.write(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        _value, done = bigbuf.filled_from_fd(bytes, fd, 10)
    finally:
        os.close(fd)
    assert done == 3


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_filled_from_buffer_copies_writable_and_readonly_sources(kind: type) -> None:
    data = _pattern(bigbuf.HUGE_MIN_BYTES + 3)
    source = bytearray(data)
    with memoryview(source) as view:
        copy = bigbuf.filled_from_buffer(kind, view)
    source[0] ^= 0xFF  # the copy owns its memory
    assert type(copy) is kind and copy == data
    with memoryview(data) as view:  # read-only: the plain path
        assert bigbuf.filled_from_buffer(kind, view) == data


def test_plain_path_matches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bigbuf, "_setup", lambda: False)
    data = _pattern(100_000)
    path = os.path.join(str(tmp_path), "blob")
    with open(path, "wb") as f:
        f.write(data)
    for kind in (bytes, bytearray):
        fd = os.open(path, os.O_RDONLY)
        try:
            value, done = bigbuf.filled_from_fd(kind, fd, len(data))
        finally:
            os.close(fd)
        assert (type(value), done, value) == (kind, len(data), data)


def test_read_shared_refuses_a_size_the_segment_does_not_have() -> None:
    shared = shm.share(b"z" * 1000)
    try:
        with pytest.raises(shm.BackendError, match="is not"):
            shm.read_shared(shared.kind, shared.ref.name, 10**15)
        with pytest.raises(shm.BackendError, match="is not"):
            shm.read_shared(shared.kind, shared.ref.name, -1)
        assert shm.read_shared(shared.kind, shared.ref.name, 1000) == b"z" * 1000
    finally:
        shm.release([shared.ref])
