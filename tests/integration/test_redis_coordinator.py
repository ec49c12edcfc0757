"""RedisCoordinator on a real redis-server: idempotent counts, wake-ups, timeouts, cleanup."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from graflow.exceptions import BackendError, BackendUnavailable, BarrierTimeout, PoisonMessage
from graflow.redis import coordinator as coordinator_module
from graflow.redis import keys
from graflow.redis.coordinator import RedisCoordinator, record_task_completion
from graflow.redis.signing import Signer
from tests.conftest import RedisServer

SECRET = b"coordinator test secret, 32 byte"
JOIN_DEADLINE_S = 30.0


@pytest.fixture
def signer() -> Signer:
    return Signer(SECRET)


@pytest.fixture
def coordinator(redis_client: redis.Redis, run_id: str, signer: Signer) -> RedisCoordinator:
    return RedisCoordinator(redis_client, run_id, signer=signer)


class Waiter:
    """``wait_barrier`` on a thread, keeping what it raised."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - join() re-raises it in the test
            self.error = exc

    def join(self) -> None:
        self.thread.join(JOIN_DEADLINE_S)
        assert not self.thread.is_alive(), "wait_barrier did not return"
        if self.error is not None:
            raise self.error


def _wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _subscribers(client: redis.Redis, run_id: str, group_id: str) -> int:
    channel = keys.barrier_channel(run_id, group_id)
    return int(dict(client.pubsub_numsub(channel))[channel.encode()])


def _barrier_keys(client: redis.Redis, run_id: str, group_id: str) -> list[bytes]:
    pattern = keys.barrier(run_id, group_id).replace("{", "\\{").replace("}", "\\}") + ":*"
    return list(client.scan_iter(match=pattern))


@pytest.fixture
def slow_polling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Polls so rare that only a pub/sub message can end a wait within the test's deadline."""
    monkeypatch.setattr(coordinator_module, "_FIRST_POLL_S", 3600.0)
    monkeypatch.setattr(coordinator_module, "_MAX_POLL_S", 3600.0)
    yield


def test_a_barrier_completes_with_every_member(coordinator: RedisCoordinator) -> None:
    coordinator.create_barrier("g", 3)
    assert coordinator.record_completion("g", "a", True) is True
    assert coordinator.record_completion("g", "b", False, "b broke") is True
    assert coordinator.record_completion("g", "c", True) is True
    coordinator.wait_barrier("g", timeout_s=5)
    results = coordinator.get_results("g")
    assert sorted(results) == ["a", "b", "c"]
    assert results["a"].success and results["c"].success
    assert not results["b"].success
    assert results["b"].error_message == "b broke"
    assert results["b"].task_id == "b"
    assert results["a"].timestamp > 0


def test_repeated_completions_count_once(coordinator: RedisCoordinator) -> None:
    coordinator.create_barrier("g", 3)
    assert coordinator.record_completion("g", "a", True)
    assert not coordinator.record_completion("g", "a", True)
    assert not coordinator.record_completion("g", "a", False, "a later report")
    assert coordinator.record_completion("g", "b", True)
    for _ in range(3):
        coordinator.record_completion("g", "b", True)
    assert coordinator.count("g") == (2, 3)
    with pytest.raises(BarrierTimeout, match="2 of 3"):
        coordinator.wait_barrier("g", timeout_s=0.2)
    coordinator.record_completion("g", "c", True)
    coordinator.wait_barrier("g", timeout_s=5)
    results = coordinator.get_results("g")
    assert len(results) == 3
    assert results["a"].success and results["a"].error_message is None


def test_completions_replayed_from_many_threads(coordinator: RedisCoordinator) -> None:
    members = [f"t{i}" for i in range(20)]
    coordinator.create_barrier("g", len(members))
    new: list[bool] = []

    def replay() -> None:
        new.extend(coordinator.record_completion("g", m, True) for m in members)

    threads = [threading.Thread(target=replay) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_DEADLINE_S)
    assert new.count(True) == len(members)
    assert coordinator.count("g") == (20, 20)
    coordinator.wait_barrier("g", timeout_s=5)


