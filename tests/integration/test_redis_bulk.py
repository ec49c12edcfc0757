"""Large values against a real redis-server: sent and received without copies, exactly.

Covers ``graflow.redis.bulk`` (SET of parts, GET straight off the socket) on both protocols,
the channel's use of it (bytes, signed pickles, snapshots, forged large values), and the
one-round-trip write-and-wait of producer and worker when Redis drops them mid-wait.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import graflow
from graflow.core.task import TaskWrapper
from graflow.core.workflow import workflow
from graflow.exceptions import PoisonMessage
from graflow.redis import bulk, keys
from graflow.redis.channel import RedisChannel
from graflow.redis.node import NodeSettings, RedisWorker
from graflow.redis.queue import RedisTaskQueue
from graflow.redis.signing import Signer
from tests.conftest import RedisServer

SECRET = b"bulk test secret, 32 bytes long."
LARGE = bulk.LARGE_BYTES + 12_345
DEADLINE_S = 20.0


class Canary:
    """Unpickling this creates a file: proof that a blob was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if not redis_server.is_running():  # a chaos test stopped it
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url, protocol=request.param)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def channel(client: redis.Redis, run_id: str) -> Iterator[RedisChannel]:
    ch = RedisChannel(run_id, redis_client=client, signer=Signer(SECRET))
    yield ch
    ch.clear()


