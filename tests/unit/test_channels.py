"""Unit tests for graflow.channels: the Channel ABC, MemoryChannel, typed channels, factory."""

from __future__ import annotations

import copy
import math
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, TypedDict

import pytest

import graflow.channels
from graflow.channels import memory as memory_module
from graflow.channels import schemas
from graflow.channels.base import Channel
from graflow.channels.factory import ChannelFactory
from graflow.channels.memory import MemoryChannel
from graflow.channels.memory_channel import MemoryChannel as ReexportedMemoryChannel
from graflow.channels.typed import ChannelTypeRegistry, TypedChannel
from graflow.exceptions import ConfigError

WAIT_S = 5.0


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.005)
    return True


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads running ``target(index)`` at the same moment and join them."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=WAIT_S)
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert errors == []


class FakeClock:
    """Stands in for the ``time`` module inside graflow.channels.memory."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(memory_module, "time", fake)
    return fake


@pytest.fixture
def channel() -> MemoryChannel:
    return MemoryChannel("test-run")


# --------------------------------------------------------------------------- package layout


def test_package_exports_nothing() -> None:
    assert graflow.channels.__all__ == []


def test_memory_channel_upstream_import_path() -> None:
    assert ReexportedMemoryChannel is MemoryChannel


# --------------------------------------------------------------------------- Channel ABC


class DictChannel(Channel):
    """The smallest concrete channel: relies on the base snapshot, update and lock."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.data: dict[str, Any] = {}

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def exists(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def clear(self) -> None:
        self.data.clear()

    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        self.data.setdefault(key, []).append(value)
        return len(self.data[key])

    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        self.data.setdefault(key, []).insert(0, value)
        return len(self.data[key])

    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        self.data[key] = self.data.get(key, 0) + amount
        return self.data[key]  # type: ignore[no-any-return]  # test double


def test_channel_is_abstract() -> None:
    with pytest.raises(TypeError):
        Channel("x")  # type: ignore[abstract]  # the point of the test


def test_channel_abstract_methods() -> None:
    expected = {
        "set",
        "get",
        "delete",
        "exists",
        "keys",
        "clear",
        "append",
        "prepend",
        "atomic_add",
    }
    assert set(Channel.__abstractmethods__) == expected


def test_base_snapshot_update_and_noop_lock() -> None:
    ch = DictChannel("base")
    assert ch.name == "base"
    assert ch.snapshot() == {}
    ch.update({"a": 1, "b": [2]})
    assert ch.data == {"a": 1, "b": [2]}
    assert ch.snapshot() == {"a": 1, "b": [2]}
    with ch.lock("a"), ch.lock("a", timeout=0.0):
        ch.set("a", 5)
    assert ch.get("a") == 5
    assert repr(ch) == "DictChannel(name='base')"


# --------------------------------------------------------------------------- MemoryChannel basics


def test_memory_is_a_channel_and_ignores_backend_kwargs() -> None:
    ch = MemoryChannel("run-1", host="localhost", port=6379, key_prefix="x")
    assert isinstance(ch, Channel)
    assert ch.name == "run-1"
    assert ch.keys() == []


def test_set_get_default_and_overwrite(channel: MemoryChannel) -> None:
    assert channel.get("missing") is None
    assert channel.get("missing", "fallback") == "fallback"
    channel.set("k", 1)
    assert channel.get("k") == 1
    channel.set("k", "two")
    assert channel.get("k", "fallback") == "two"


def test_stored_none_is_a_value(channel: MemoryChannel) -> None:
    channel.set("k", None)
    assert channel.exists("k")
    assert channel.get("k", "fallback") is None
    assert channel.keys() == ["k"]
    assert channel.delete("k") is True


def test_values_are_not_copied(channel: MemoryChannel) -> None:
    value = {"nested": [1, 2]}
    channel.set("k", value)
    got = channel.get("k")
    assert got is value
    got["nested"].append(3)
    assert channel.get("k") == {"nested": [1, 2, 3]}


def test_delete_exists_keys_clear(channel: MemoryChannel) -> None:
    assert channel.delete("nope") is False
    channel.set("b", 1)
    channel.set("a", 2)
    channel.set("c", 3)
    assert channel.exists("a")
    assert not channel.exists("z")
    assert channel.keys() == ["b", "a", "c"]
    assert channel.delete("a") is True
    assert channel.delete("a") is False
    assert not channel.exists("a")
    assert channel.keys() == ["b", "c"]
    channel.clear()
    assert channel.keys() == []
    assert channel.get("b") is None


def test_snapshot_and_update(channel: MemoryChannel) -> None:
    channel.set("a", 1)
    channel.set("t", "lives", ttl=60)
    channel.append("l", "x")
    snap = channel.snapshot()
    assert snap == {"a": 1, "t": "lives", "l": ["x"]}
    snap["a"] = 99
    assert channel.get("a") == 1
    channel.update({"a": 2, "new": {"v": 1}})
    assert channel.get("a") == 2
    assert channel.get("new") == {"v": 1}
    channel.update({"t": "plain"})
    assert channel.snapshot()["t"] == "plain"


def test_repr(channel: MemoryChannel) -> None:
    assert repr(channel) == "MemoryChannel(name='test-run')"


# --------------------------------------------------------------------------- lists


def test_append_and_prepend_build_a_list(channel: MemoryChannel) -> None:
    assert channel.append("l", 1) == 1
    assert channel.append("l", 2) == 2
    assert channel.prepend("l", 0) == 3
    assert channel.get("l") == [0, 1, 2]
    assert channel.prepend("p", "first") == 1
    assert channel.get("p") == ["first"]


def test_get_returns_the_stored_list(channel: MemoryChannel) -> None:
    channel.set("l", [1])
    held = channel.get("l")
    assert channel.append("l", 2) == 2
    assert held == [1, 2]
    assert channel.get("l") is held


@pytest.mark.parametrize("value", ["text", 5, (1, 2), {"a": 1}, None])
def test_append_on_non_list_raises_type_error(channel: MemoryChannel, value: Any) -> None:
    channel.set("k", value)
    with pytest.raises(TypeError, match="not a list"):
        channel.append("k", 1)
    with pytest.raises(TypeError, match="not a list"):
        channel.prepend("k", 1)
    assert channel.get("k") == value


# --------------------------------------------------------------------------- atomic_add


def test_atomic_add_counts_from_zero(channel: MemoryChannel) -> None:
    assert channel.atomic_add("n") == 1
    assert channel.atomic_add("n", 5) == 6
    assert channel.atomic_add("n", -10) == -4
    assert channel.get("n") == -4
    result = channel.atomic_add("f", 0.5)
    assert result == 0.5
    assert isinstance(result, float)
    assert channel.atomic_add("f", 2) == 2.5


def test_atomic_add_on_existing_number(channel: MemoryChannel) -> None:
    channel.set("n", 10)
    assert channel.atomic_add("n", 2.5) == 12.5
    assert channel.get("n") == 12.5


def test_atomic_add_accepts_other_real_numbers(channel: MemoryChannel) -> None:
    channel.set("q", Fraction(1, 3))
    assert channel.atomic_add("q", 1) == Fraction(4, 3)
    one_second: Any = Fraction(1, 1)
    channel.set("ttl-fraction", 0, ttl=one_second)
    assert channel.get("ttl-fraction") == 0


@pytest.mark.parametrize("value", ["1", [1], None, True, {"n": 1}])
def test_atomic_add_on_non_number_raises(channel: MemoryChannel, value: Any) -> None:
    channel.set("k", value)
    with pytest.raises(TypeError):
        channel.atomic_add("k")
    assert channel.get("k") == value


@pytest.mark.parametrize("amount", ["1", None, True, [1]])
def test_atomic_add_rejects_non_numeric_amount(channel: MemoryChannel, amount: Any) -> None:
    with pytest.raises(TypeError):
        channel.atomic_add("n", amount)
    assert not channel.exists("n")


# --------------------------------------------------------------------------- TTL


@pytest.mark.parametrize("ttl", [0, -1, -0.5, "5", True, math.nan, math.inf, [1]])
def test_bad_ttl_raises_value_error(channel: MemoryChannel, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        channel.set("k", 1, ttl=ttl)
    channel.set("l", [0])
    with pytest.raises(ValueError, match="ttl"):
        channel.append("l", 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        channel.prepend("l", 1, ttl=ttl)
    assert not channel.exists("k")
    assert channel.get("l") == [0]


def test_ttl_expires_in_real_time(channel: MemoryChannel) -> None:
    channel.set("short", "v", ttl=0.05)
    channel.set("long", "v", ttl=60)
    channel.set("plain", "v")
    assert wait_until(lambda: channel.get("short") is None)
    assert not channel.exists("short")
    assert channel.get("short", "gone") == "gone"
    assert sorted(channel.keys()) == ["long", "plain"]
    assert channel.get("long") == "v"


def test_ttl_expiry_seen_by_every_reader(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("k", "v", ttl=10)
    ch.set("other", 1)
    clock.advance(9.9)
    assert ch.get("k") == "v"
    assert ch.exists("k")
    assert ch.keys() == ["k", "other"]
    clock.advance(0.1)
    assert ch.get("k", "gone") == "gone"
    assert not ch.exists("k")
    assert ch.keys() == ["other"]
    assert ch.snapshot() == {"other": 1}
    assert ch.delete("k") is False


def test_delete_of_expired_key_reports_false(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("k", "v", ttl=1)
    clock.advance(2)
    assert ch.delete("k") is False
    ch.set("k", "v", ttl=1)
    assert ch.delete("k") is True


def test_set_without_ttl_clears_expiry(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("k", 1, ttl=1)
    ch.set("k", 2)
    clock.advance(100)
    assert ch.get("k") == 2


def test_set_with_new_ttl_replaces_expiry(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("k", 1, ttl=1)
    ch.set("k", 2, ttl=10)
    clock.advance(5)
    assert ch.get("k") == 2


def test_append_ttl_rules(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    assert ch.append("l", 1, ttl=10) == 1
    clock.advance(6)
    assert ch.append("l", 2) == 2  # no ttl: keeps the expiry it had
    clock.advance(5)
    assert not ch.exists("l")
    assert ch.append("l", 3) == 1  # an expired list is gone; a new one starts
    clock.advance(1000)
    assert ch.get("l") == [3]
    assert ch.prepend("l", 0, ttl=2) == 2  # a ttl resets the expiry of an existing list
    clock.advance(1)
    assert ch.get("l") == [0, 3]
    clock.advance(1)
    assert ch.get("l") is None


def test_atomic_add_keeps_ttl_and_restarts_after_expiry(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("n", 5, ttl=10)
    assert ch.atomic_add("n", 1) == 6
    clock.advance(9)
    assert ch.get("n") == 6
    clock.advance(1)
    assert ch.get("n") is None
    assert ch.atomic_add("n", 1) == 1
    clock.advance(1000)
    assert ch.get("n") == 1


def test_non_number_under_expired_key_is_just_gone(clock: FakeClock) -> None:
    ch = MemoryChannel("ttl")
    ch.set("k", "text", ttl=1)
    clock.advance(1)
    assert ch.atomic_add("k", 2) == 2
    ch.set("s", "text", ttl=1)
    clock.advance(1)
    assert ch.append("s", "item") == 1


# --------------------------------------------------------------------------- thread safety


def test_concurrent_atomic_add_loses_nothing(channel: MemoryChannel) -> None:
    def add(_: int) -> None:
        for _ in range(100):
            channel.atomic_add("n", 1)

    run_threads(5, add)
    assert channel.get("n") == 500


def test_concurrent_float_add(channel: MemoryChannel) -> None:
    def add(_: int) -> None:
        for _ in range(200):
            channel.atomic_add("f", 0.5)

    run_threads(4, add)
    assert channel.get("f") == 400.0


def test_concurrent_append_loses_nothing(channel: MemoryChannel) -> None:
    lengths: list[int] = []

    def append(index: int) -> None:
        for i in range(200):
            lengths.append(channel.append("items", (index, i)))

    run_threads(8, append)
    items = channel.get("items")
    assert len(items) == 1600
    assert set(items) == {(t, i) for t in range(8) for i in range(200)}
    # Each call saw its own length: the append and the count happened as one step.
    assert sorted(lengths) == list(range(1, 1601))
    for thread_index in range(8):
        own = [i for t, i in items if t == thread_index]
        assert own == list(range(200))


def test_concurrent_prepend_and_append(channel: MemoryChannel) -> None:
    def push(index: int) -> None:
        for i in range(150):
            if index % 2:
                channel.prepend("items", (index, i))
            else:
                channel.append("items", (index, i))

    run_threads(6, push)
    assert len(channel.get("items")) == 900


def test_concurrent_writers_on_separate_keys(channel: MemoryChannel) -> None:
    def write(index: int) -> None:
        for i in range(200):
            channel.set(f"k{index}.{i}", i)
            assert channel.get(f"k{index}.{i}") == i

    run_threads(8, write)
    assert len(channel.keys()) == 1600
    assert len(channel.snapshot()) == 1600


def test_lock_makes_get_then_set_atomic(channel: MemoryChannel) -> None:
    channel.set("n", 0)

    def bump(_: int) -> None:
        for _ in range(100):
            with channel.lock("n"):
                value = channel.get("n")
                time.sleep(0)  # invite a thread switch inside the critical section
                channel.set("n", value + 1)

    run_threads(5, bump)
    assert channel.get("n") == 500


# --------------------------------------------------------------------------- lock


def test_lock_is_reentrant(channel: MemoryChannel) -> None:
    with channel.lock("k"), channel.lock("k", timeout=0.0):
        channel.set("k", 1)
    assert channel.get("k") == 1


@contextmanager
def held_in_other_thread(channel: MemoryChannel, key: str) -> Iterator[None]:
    """Hold ``channel.lock(key)`` in a helper thread for the duration of the block."""
    acquired = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with channel.lock(key):
            acquired.set()
            release.wait(timeout=WAIT_S)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert acquired.wait(timeout=WAIT_S)
        yield
    finally:
        release.set()
        thread.join(timeout=WAIT_S)


def test_lock_times_out_while_another_thread_holds_it(channel: MemoryChannel) -> None:
    with held_in_other_thread(channel, "k"):
        with pytest.raises(TimeoutError, match="'k'"), channel.lock("k", timeout=0.05):
            pytest.fail("lock acquired while another thread holds it")
        with channel.lock("other-key", timeout=0.05):
            pass
    with channel.lock("k", timeout=WAIT_S):
        pass


def test_lock_timeout_in_a_second_thread(channel: MemoryChannel) -> None:
    outcome: list[BaseException | None] = []

    def contend() -> None:
        try:
            with channel.lock("k", timeout=0.05):
                outcome.append(None)
        except TimeoutError as exc:
            outcome.append(exc)

    with channel.lock("k"):
        thread = threading.Thread(target=contend)
        thread.start()
        thread.join(timeout=WAIT_S)
    assert len(outcome) == 1
    assert isinstance(outcome[0], TimeoutError)


def test_lock_is_released_when_the_block_raises(channel: MemoryChannel) -> None:
    with pytest.raises(RuntimeError), channel.lock("k"):
        raise RuntimeError("boom")
    outcome: list[str] = []

    def take() -> None:
        with channel.lock("k", timeout=WAIT_S):
            outcome.append("got it")

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(timeout=WAIT_S)
    assert outcome == ["got it"]


def test_lock_rejects_negative_timeout(channel: MemoryChannel) -> None:
    with pytest.raises(ValueError, match="timeout"), channel.lock("k", timeout=-1):
        pass


def test_lock_is_advisory(channel: MemoryChannel) -> None:
    with held_in_other_thread(channel, "k"):
        channel.set("k", 1)
        assert channel.atomic_add("k") == 2
        assert channel.get("k") == 2


# --------------------------------------------------------------------------- pickling


def test_pickle_round_trip(channel: MemoryChannel) -> None:
    channel.set("a", {"x": [1, 2]})
    channel.append("l", 1)
    channel.atomic_add("n", 3)
    channel.set("t", "still here", ttl=60)
    with channel.lock("a"):
        clone = pickle.loads(pickle.dumps(channel))
    assert isinstance(clone, MemoryChannel)
    assert clone.name == "test-run"
    assert clone.snapshot() == {"a": {"x": [1, 2]}, "l": [1], "n": 3, "t": "still here"}
    # The copy is independent and fully working, locks included.
    assert clone.append("l", 2) == 2
    assert channel.get("l") == [1]
    assert clone.atomic_add("n") == 4
    with clone.lock("a", timeout=0.0):
        clone.set("a", 1)
    assert channel.get("a") == {"x": [1, 2]}


def test_deepcopy_round_trip(channel: MemoryChannel) -> None:
    channel.set("a", [1])
    clone = copy.deepcopy(channel)
    clone.append("a", 2)
    assert channel.get("a") == [1]
    assert clone.get("a") == [1, 2]


def test_pickle_drops_expired_and_keeps_time_left(clock: FakeClock) -> None:
    ch = MemoryChannel("p")
    ch.set("dead", 1, ttl=1)
    ch.set("alive", 2, ttl=10)
    clock.advance(4)
    data = pickle.dumps(ch)
    clock.advance(100)  # the copy counts the 6 s left from when it is loaded
    clone = pickle.loads(data)
    assert clone.keys() == ["alive"]
    clock.advance(5.9)
    assert clone.get("alive") == 2
    clock.advance(0.1)
    assert clone.get("alive") is None


def test_pickled_channel_still_thread_safe(channel: MemoryChannel) -> None:
    clone = pickle.loads(pickle.dumps(channel))

    def add(_: int) -> None:
        for _ in range(100):
            clone.atomic_add("n")

    run_threads(5, add)
    assert clone.get("n") == 500


# --------------------------------------------------------------------------- schemas


def test_schemas_have_expected_fields() -> None:
    assert schemas.TaskResultMessage.__required_keys__ == frozenset(
        {"task_id", "result", "timestamp", "status"}
    )
    for message_type in schemas.BUILTIN_MESSAGE_TYPES.values():
        assert "timestamp" in message_type.__required_keys__


def test_registry_knows_builtin_schemas() -> None:
    assert ChannelTypeRegistry.get("task_result") is schemas.TaskResultMessage
    assert ChannelTypeRegistry.get("task_progress") is schemas.TaskProgressMessage
    assert ChannelTypeRegistry.get("task_error") is schemas.TaskErrorMessage
    assert ChannelTypeRegistry.get("workflow_state") is schemas.WorkflowStateMessage
    assert ChannelTypeRegistry.get("data_transfer") is schemas.DataTransferMessage
    assert ChannelTypeRegistry.get("cycle_notification") is schemas.CycleNotificationMessage
    assert ChannelTypeRegistry.get("no-such-type") is None
    assert set(schemas.BUILTIN_MESSAGE_TYPES) <= set(ChannelTypeRegistry.names())


# --------------------------------------------------------------------------- TypedChannel


class Point(TypedDict):
    x: int
    y: float
    label: str
    tags: list  # type: ignore[type-arg]  # a bare ``list`` is what the validator checks
    meta: dict  # type: ignore[type-arg]  # likewise for ``dict``
    flag: bool
    extra: Any
    names: list[str]


class Partial(TypedDict, total=False):
    note: str


class Child(Partial):
    ident: int


def valid_point(**changes: Any) -> dict[str, Any]:
    point: dict[str, Any] = {
        "x": 1,
        "y": 2.5,
        "label": "p",
        "tags": [],
        "meta": {},
        "flag": False,
        "extra": object(),
        "names": ["a"],
    }
    point.update(changes)
    return point


@pytest.fixture
def points(channel: MemoryChannel) -> TypedChannel[Point]:
    return TypedChannel(channel, Point)


@pytest.mark.parametrize("not_typeddict", [dict, int, {"x": int}, MemoryChannel, None])
def test_typed_channel_needs_a_typeddict(channel: MemoryChannel, not_typeddict: Any) -> None:
    with pytest.raises(ValueError, match="TypedDict"):
        TypedChannel(channel, not_typeddict)


def test_typed_round_trip(points: TypedChannel[Point], channel: MemoryChannel) -> None:
    message = valid_point()
    points.set("p", message)  # type: ignore[arg-type]  # built as a plain dict
    assert points.get("p") is message
    assert channel.get("p") is message
    points.send("q", valid_point(x=7), ttl=60)  # type: ignore[arg-type]
    received = points.receive("q")
    assert received is not None
    assert received["x"] == 7


def test_typed_properties(points: TypedChannel[Point], channel: MemoryChannel) -> None:
    assert points.name == "test-run"
    assert points.message_type is Point
    assert points.channel is channel
    assert repr(points) == "TypedChannel(MemoryChannel(name='test-run'), Point)"


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        None,
        [("x", 1)],
        {k: v for k, v in valid_point().items() if k != "label"},
        valid_point(unknown=1),
        valid_point(x="1"),
        valid_point(x=True),
        valid_point(x=1.0),
        valid_point(y="2.5"),
        valid_point(y=False),
        valid_point(label=5),
        valid_point(tags=(1,)),
        valid_point(meta=[]),
        valid_point(flag=1),
    ],
)
def test_typed_set_rejects_non_conforming(points: TypedChannel[Point], bad: Any) -> None:
    with pytest.raises(TypeError, match=r"^Value does not conform to Point$"):
        points.set("p", bad)
    with pytest.raises(TypeError, match="Message does not conform to Point"):
        points.send("p", bad)
    assert not points.exists("p")


def test_typed_accepts_int_for_float_and_anything_for_loose_fields(
    points: TypedChannel[Point],
) -> None:
    points.set("p", valid_point(y=3, extra=None, names=("not", "checked")))  # type: ignore[arg-type]
    got = points.get("p")
    assert got is not None
    assert got["y"] == 3


def test_typed_get_returns_default_for_missing_or_invalid(
    points: TypedChannel[Point], channel: MemoryChannel
) -> None:
    fallback: Any = valid_point(label="fallback")
    assert points.get("missing") is None
    assert points.get("missing", fallback) is fallback
    channel.set("bad", {"x": 1})
    assert points.get("bad") is None
    assert points.receive("bad", fallback) is fallback
    channel.set("worse", 42)
    assert points.get("worse") is None
    assert points.exists("bad")


def test_typed_optional_and_inherited_keys(channel: MemoryChannel) -> None:
    children = TypedChannel(channel, Child)
    children.set("c", {"ident": 1})
    children.set("d", {"ident": 2, "note": "n"})
    assert children.get("c") == {"ident": 1}
    with pytest.raises(TypeError):
        children.set("e", {"note": "no ident"})  # type: ignore[typeddict-item]
    with pytest.raises(TypeError):
        children.set("e", {"ident": 1, "note": 5})  # type: ignore[typeddict-item]


class Unresolvable(TypedDict):
    known: int
    # Deliberately unresolvable, so the validator cannot learn this field's type.
    mystery: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


def test_typed_with_unresolvable_annotation_skips_type_checks(channel: MemoryChannel) -> None:
    typed = TypedChannel(channel, Unresolvable)
    unchecked: Any = {"known": "not even an int", "mystery": object()}
    typed.set("k", unchecked)
    with pytest.raises(TypeError):
        typed.set("k", {"known": 1})  # type: ignore[typeddict-item]


def test_typed_delegates_everything_else(
    points: TypedChannel[Point], channel: MemoryChannel
) -> None:
    points.set("p", valid_point())  # type: ignore[arg-type]
    assert points.exists("p")
    assert points.keys() == ["p"]
    assert points.append("log", "unchecked") == 1
    assert points.prepend("log", 0) == 2
    assert channel.get("log") == [0, "unchecked"]
    assert points.atomic_add("n", 2) == 2
    assert channel.get("n") == 2
    with held_in_other_thread(channel, "k"):
        with pytest.raises(TimeoutError), points.lock("k", timeout=0.05):
            pass
    with points.lock("k", timeout=0.05):
        pass
    assert points.delete("p") is True
    assert points.delete("p") is False
    points.clear()
    assert channel.keys() == []


def test_registry_create_channel(channel: MemoryChannel) -> None:
    results = ChannelTypeRegistry.create_channel(channel, "task_result")
    assert isinstance(results, TypedChannel)
    assert results.message_type is schemas.TaskResultMessage
    message: schemas.TaskResultMessage = {
        "task_id": "t1",
        "result": {"any": "thing"},
        "timestamp": time.time(),
        "status": "completed",
    }
    results.send("t1", message)
    assert results.receive("t1") == message
    with pytest.raises(TypeError, match="Message does not conform to TaskResultMessage"):
        results.send("t2", {"task_id": "t2"})


def test_registry_unknown_name_is_config_error(channel: MemoryChannel) -> None:
    with pytest.raises(ConfigError, match="no-such-type"):
        ChannelTypeRegistry.create_channel(channel, "no-such-type")


def test_registry_register_custom_type(channel: MemoryChannel) -> None:
    ChannelTypeRegistry.register("test_channels.point", Point)
    assert ChannelTypeRegistry.get("test_channels.point") is Point
    typed = ChannelTypeRegistry.create_channel(channel, "test_channels.point")
    assert typed.message_type is Point
    with pytest.raises(ValueError, match="TypedDict"):
        ChannelTypeRegistry.register("test_channels.bad", dict)


# --------------------------------------------------------------------------- factory


def test_factory_creates_memory_channels() -> None:
    ch = ChannelFactory.create_channel("memory", "session-1", host="ignored")
    assert isinstance(ch, MemoryChannel)
    assert ch.name == "session-1"
    assert ChannelFactory.is_backend_available("memory")
    assert "memory" in ChannelFactory.get_available_backends()


def test_factory_unknown_backend_is_config_error() -> None:
    available = ChannelFactory.get_available_backends()
    with pytest.raises(ConfigError) as info:
        ChannelFactory.create_channel("nosuch", "n")
    assert str(info.value) == f"Unsupported backend 'nosuch'. Available backends: {available}"
    assert not ChannelFactory.is_backend_available("nosuch")


class RecordingChannel(DictChannel):
    """A custom backend that records its constructor options."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name)
        self.options = options


def test_factory_register_custom_backend() -> None:
    ChannelFactory.register_backend("test-recording", RecordingChannel)
    try:
        assert ChannelFactory.is_backend_available("test-recording")
        assert "test-recording" in ChannelFactory.get_available_backends()
        ch = ChannelFactory.create_channel("test-recording", "n", db=3)
        assert isinstance(ch, RecordingChannel)
        assert ch.name == "n"
        assert ch.options == {"db": 3}
    finally:
        ChannelFactory.unregister_backend("test-recording")
    assert not ChannelFactory.is_backend_available("test-recording")
    with pytest.raises(ConfigError):
        ChannelFactory.create_channel("test-recording", "n")


@pytest.mark.parametrize("not_a_channel", [dict, object, MemoryChannel("instance"), "memory"])
def test_factory_rejects_non_channel_backends(not_a_channel: Any) -> None:
    with pytest.raises(TypeError, match="Channel"):
        ChannelFactory.register_backend("test-bad", not_a_channel)
    assert not ChannelFactory.is_backend_available("test-bad")
