"""Shared-memory transport: round trips, segment cleanup, orphans of dead processes."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from graflow.exceptions import BackendError, PoisonMessage
from graflow.mp import mapped, shm

MIB = 1024 * 1024


def segments(pid: int | None = None) -> set[str]:
    """Names of the graflow segments in /dev/shm created by ``pid`` (default: this process)."""
    prefix = f"graflow_{os.getpid() if pid is None else pid}_"
    return {name for name in os.listdir(shm.SHM_DIR) if name.startswith(prefix)}


@pytest.fixture(autouse=True)
def _no_leftover_segments() -> Iterator[None]:
    before = segments()
    yield
    left = segments() - before
    shm.sweep_orphans(os.getpid())
    assert not left, f"segments left behind: {sorted(left)}"


def round_trip(value: Any, threshold_bytes: int = shm.DEFAULT_THRESHOLD_BYTES) -> Any:
    data, refs = shm.encode(value, threshold_bytes=threshold_bytes)
    return shm.decode(data, refs)


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "text",
        b"x" * 1000,
        bytearray(b"y" * 1000),
        {"nested": [1, 2.5, (b"z", "w")]},
        np.arange(100),
    ],
    ids=["none", "int", "str", "bytes", "bytearray", "dict", "ndarray"],
)
def test_small_values_round_trip_in_band(value: Any) -> None:
    data, refs = shm.encode(value)
    assert refs == []
    decoded = shm.decode(data, refs)
    assert type(decoded) is type(value)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(decoded, value)
    else:
        assert decoded == value


def test_closures_round_trip_through_cloudpickle() -> None:
    offset = 3
    decoded = round_trip(lambda x: x + offset)
    assert decoded(1) == 4


def test_large_bytes_travel_out_of_band() -> None:
    value = os.urandom(2 * MIB)
    data, refs = shm.encode(value)
    assert [ref.size_bytes for ref in refs] == [len(value)]
    assert len(data) < 1024
    assert {ref.name for ref in refs} <= segments()
    decoded = shm.decode(data, refs)
    assert type(decoded) is bytes
    assert decoded == value
    assert segments() == set()


def test_large_bytes_inside_a_message_are_mapped_not_copied() -> None:
    value = os.urandom(2 * MIB)
    mapped.collect()
    before = mapped.mapped_count()
    data, refs = shm.encode({"blob": value, "again": value, "small": b"x"})
    assert len(refs) == 1 and refs[0].framed  # one segment for both references
    decoded = shm.decode(data, refs)
    assert decoded["blob"] is decoded["again"]
    assert type(decoded["blob"]) is bytes and decoded["blob"] == value
    assert mapped.mapped_count() == before + 1
    del decoded
    assert mapped.collect() == 1


def test_a_forged_size_of_a_framed_segment_is_refused() -> None:
    _, refs = shm.encode(os.urandom(MIB))
    (ref,) = refs
    for size in (ref.size_bytes - 1, ref.size_bytes + 1, 1 << 40):
        with pytest.raises(BackendError, match="is not"):
            shm.decode(b"", [shm.SegmentRef(ref.name, size, framed=True)], unlink=False)
    with pytest.raises(BackendError, match="is not"):
        shm.decode(b"", [shm.SegmentRef(ref.name, ref.size_bytes, framed=False)], unlink=False)
    shm.release(refs)


def test_large_bytearray_comes_back_as_a_writable_bytearray() -> None:
    value = bytearray(os.urandom(MIB))
    decoded = round_trip(value)
    assert type(decoded) is bytearray
    assert decoded == value
    decoded[0] ^= 0xFF
    decoded.extend(b"more")


def test_encode_leaves_the_callers_bytearray_resizable() -> None:
    value = bytearray(MIB)
    _, refs = shm.encode(value)
    value.extend(b"still resizable")
    shm.release(refs)


@pytest.mark.parametrize("order", ["C", "F"])
def test_large_numpy_array_maps_without_copy(order: str) -> None:
    value = np.asarray(np.arange(512 * 1024, dtype=np.float64).reshape(512, 1024), order=order)
    data, refs = shm.encode(value)
    assert [ref.size_bytes for ref in refs] == [value.nbytes]
    decoded = shm.decode(data, refs)
    np.testing.assert_array_equal(decoded, value)
    assert decoded.flags.f_contiguous == value.flags.f_contiguous
    assert decoded.flags.writeable
    assert not decoded.flags.owndata


def test_non_contiguous_array_round_trips() -> None:
    value = np.arange(1024 * 1024, dtype=np.int64)[::2]
    np.testing.assert_array_equal(round_trip(value), value)


def test_nested_large_values_each_get_a_segment() -> None:
    shared = bytearray(os.urandom(MIB))
    value = {
        "bytes": os.urandom(MIB),
        "bytearray": shared,
        "array": np.ones((256, 256), dtype=np.float32),
        "list": [os.urandom(MIB), b"small", shared],
    }
    data, refs = shm.encode(value)
    assert len(refs) == 4
    decoded = shm.decode(data, refs)
    assert decoded["bytes"] == value["bytes"]
    assert decoded["bytearray"] == shared
    assert decoded["list"][0] == value["list"][0]
    assert decoded["list"][1] == b"small"
    np.testing.assert_array_equal(decoded["array"], value["array"])
    assert decoded["list"][2] is decoded["bytearray"]


def test_threshold_decides_what_goes_out_of_band() -> None:
    value = [b"a" * 2000, b"b" * 100]
    assert len(shm.encode(value, threshold_bytes=1 << 20)[1]) == 0
    data, refs = shm.encode(value, threshold_bytes=1000)
    assert len(refs) == 1
    assert shm.decode(data, refs) == value


def test_decoded_array_outlives_the_decode_internals() -> None:
    def decode_fresh() -> np.ndarray[Any, Any]:
        data, refs = shm.encode(np.full(MIB, 7, dtype=np.uint8))
        decoded: np.ndarray[Any, Any] = shm.decode(data, refs)
        return decoded[1:]

    array = decode_fresh()
    gc.collect()
    assert segments() == set()
    assert array.shape == (MIB - 1,)
    assert int(array.sum()) == 7 * (MIB - 1)
    array[:] = 1
    assert int(array.sum()) == MIB - 1


def test_decode_without_unlink_leaves_segments_for_release() -> None:
    value = os.urandom(MIB)
    data, refs = shm.encode(value)
    assert shm.decode(data, refs, unlink=False) == value
    assert {ref.name for ref in refs} <= segments()
    shm.release(refs)
    assert segments() == set()


def test_release_unlinks_and_tolerates_missing_segments() -> None:
    data, refs = shm.encode([os.urandom(MIB), np.zeros(MIB, dtype=np.uint8)])
    assert len(refs) == 2
    shm.release(refs)
    assert segments() == set()
    shm.release(refs)
    with pytest.raises(BackendError, match="is gone"):
        shm.decode(data, refs)


def test_decode_unlinks_the_rest_when_a_segment_is_missing() -> None:
    data, refs = shm.encode([os.urandom(MIB), os.urandom(MIB)])
    shm.release(refs[:1])
    with pytest.raises(BackendError):
        shm.decode(data, refs)
    assert segments() == set()


def test_forged_segment_names_are_refused() -> None:
    forged = [shm.SegmentRef("../../etc/passwd", 10)]
    with pytest.raises(PoisonMessage):
        shm.decode(b"", forged)
    shm.release(forged)
    assert os.path.exists("/etc/passwd")


def test_encode_falls_back_to_in_band_without_shared_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shm, "SHM_DIR", "/nonexistent/graflow-shm")
    value = {"bytes": os.urandom(MIB), "array": np.arange(MIB)}
    with caplog.at_level(logging.WARNING, logger=shm.__name__):
        data, refs = shm.encode(value)
    assert refs == []
    assert "in band" in caplog.text
    decoded = shm.decode(data, refs)
    assert decoded["bytes"] == value["bytes"]
    np.testing.assert_array_equal(decoded["array"], value["array"])


@contextmanager
def child_with_segments(count: int) -> Iterator[tuple[int, set[str]]]:
    """Fork a child that encodes ``count`` large values, then exits without cleaning up.

    The child lives until the block ends, and is reaped on the way out.
    """
    names_r, names_w = os.pipe()
    exit_r, exit_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(names_r)
            os.close(exit_w)
            _, refs = shm.encode([os.urandom(128 * 1024) for _ in range(count)])
            os.write(names_w, "\n".join(ref.name for ref in refs).encode())
            os.close(names_w)
            os.read(exit_r, 1)
        finally:
            os._exit(0)
    os.close(names_w)
    os.close(exit_r)
    try:
        with os.fdopen(names_r, "rb") as reader:
            names = set(reader.read().decode().split())
        yield pid, names
    finally:
        os.close(exit_w)
        os.waitpid(pid, 0)


def test_sweep_orphans_removes_only_segments_of_dead_processes() -> None:
    # The one test that sweeps without a pid: two such tests run by parallel workers could
    # take each other's orphans and miscount.
    data, refs = shm.encode(os.urandom(MIB))
    with child_with_segments(3) as (pid, names):
        assert len(names) == 3
        shm.sweep_orphans()
        assert segments(pid) == names
    assert shm.sweep_orphans() >= 3
    assert segments(pid) == set()
    assert {ref.name for ref in refs} <= segments()
    assert len(shm.decode(data, refs)) == MIB


def test_sweep_orphans_for_a_given_pid_removes_all_of_its_segments() -> None:
    with child_with_segments(2) as (pid, names):
        assert segments(pid) == names
        assert shm.sweep_orphans(pid) == 2
        assert segments(pid) == set()
    assert shm.sweep_orphans(pid) == 0


def encode_in_child(conn: Connection) -> None:
    """Child side of the cross-process test: encode a known value and send it."""
    value = {"array": np.arange(MIB, dtype=np.int32), "bytes": bytes(range(256)) * 4096}
    conn.send(shm.encode(value))
    conn.close()


def test_round_trip_across_processes() -> None:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=encode_in_child, args=(sender,))
    child.start()
    sender.close()
    data, refs = receiver.recv()
    child.join(30)
    assert child.exitcode == 0
    assert len(refs) == 2
    decoded = shm.decode(data, refs)
    np.testing.assert_array_equal(decoded["array"], np.arange(MIB, dtype=np.int32))
    assert decoded["bytes"] == bytes(range(256)) * 4096
    assert child.pid is not None
    assert segments(child.pid) == set()


def test_a_shared_array_maps_back_copy_on_write() -> None:
    value = np.arange(300_000, dtype=np.int32).reshape(600, 500)
    assert shm.is_shareable(value, MIB)
    assert not shm.is_shareable(value[:, ::2], 1)  # strided: travels the ordinary way
    assert not shm.is_shareable(np.array([object()] * 10), 1)
    assert not shm.is_shareable(value, value.nbytes + 1)
    made = shm.share(value)
    try:
        first = shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes, made.layout)
        second = shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes, made.layout)
        np.testing.assert_array_equal(first, value)
        first[0, 0] = 99
        assert second[0, 0] == 0  # each reader's writes are its own
        with pytest.raises(BackendError, match="is not"):
            shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes + 8, made.layout)
        with pytest.raises(PoisonMessage, match="not an array"):
            shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes, (value.dtype, (7,), "C"))
        with pytest.raises(PoisonMessage, match="unknown shared value kind"):
            shm.read_shared("pickle", made.ref.name, made.ref.size_bytes)
    finally:
        shm.release([made.ref])
