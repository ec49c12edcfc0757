"""RedisChannel against a real redis-server: exact values, TTLs, lists, counters, locks, trust."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import multiprocessing
import pickle
import time
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from graflow.channels.factory import ChannelFactory
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.task import TaskWrapper
from graflow.core.workflow import workflow
from graflow.exceptions import BackendError, BackendUnavailable, ConfigError, PoisonMessage
from graflow.redis import bulk, keys, signing
from graflow.redis.channel import DEFAULT_TTL_S, RedisChannel
from graflow.redis.signing import Signer, load_secret
from tests.conftest import RedisServer

SECRET = b"channel test secret, 32 bytes.."
PROCESS_DEADLINE_S = 60.0


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: tuple[float, ...]


class Color(enum.IntEnum):
    RED = 1


class Canary:
    """Unpickling this creates a file: proof that a blob was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture
def signer() -> Signer:
    return Signer(SECRET)


@pytest.fixture
def channel(redis_client: redis.Redis, run_id: str, signer: Signer) -> Iterator[RedisChannel]:
    ch = RedisChannel(run_id, redis_client=redis_client, signer=signer)
    yield ch
    ch.clear()
    ch.close()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG config home holding the default secret file (inherited by children)."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _run_keys(client: redis.Redis, run_id: str) -> list[bytes]:
    pattern = keys.run_prefix(run_id).replace("{", "\\{").replace("}", "\\}") + ":*"
    return sorted(client.scan_iter(match=pattern))


def _join_all(processes: list[Any]) -> None:
    deadline = time.monotonic() + PROCESS_DEADLINE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, "worker processes did not finish in time"
    assert [p.exitcode for p in processes] == [0] * len(processes)


# -- exact values -----------------------------------------------------------------------------