def test_a_waiter_is_woken_by_pub_sub(
    coordinator: RedisCoordinator, redis_client: redis.Redis, run_id: str, slow_polling: None
) -> None:
    coordinator.create_barrier("g", 2)
    waiter = Waiter(lambda: coordinator.wait_barrier("g"))
    _wait_until(lambda: _subscribers(redis_client, run_id, "g") == 1)
    coordinator.record_completion("g", "a", True)
    coordinator.record_completion("g", "b", True)
    waiter.join()
    assert _subscribers(redis_client, run_id, "g") == 0


def test_a_lost_notification_is_caught_by_polling(
    coordinator: RedisCoordinator,
    redis_client: redis.Redis,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    coordinator.create_barrier("g", 2)
    waiter = Waiter(lambda: coordinator.wait_barrier("g"))
    _wait_until(lambda: _subscribers(redis_client, run_id, "g") == 1)
    # Completions now publish on a channel nobody listens to: the message is lost.
    monkeypatch.setattr(keys, "barrier_channel", lambda run, group: f"nowhere:{run}:{group}")
    coordinator.record_completion("g", "a", True)
    coordinator.record_completion("g", "b", True)
    waiter.join()


def test_a_dropped_subscription_is_survived(
    coordinator: RedisCoordinator, redis_client: redis.Redis, run_id: str
) -> None:
    coordinator.create_barrier("g", 1)
    waiter = Waiter(lambda: coordinator.wait_barrier("g"))
    _wait_until(lambda: _subscribers(redis_client, run_id, "g") == 1)
    redis_client.client_kill_filter(_type="pubsub")
    coordinator.record_completion("g", "a", True)
    waiter.join()


def test_completions_before_the_wait_are_seen(
    coordinator: RedisCoordinator, slow_polling: None
) -> None:
    coordinator.create_barrier("g", 1)
    coordinator.record_completion("g", "a", True)
    coordinator.wait_barrier("g")


def test_an_empty_group_needs_no_wait(coordinator: RedisCoordinator) -> None:
    coordinator.create_barrier("g", 0)
    coordinator.wait_barrier("g", timeout_s=0)
    assert coordinator.get_results("g") == {}


def test_a_timeout_raises_barrier_timeout(coordinator: RedisCoordinator, run_id: str) -> None:
    coordinator.create_barrier("g", 2)
    coordinator.record_completion("g", "a", True)
    with pytest.raises(BarrierTimeout) as caught:
        coordinator.wait_barrier("g", timeout_s=0.1)
    assert "'g'" in str(caught.value) and run_id in str(caught.value)
    assert "1 of 2" in str(caught.value)
    with pytest.raises(BarrierTimeout):
        coordinator.wait_barrier("g", timeout_s=0)


def test_waiting_on_a_missing_barrier_raises(coordinator: RedisCoordinator) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        coordinator.wait_barrier("never-created", timeout_s=5)
    coordinator.create_barrier("g", 1)
    coordinator.cleanup_barrier("g")
    with pytest.raises(BackendError, match="does not exist"):
        coordinator.wait_barrier("g")


def test_every_barrier_key_expires_and_cleanup_removes_them(
    coordinator: RedisCoordinator, redis_client: redis.Redis, run_id: str
) -> None:
    coordinator.create_barrier("g", 2)
    coordinator.record_completion("g", "a", True)
    names = _barrier_keys(redis_client, run_id, "g")
    assert len(names) == 3
    for name in names:
        assert redis_client.pttl(name) > 0, name
    coordinator.cleanup_barrier("g")
    assert _barrier_keys(redis_client, run_id, "g") == []


def test_create_barrier_starts_afresh(coordinator: RedisCoordinator) -> None:
    coordinator.create_barrier("g", 1)
    coordinator.record_completion("g", "old", True)
    coordinator.create_barrier("g", 2)
    assert coordinator.count("g") == (0, 2)
    assert coordinator.get_results("g") == {}
    with pytest.raises(ValueError):
        coordinator.create_barrier("g", -1)


def test_groups_and_runs_do_not_collide(
    redis_client: redis.Redis, run_id: str, signer: Signer
) -> None:
    first = RedisCoordinator(redis_client, run_id, signer=signer)
    second = RedisCoordinator(redis_client, f"{run_id}-other", signer=signer)
    for coordinator in (first, second):
        coordinator.create_barrier("g", 1)
        coordinator.create_barrier("h", 1)
    first.record_completion("g", "a", True)
    assert first.count("g") == (1, 1)
    assert first.count("h") == (0, 1)
    assert second.count("g") == (0, 1)
    for coordinator in (first, second):
        coordinator.cleanup_barrier("g")
        coordinator.cleanup_barrier("h")


def test_record_task_completion_helper(
    coordinator: RedisCoordinator, redis_client: redis.Redis, run_id: str, signer: Signer
) -> None:
    coordinator.create_barrier("g", 1)
    for new in (True, False):
        recorded = record_task_completion(
            redis_client, run_id, "a", "g", False, "boom", signer=signer
        )
        assert recorded is new
    coordinator.wait_barrier("g", timeout_s=5)
    assert coordinator.get_results("g")["a"].error_message == "boom"


def test_forged_completions_are_rejected(
    coordinator: RedisCoordinator, redis_client: redis.Redis, run_id: str
) -> None:
    coordinator.create_barrier("g", 1)
    forged = Signer(b"an attacker's secret, 32 bytes..").sign(
        b'{"task_id":"a","success":true,"error_message":null,"timestamp":1.0}'
    )
    redis_client.hset(keys.barrier_results(run_id, "g"), "a", forged)
    with pytest.raises(PoisonMessage, match="bad signature"):
        coordinator.get_results("g")
    redis_client.hset(keys.barrier_results(run_id, "g"), "a", coordinator._signer.sign(b"[1]"))
    with pytest.raises(PoisonMessage, match="malformed"):
        coordinator.get_results("g")


def test_a_wait_rides_out_a_redis_restart(
    redis_server: RedisServer, run_id: str, signer: Signer
) -> None:
    redis_server.restart("--appendonly", "yes", "--appendfsync", "always")
    client = redis_server.client()
    try:
        coordinator = RedisCoordinator(client, run_id, signer=signer)
        coordinator.create_barrier("g", 1)
        waiter = Waiter(lambda: coordinator.wait_barrier("g", timeout_s=JOIN_DEADLINE_S))
        _wait_until(lambda: _subscribers(client, run_id, "g") == 1)
        redis_server.restart()  # SIGTERM, then the same arguments: the AOF keeps the barrier
        coordinator.record_completion("g", "a", True)
        waiter.join()
        assert coordinator.get_results("g")["a"].success
    finally:
        client.close()
        redis_server.restart("--appendonly", "no")


def test_a_wait_gives_up_when_redis_stays_down(
    redis_server: RedisServer, run_id: str, signer: Signer
) -> None:
    client = redis_server.client(retry=Retry(NoBackoff(), 0))  # fail fast while it is down
    coordinator = RedisCoordinator(client, run_id, signer=signer, max_outage_s=0.5)
    coordinator.create_barrier("g", 1)
    waiter = Waiter(lambda: coordinator.wait_barrier("g"))
    _wait_until(lambda: _subscribers(client, run_id, "g") == 1)
    redis_server.stop()
    try:
        with pytest.raises(BackendUnavailable, match=r"unreachable for over 0\.5 s"):
            waiter.join()
    finally:
        redis_server.start()
        client.close()