def pattern(size: int, seed: int = 7) -> bytes:
    """``size`` bytes that are not all alike, so a shifted or truncated copy shows."""
    unit = bytes((seed * i + i // 251) % 256 for i in range(4096))
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("size", [0, 1, 100, 70_000, LARGE])
def test_parts_round_trip_exactly(client: redis.Redis, run_id: str, size: int) -> None:
    name = keys.channel(run_id, "value")
    value = pattern(size)
    bulk.set_parts(client, name, [b"#m:", value], px=60_000)
    assert client.get(name) == b"#m:" + value
    assert 0 < client.pttl(name) <= 60_000
    assert bulk.get_string(client, name, b"#m:") == (True, value)
    assert bulk.get_string(client, name) == (False, b"#m:" + value)
    client.delete(name)


def test_a_value_without_the_marker_comes_back_whole(client: redis.Redis, run_id: str) -> None:
    name = keys.channel(run_id, "value")
    for value in (b"#", b"#x", b"#m", pattern(LARGE), b"#m" + pattern(LARGE)):
        client.set(name, value)
        assert bulk.get_string(client, name, b"#m:") == (False, value)
    client.delete(name)


def test_missing_keys_and_other_types(client: redis.Redis, run_id: str) -> None:
    name = keys.channel(run_id, "value")
    assert bulk.get_string(client, name, b"#m:") is None
    client.rpush(name, b"a", b"b")
    with pytest.raises(bulk.WrongType):
        bulk.get_string(client, name, b"#m:")
    client.delete(name)
    with pytest.raises(redis.ResponseError):
        bulk.set_parts(client, name, [b"x"], px=0)  # Redis refuses a zero TTL


def test_the_connection_stays_usable_after_every_kind_of_reply(
    client: redis.Redis, run_id: str
) -> None:
    name = keys.channel(run_id, "value")
    big = pattern(LARGE)
    client.set(name, big)
    for _ in range(3):
        assert bulk.get_string(client, name) == (False, big)
        assert client.ping()
    client.delete(name)
    assert bulk.get_string(client, name) is None
    client.rpush(name, b"a")
    with pytest.raises(bulk.WrongType):
        bulk.get_string(client, name)
    assert client.lrange(name, 0, -1) == [b"a"]
    client.delete(name)
    client.set(name, b"small")
    assert bulk.get_string(client, name) == (False, b"small")
    assert client.get(name) == b"small"
    client.delete(name)


def test_the_channel_round_trips_large_values(channel: RedisChannel) -> None:
    big = pattern(LARGE)
    text = "é" * (LARGE // 2)
    channel.set("bytes", big)
    channel.set("marked", b"#b:" + big)
    channel.update({"text": text, "mapping": {"k": big}, "small": b"s"})
    assert channel.get("bytes") == big
    assert channel.get("marked") == b"#b:" + big
    assert channel.get("text") == text
    assert channel.get("mapping") == {"k": big}
    assert channel.get("small") == b"s"
    channel.set("items", [big, 1])
    assert channel.snapshot() == {
        "bytes": big,
        "marked": b"#b:" + big,
        "text": text,
        "mapping": {"k": big},
        "small": b"s",
        "items": [big, 1],
    }


def test_a_forged_large_value_is_poison_and_never_unpickled(
    channel: RedisChannel, client: redis.Redis, tmp_path: Path
) -> None:
    canary = tmp_path / "unpickled"
    forged = pickle.dumps((pattern(LARGE), Canary(canary)))
    assert len(forged) >= bulk.LARGE_BYTES
    client.set(keys.channel(channel.name, "forged"), forged)
    client.sadd(keys.channel_index(channel.name), "forged")  # a forger can write the index too
    with pytest.raises(PoisonMessage):
        channel.get("forged")
    with pytest.raises(PoisonMessage):
        channel.snapshot()
    assert not canary.exists()


def test_items_are_queued_once_when_redis_drops_the_producer_while_it_waits(
    client: redis.Redis, run_id: str
) -> None:
    queue = RedisTaskQueue(client, f"bulk-{run_id}")
    queue.ensure_group()
    submitted = threading.Event()
    outcome: list[BaseException | Any] = []

    def wait() -> None:
        try:
            outcome.append(
                queue.submit_and_read(
                    run_id, [b"one", b"two"], keys.done(run_id), b"0-0", 15_000, submitted.set
                )
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    assert submitted.wait(DEADLINE_S)
    killed = 0
    while not killed:  # the waiting connection, once it blocks
        for info in client.client_list():
            if info.get("cmd") == "xread":
                killed += client.client_kill_filter(_id=info["id"])
    thread.join(DEADLINE_S)
    assert len(outcome) == 1
    assert isinstance(outcome[0], redis.ConnectionError)
    assert queue.depth() == 2
    client.delete(queue.stream)


def answer() -> int:
    return 42


def kill_clients_running(client: redis.Redis, command: str) -> int:
    """CLIENT KILL every connection whose current command is ``command``."""
    killed = 0
    for info in client.client_list():
        if info.get("cmd") == command:
            killed += client.client_kill_filter(_id=info["id"])
    return killed


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_worker_dropped_while_it_waits_does_not_hand_back_finished_entries(
    redis_server: RedisServer, run_id: str
) -> None:
    if not redis_server.is_running():
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    queue = f"bulk-{run_id}"
    settings = NodeSettings(url=redis_server.url, queue=queue, node_id=run_id, block_ms=20_000)
    worker = RedisWorker(settings, Signer(SECRET), f"{run_id}:0")
    serving = threading.Thread(target=worker.serve)
    serving.start()
    try:
        with workflow("answer") as wf:
            TaskWrapper("answer", answer)
        result = graflow.run(wf, redis=redis_server.url, queue=queue, secret=SECRET)
        assert result.value == 42
        # The worker now waits for its next entry in the round trip that wrote the outcome.
        wait_for(lambda: kill_clients_running(client, "xreadgroup"), "the worker to wait")
        wait_for(lambda: worker.tasks_done == 1 and not worker.in_hand, "the outcome to count")
        # Back from the outage, it waits again: by then it handed back what it still held.
        wait_for(lambda: any(i.get("cmd") == "xreadgroup" for i in client.client_list()), "a wait")
        stream = keys.queue_stream(queue)
        assert client.xlen(stream) == 0
        assert client.xpending(stream, keys.queue_group)["pending"] == 0
        assert worker.tasks_done == 1
    finally:
        worker.stop()
        wait_for(
            lambda: kill_clients_running(client, "xreadgroup") or not serving.is_alive(), "stop"
        )
        serving.join(DEADLINE_S)
        client.delete(keys.queue_stream(queue), keys.dead_letters(queue))
        client.close()
