"""Bytes objects mapped from a shared segment (graflow.mp.mapped, via shm.share/read_shared).

What a reader gets must be indistinguishable from a copied ``bytes``: exact type, contents,
hash, slicing, pickling, buffer exports. It must stay valid after the segment's name is gone
and for as long as anything refers to it, and its mapping must go once nothing does.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from graflow.exceptions import BackendError
from graflow.mp import mapped, shm

SIZE = 5 * 1024 * 1024 + 3


def _payload(size: int = SIZE) -> bytes:
    return bytes(range(256)) * (size // 256) + b"e" * (size % 256)


def _mappings_of(name: str) -> int:
    with open(f"/proc/{os.getpid()}/maps") as maps:
        return sum(1 for line in maps if name in line)


@pytest.fixture
def shared() -> Iterator[shm.Shared]:
    made = shm.share(_payload())
    yield made
    shm.release([made.ref])


def _read(made: shm.Shared) -> bytes:
    value = shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes)
    assert type(value) is bytes
    return value


def test_this_interpreter_maps() -> None:
    # CI runs CPython on Linux: a silent fall back to copying would hide a regression.
    assert mapped.available()


def test_a_mapped_value_is_an_ordinary_bytes(shared: shm.Shared) -> None:
    value = _read(shared)
    expected = _payload()
    assert type(value) is bytes
    assert value == expected
    assert len(value) == SIZE
    assert hash(value) == hash(expected)
    assert value[:4] == b"\x00\x01\x02\x03" and value[-3:] == b"eee"
    assert value.find(b"\xff\x00") == 255
    assert pickle.loads(pickle.dumps(value, protocol=5)) == expected
    assert bytes(memoryview(value)[10:20]) == expected[10:20]
    assert value.decode("latin-1")[-1] == "e"
    assert {value: 1}[expected] == 1


def test_the_value_is_mapped_not_copied(shared: shm.Shared) -> None:
    value = _read(shared)
    assert _mappings_of(shared.ref.name) == 1
    del value
    mapped.collect()
    assert _mappings_of(shared.ref.name) == 0


def test_a_value_outlives_its_segment_name(shared: shm.Shared) -> None:
    value = _read(shared)
    shm.release([shared.ref])
    assert not os.path.exists(os.path.join(shm.SHM_DIR, shared.ref.name))
    mapped.collect()
    assert value == _payload()


def test_collect_spares_values_still_referred_to(shared: shm.Shared) -> None:
    mapped.collect()
    before = mapped.mapped_count()
    kept = _read(shared)
    dropped = _read(shared)
    view = memoryview(_read(shared))  # an export holds its object
    array = np.frombuffer(_read(shared), dtype=np.uint8)
    assert mapped.mapped_count() == before + 4
    del dropped
    gc.collect()
    assert mapped.collect() == 1
    assert kept == _payload()
    assert view[-1] == ord("e")
    assert int(array[1]) == 1
    del kept, view
    assert mapped.collect() == 2
    del array
    assert mapped.collect() == 1
    assert mapped.mapped_count() == before


def test_a_value_in_a_container_stays_mapped_until_the_container_goes(
    shared: shm.Shared,
) -> None:
    holder = {"v": [_read(shared)]}
    mapped.collect()
    assert holder["v"][0][-1:] == b"e"
    holder.clear()
    assert mapped.collect() == 1


def test_writes_to_the_mapping_stay_private(shared: shm.Shared) -> None:
    first = _read(shared)
    hash(first)  # caches the hash in the header page of this mapping only
    second = _read(shared)
    path = os.path.join(shm.SHM_DIR, shared.ref.name)
    with open(path, "rb") as f:
        head = f.read(mapped.HEADER_BYTES)
    assert head == bytes(mapped.HEADER_BYTES)  # the slot in the segment is still blank
    assert first == second


def test_a_forged_size_is_refused_before_mapping(shared: shm.Shared) -> None:
    for size in (shared.ref.size_bytes + 1, shared.ref.size_bytes - 1, 1 << 40):
        with pytest.raises(BackendError, match="is not"):
            shm.read_shared("bytes", shared.ref.name, size)


def test_empty_and_small_values_map_too() -> None:
    for data in (b"", b"x", _payload(4096 - mapped.HEADER_BYTES - 1)):
        made = shm.share(data)
        try:
            value = _read(made)
            assert value == data
        finally:
            shm.release([made.ref])
        del value
    mapped.collect()


def test_concurrent_reads_and_collects(shared: shm.Shared) -> None:
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(50):
                value = _read(shared)
                assert value[-1:] == b"e"
                del value
                mapped.collect()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    mapped.collect()
    assert _mappings_of(shared.ref.name) == 0


def _child_reads(value: bytes, out: multiprocessing.Queue[bytes]) -> None:
    mapped.collect()
    out.put(value[-8:])


def test_a_forked_child_inherits_live_values(shared: shm.Shared) -> None:
    value = _read(shared)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[bytes] = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(value, out))
    child.start()
    assert out.get(timeout=30) == _payload()[-8:]
    child.join(30)
    assert child.exitcode == 0


def test_bytearray_values_are_copied_and_resizable() -> None:
    made = shm.share(bytearray(_payload()))
    try:
        value = shm.read_shared(made.kind, made.ref.name, made.ref.size_bytes)
    finally:
        shm.release([made.ref])
    assert type(value) is bytearray
    assert _mappings_of(made.ref.name) == 0
    assert isinstance(value, bytearray)
    value += b"more"
    assert value[-4:] == b"more" and len(value) == SIZE + 4