VALUES: list[Any] = [
    0,
    -7,
    2**63 - 1,
    -(2**63),
    2**70,
    0.1,
    -0.0,
    1e300,
    math.inf,
    -math.inf,
    "",
    "42",
    "#f:1.5",
    "#l:",
    "héllo\n\x00",
    b"\x00\xff",
    None,
    True,
    False,
    (1, "a", (2.5,)),
    (),
    [1, (2, 3), [4], [], {"k": (5,)}],
    [],
    [[]],
    {1: "int key", (2, 3): "tuple key", "s": {4, 5}},
    frozenset({1, 2}),
    dt.date(2024, 2, 29),
    dt.datetime(2024, 1, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.timedelta(seconds=1.5),
    Decimal("1.10"),
    Fraction(1, 3),
    complex(1, -2),
    Point(1, (2.0, 3.5)),
    Color.RED,
    range(3),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_exactly(channel: RedisChannel, value: Any) -> None:
    channel.set("v", value)
    got = channel.get("v")
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)
    if isinstance(value, list):
        assert [type(item) for item in got] == [type(item) for item in value]


def test_nan_and_exceptions_round_trip(channel: RedisChannel) -> None:
    channel.set("nan", math.nan)
    assert math.isnan(channel.get("nan"))
    channel.set("err", ValueError("boom", 3))
    err = channel.get("err")
    assert type(err) is ValueError and err.args == ("boom", 3)


def test_missing_keys_and_basic_operations(channel: RedisChannel) -> None:
    marker = object()
    assert channel.get("nope") is None
    assert channel.get("nope", marker) is marker
    assert not channel.exists("nope")
    assert channel.delete("nope") is False
    channel.set("k", None)
    assert channel.exists("k")
    assert channel.get("k", marker) is None
    assert channel.delete("k") is True
    assert not channel.exists("k")
    assert channel.ping() is True


def test_update_and_snapshot(channel: RedisChannel) -> None:
    data = {"a": 1, "b": (2,), "c": [3, "x"], "d": [], "e": 0.5, "f": {"g": None}}
    channel.update(data)
    channel.append("l", "item")
    assert channel.snapshot() == {**data, "l": ["item"]}
    assert sorted(channel.keys()) == sorted([*data, "l"])
    channel.clear()
    assert channel.snapshot() == {}
    assert channel.keys() == []


def test_a_client_that_decodes_responses_is_not_a_problem(
    redis_server: RedisServer, run_id: str, signer: Signer
) -> None:
    client = redis_server.client(decode_responses=True)
    channel = RedisChannel(run_id, redis_client=client, signer=signer)
    channel.set("t", (1, b"x"))
    assert channel.get("t") == (1, b"x")
    channel.clear()
    channel.close()
    assert client.ping()
    client.close()


# -- TTLs ------------------------------------------------------------------------------------


def _assert_every_key_expires(client: redis.Redis, run_id: str) -> None:
    names = _run_keys(client, run_id)
    assert names
    for name in names:
        assert client.pttl(name) > 0, name


def test_every_kind_of_write_leaves_a_ttl(
    channel: RedisChannel, redis_client: redis.Redis, run_id: str
) -> None:
    writes = [
        lambda: channel.set("plain", "x"),
        lambda: channel.set("num", 3),
        lambda: channel.set("flt", 3.5),
        lambda: channel.set("list", [1, 2]),
        lambda: channel.set("empty", []),
        lambda: channel.set("short", "x", ttl=30),
        lambda: channel.update({"u1": 1, "u2": [1], "u3": "s"}),
        lambda: channel.append("app", 1),
        lambda: channel.prepend("pre", 1),
        lambda: channel.append("empty", 1),
        lambda: channel.atomic_add("new-counter", 1),
        lambda: channel.atomic_add("new-float", 0.5),
        lambda: channel.atomic_add("num", 2),
        lambda: channel.atomic_add("flt", 1),
    ]
    for write in writes:
        write()
        _assert_every_key_expires(redis_client, run_id)
    with channel.lock("held"):
        assert redis_client.pttl(keys.lock(run_id, "held")) > 0
        _assert_every_key_expires(redis_client, run_id)


def test_default_ttl_and_per_call_ttl(
    redis_client: redis.Redis, run_id: str, signer: Signer
) -> None:
    channel = RedisChannel(run_id, redis_client=redis_client, signer=signer, ttl_s=1000)
    channel.set("default", 1)
    channel.set("override", 1, ttl=5)
    channel.append("list", 1, ttl=7.5)
    assert 990_000 < redis_client.pttl(keys.channel(run_id, "default")) <= 1_000_000
    assert 0 < redis_client.pttl(keys.channel(run_id, "override")) <= 5_000
    assert 0 < redis_client.pttl(keys.channel(run_id, "list")) <= 7_500
    channel.clear()


def test_counters_and_lists_keep_their_ttl(
    channel: RedisChannel, redis_client: redis.Redis, run_id: str
) -> None:
    channel.set("n", 1, ttl=5)
    channel.atomic_add("n", 1)
    channel.atomic_add("n", 0.5)
    assert 0 < redis_client.pttl(keys.channel(run_id, "n")) <= 5_000
    channel.append("l", 1, ttl=5)
    channel.append("l", 2)
    assert 0 < redis_client.pttl(keys.channel(run_id, "l")) <= 5_000
    channel.set("e", [], ttl=5)
    channel.prepend("e", 1)
    assert 0 < redis_client.pttl(keys.channel(run_id, "e")) <= 5_000
    channel.append("l", 3, ttl=100)
    assert redis_client.pttl(keys.channel(run_id, "l")) > 5_000


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, True, "5"])
def test_bad_ttls_are_refused(channel: RedisChannel, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        channel.set("k", 1, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        channel.append("k", 1, ttl=ttl)


# -- lists -----------------------------------------------------------------------------------


def test_append_prepend_and_get_on_a_list_key(channel: RedisChannel) -> None:
    assert channel.append("l", (1, "a")) == 1
    assert channel.append("l", 2.5) == 2
    assert channel.prepend("l", None) == 3
    assert channel.append("l", []) == 4
    got = channel.get("l")
    assert got == [None, (1, "a"), 2.5, []]
    assert type(got[1]) is tuple


def test_lists_set_whole_can_grow(channel: RedisChannel) -> None:
    channel.set("l", [1, 2])
    assert channel.append("l", 3) == 3
    channel.set("e", [])
    assert channel.get("e") == []
    assert channel.exists("e")
    assert channel.prepend("e", "x") == 1
    assert channel.get("e") == ["x"]
    channel.set("l", "replaced")
    assert channel.get("l") == "replaced"


def test_append_to_a_non_list_is_a_type_error(channel: RedisChannel) -> None:
    channel.set("s", "text")
    channel.set("n", 1)
    for key in ("s", "n"):
        with pytest.raises(TypeError, match="not a list"):
            channel.append(key, 1)
        with pytest.raises(TypeError, match="not a list"):
            channel.prepend(key, 1)
    assert channel.get("s") == "text"


# -- counters --------------------------------------------------------------------------------


def test_atomic_add_numbers(channel: RedisChannel) -> None:
    assert channel.atomic_add("i") == 1
    assert channel.atomic_add("i", 41) == 42
    assert type(channel.get("i")) is int
    channel.set("i2", 10)
    assert channel.atomic_add("i2", -3) == 7
    channel.set("f", 0.1)
    total = channel.atomic_add("f", 0.2)
    assert total == 0.1 + 0.2 and type(total) is float
    assert channel.get("f") == 0.1 + 0.2
    assert channel.atomic_add("i2", 0.5) == 7.5
    assert type(channel.get("i2")) is float
    assert channel.atomic_add("inf", math.inf) == math.inf
    channel.set("big", 2**62)
    assert channel.atomic_add("big", 2**62 - 1) == 2**63 - 1


def test_atomic_add_refuses_what_is_not_a_number(channel: RedisChannel) -> None:
    channel.set("s", "5")
    channel.set("b", True)
    channel.append("l", 1)
    channel.set("huge", 2**70)
    for key in ("s", "b", "l", "huge"):
        with pytest.raises(TypeError, match="expected int or float"):
            channel.atomic_add(key, 1)
    for amount in (True, "1", None):
        with pytest.raises(TypeError, match="amount"):
            channel.atomic_add("n", amount)  # type: ignore[arg-type]
    assert not channel.exists("n")
    channel.set("max", 2**63 - 1)
    with pytest.raises(OverflowError):
        channel.atomic_add("max", 1)
    with pytest.raises(OverflowError):
        channel.atomic_add("n", 2**64)
    assert channel.get("max") == 2**63 - 1


def _add_many(url: str, run_id: str, count: int) -> None:
    channel = RedisChannel(run_id, url=url, signer=Signer(SECRET))
    for _ in range(count):
        channel.atomic_add("counter", 1)
        channel.atomic_add("float-counter", 0.5)
    channel.close()


def test_atomic_add_from_four_processes(
    channel: RedisChannel, redis_server: RedisServer, run_id: str
) -> None:
    channel.set("float-counter", 0.0)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_add_many, args=(redis_server.url, run_id, 250)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    _join_all(processes)
    assert channel.get("counter") == 1000
    assert channel.get("float-counter") == 500.0


# -- locks -----------------------------------------------------------------------------------


def _increment_under_lock(url: str, run_id: str, count: int) -> None:
    channel = RedisChannel(run_id, url=url, signer=Signer(SECRET))
    for _ in range(count):
        with channel.lock("counter", timeout=PROCESS_DEADLINE_S):
            if channel.atomic_add("inside", 1) != 1:
                channel.atomic_add("overlaps", 1)
            channel.set("total", channel.get("total") + 1)  # lost updates unless exclusive
            channel.atomic_add("inside", -1)
    channel.close()


def test_lock_is_exclusive_across_processes(
    channel: RedisChannel, redis_server: RedisServer, run_id: str
) -> None:
    channel.set("total", 0)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_increment_under_lock, args=(redis_server.url, run_id, 25))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    _join_all(processes)
    assert channel.get("total") == 100
    assert channel.get("overlaps") is None


def test_lock_timeout_and_release(
    channel: RedisChannel, redis_client: redis.Redis, run_id: str, signer: Signer
) -> None:
    other = RedisChannel(run_id, redis_client=redis_client, signer=signer)
    with channel.lock("l"):
        with pytest.raises(TimeoutError, match="'l'"):
            with other.lock("l", timeout=0.05):
                pass
        with other.lock("another", timeout=0):
            pass
    with other.lock("l", timeout=0):
        pass
    assert not redis_client.exists(keys.lock(run_id, "l"))
    with pytest.raises(RuntimeError, match="body"):
        with channel.lock("l"):
            raise RuntimeError("body")
    assert not redis_client.exists(keys.lock(run_id, "l"))


def test_a_lease_that_ran_out_is_reported(channel: RedisChannel, redis_client: redis.Redis) -> None:
    name = keys.lock(channel.name, "short")
    with pytest.raises(BackendError, match="expired while held"):
        with channel.lock("short", lease_s=0.05):
            deadline = time.monotonic() + 10
            while redis_client.exists(name) and time.monotonic() < deadline:
                time.sleep(0.01)


# -- the run's index: no SCAN, never KEYS ------------------------------------------------------


def test_keys_clear_and_snapshot_read_the_index_never_scan_or_keys(
    channel: RedisChannel, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other applications' keys in the same database: the channel never walks them.
    redis_client.mset({f"app:{i}": i for i in range(5000)})
    data = {f"k{i}": i for i in range(1234)}
    channel.update(data)
    commands: list[str] = []
    original = redis_client.execute_command

    def recording(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]).upper())
        return original(*args, **kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("KEYS must never be used")

    monkeypatch.setattr(redis_client, "execute_command", recording)
    monkeypatch.setattr(redis.Redis, "keys", forbidden)
    assert sorted(channel.keys()) == sorted(data)
    assert channel.snapshot() == data
    channel.clear()
    assert channel.keys() == []
    assert "SSCAN" in commands
    assert "SCAN" not in commands
    assert "KEYS" not in commands
    assert "UNLINK" in commands
    assert not redis_client.exists(keys.channel_index(channel.name))
    assert not redis_client.exists(keys.channel_index_custom(channel.name))
    redis_client.delete(*[f"app:{i}" for i in range(5000)])


def test_every_kind_of_write_is_indexed(channel: RedisChannel) -> None:
    channel.set("plain", {"a": 1})
    channel.set("listed", [1, 2])
    channel.set("big", b"x" * (3 * 1024 * 1024))
    channel.update({"u1": 1, "u2": [3]})
    channel.append("appended", "x")
    channel.prepend("prepended", "y")
    channel.atomic_add("counter", 2)
    channel.atomic_add("ratio", 0.5)
    expected = {"plain", "listed", "big", "u1", "u2", "appended", "prepended", "counter", "ratio"}
    assert set(channel.keys()) == expected
    assert set(channel.snapshot()) == expected
    assert channel.delete("plain")
    assert set(channel.keys()) == expected - {"plain"}


def test_expired_keys_are_skipped_and_the_index_outlives_every_key(
    channel: RedisChannel, redis_client: redis.Redis
) -> None:
    index = keys.channel_index(channel.name)
    custom = keys.channel_index_custom(channel.name)

    def ttl(key: str) -> int:
        return int(redis_client.pttl(keys.channel(channel.name, key)))

    channel.set("short", 1, ttl=0.05)
    channel.set("default", 2)
    assert redis_client.pttl(index) >= ttl("default")
    channel.set("long", 3, ttl=10 * DEFAULT_TTL_S)
    assert redis_client.pttl(custom) >= ttl("long")
    channel.append("long-list", 4, ttl=20 * DEFAULT_TTL_S)
    assert redis_client.pttl(custom) >= ttl("long-list") > ttl("long")
    channel.set("default-again", 5)  # a default write never shortens the custom index
    channel.atomic_add("n", 1)
    assert redis_client.pttl(custom) >= ttl("long-list")
    time.sleep(0.1)
    assert sorted(channel.keys()) == ["default", "default-again", "long", "long-list", "n"]
    assert channel.snapshot() == {
        "default": 2,
        "default-again": 5,
        "long": 3,
        "long-list": [4],
        "n": 1,
    }


def test_runs_do_not_see_each_others_keys(
    redis_client: redis.Redis, signer: Signer, run_id: str
) -> None:
    globby = RedisChannel(f"{run_id}-*?[x]\\", redis_client=redis_client, signer=signer)
    plain = RedisChannel(f"{run_id}-abcx]\\", redis_client=redis_client, signer=signer)
    neighbour = RedisChannel(f"{run_id}-", redis_client=redis_client, signer=signer)
    globby.set("g", 1)
    plain.set("p", 2)
    neighbour.set("n", 3)
    assert globby.keys() == ["g"]
    assert plain.keys() == ["p"]
    globby.clear()
    assert plain.get("p") == 2 and neighbour.get("n") == 3
    plain.clear()
    neighbour.clear()


def test_bad_run_ids_are_refused(redis_client: redis.Redis, signer: Signer) -> None:
    for bad in ("", "a\nb", "a\0b", "a}b", "{a"):
        with pytest.raises(ConfigError):
            RedisChannel(bad, redis_client=redis_client, signer=signer)


# -- trust -----------------------------------------------------------------------------------


def test_forged_and_unsigned_values_are_poison_and_never_unpickled(
    channel: RedisChannel, redis_client: redis.Redis, run_id: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    evil = pickle.dumps(Canary(canary))
    forged = {
        "unsigned": evil,
        "other-secret": Signer(b"an attacker's secret, 32 bytes..").sign(evil),
        "tampered": channel._signer.sign(evil).replace(b"touch", b"t0uch"),
        "garbage": b"\x00not a value",
    }
    for key, blob in forged.items():
        redis_client.set(keys.channel(run_id, key), blob)
        with pytest.raises(PoisonMessage) as caught:
            channel.get(key)
        assert key in str(caught.value)
        assert SECRET.decode() not in str(caught.value)
    redis_client.rpush(keys.channel(run_id, "list"), evil)
    with pytest.raises(PoisonMessage):
        channel.get("list")
    # Whoever can write Redis can write the run's index too: the snapshot reads them.
    redis_client.sadd(keys.channel_index(run_id), *forged, "list")
    with pytest.raises(PoisonMessage):
        channel.snapshot()
    redis_client.hset(keys.channel(run_id, "hash"), "f", evil)
    with pytest.raises(PoisonMessage, match="hash"):
        channel.get("hash")
    assert not canary.exists()


def test_values_signed_with_a_previous_secret_still_read(
    redis_client: redis.Redis, run_id: str
) -> None:
    old = RedisChannel(run_id, redis_client=redis_client, signer=Signer(b"o" * 32))
    old.set("k", ("old",))
    rotated = RedisChannel(
        run_id, redis_client=redis_client, signer=Signer(b"n" * 32, previous=[b"o" * 32])
    )
    assert rotated.get("k") == ("old",)
    rotated.set("k2", ("new",))
    with pytest.raises(PoisonMessage, match="bad signature"):
        old.get("k2")
    rotated.clear()


# -- pickling and construction ---------------------------------------------------------------


def test_a_pickled_channel_holds_no_client_or_secret(channel: RedisChannel) -> None:
    channel.set("k", (1, "x"))
    data = pickle.dumps(channel)
    assert SECRET not in data
    again = pickle.loads(data)
    assert again.get("k") == (1, "x")
    again.set("k2", 2)
    assert channel.get("k2") == 2
    again.close()


def _read_pickled_channel(blob: bytes, out: Any) -> None:
    out.put(pickle.loads(blob).get("k"))


def test_another_process_unpickles_with_the_default_secret(
    redis_server: RedisServer, run_id: str, config_home: Path
) -> None:
    channel = RedisChannel(run_id, url=redis_server.url)
    channel.set("k", ("from the parent", dt.date(2024, 1, 1)))
    blob = pickle.dumps(channel)
    assert load_secret() not in blob
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_read_pickled_channel, args=(blob, out))
    process.start()
    _join_all([process])
    assert out.get(timeout=5) == ("from the parent", dt.date(2024, 1, 1))
    channel.clear()
    channel.close()


def test_unpickling_without_the_secret_is_a_config_error(
    redis_server: RedisServer, run_id: str, config_home: Path
) -> None:
    signer = Signer(b"a secret no file holds, 32 bytes")
    blob = pickle.dumps(RedisChannel(run_id, url=redis_server.url, signer=signer))
    signing._signers.pop(signer.key_id)
    with pytest.raises(ConfigError, match="no signing secret"):
        pickle.loads(blob)


def test_factory_builds_redis_channels(
    redis_server: RedisServer, redis_client: redis.Redis, run_id: str, signer: Signer
) -> None:
    assert ChannelFactory.is_backend_available("redis")
    by_client = ChannelFactory.create_channel("redis", run_id, redis_client=redis_client)
    assert isinstance(by_client, RedisChannel)
    config = {"host": redis_server.host, "port": redis_server.port, "db": 0, "key_prefix": "x"}
    by_config = ChannelFactory.create_channel("redis", run_id, signer=signer, **config)
    by_url = ChannelFactory.create_channel("redis", run_id, url=redis_server.url, signer=signer)
    by_config.set("k", [1, (2,)])
    assert by_url.get("k") == [1, (2,)]
    assert pickle.loads(pickle.dumps(by_config)).get("k") == [1, (2,)]
    by_config.clear()


def test_execution_context_runs_a_workflow_on_a_redis_channel(
    redis_client: redis.Redis, run_id: str, config_home: Path
) -> None:
    with workflow("redis-channel") as wf:
        TaskWrapper("a", lambda: (1, "one")) >> TaskWrapper("b", lambda: {dt.date(2024, 1, 1)})
    ctx = ExecutionContext.create(
        wf.graph, "a", channel_backend="redis", config={"redis_client": redis_client}
    )
    assert isinstance(ctx.channel, RedisChannel)
    WorkflowEngine().execute(ctx)
    stored = RedisChannel(ctx.session_id, redis_client=redis_client, signer=Signer(load_secret()))
    assert stored.get("a.__result__") == (1, "one")
    assert stored.get("b.__result__") == {dt.date(2024, 1, 1)}
    for task_id in ("a", "b"):
        assert redis_client.pttl(keys.channel(ctx.session_id, f"{task_id}.__result__")) > 0
    stored.clear()


def test_an_unreachable_redis_is_backend_unavailable(
    redis_server: RedisServer, run_id: str, signer: Signer
) -> None:
    dead = RedisServer(redis_server.binary, redis_server.directory)  # a port nobody serves
    client = dead.client(retry=Retry(NoBackoff(), 0))
    channel = RedisChannel(run_id, redis_client=client, signer=signer)
    with pytest.raises(BackendUnavailable):
        channel.get("k")
    with pytest.raises(BackendUnavailable):
        channel.ping()


def test_a_kept_result_is_read_without_redis_until_this_channel_writes_it(
    channel: RedisChannel, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel.set("a.__result__", [1, 2, 3])
    value = [1, 2, 3]
    channel.remember("a.__result__", value)
    calls: list[Any] = []
    monkeypatch.setattr(bulk, "get_string", lambda *args: calls.append(args))
    assert channel.get("a.__result__") is value  # the worker's own object, no GET
    assert calls == []
    monkeypatch.undo()
    for write in (
        lambda: channel.set("a.__result__", "new"),
        lambda: channel.update({"a.__result__": "new"}),
        lambda: channel.delete("a.__result__"),
        lambda: channel.append("a.__result__", "new"),
        lambda: channel.clear(),
    ):
        channel.remember("a.__result__", value)
        write()
        assert channel.get("a.__result__") is not value
    channel.remember("a.__result__", value)
    channel.remember(None)
    assert channel.get("a.__result__") is not value
