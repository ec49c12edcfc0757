"""graflow on a 3-master Redis Cluster (``redis+cluster://``): the channel and barrier suites,
runs whose every command keeps to one run's hash slot, and the operations commands.

The channel and barrier tests are those of ``test_redis_channel`` and
``test_redis_coordinator`` that need nothing but a client, collected here again with this
module's fixtures: a cluster client instead of a client of the session's redis-server.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import ClusterPipeline, RedisCluster

import graflow
from graflow import parallel, task, workflow
from graflow.core.task import TaskWrapper
from graflow.redis import keys
from graflow.redis.channel import RedisChannel
from graflow.redis.connect import connect, from_spec, spec_of
from graflow.redis.coordinator import RedisCoordinator
from graflow.redis.node import NodeSettings, RedisWorker
from graflow.redis.signing import Signer
from tests.conftest import RedisNode
from tests.integration import test_redis_channel as channel_suite
from tests.integration import test_redis_coordinator as barrier_suite
from tests.redis_servers import ClusterServers

RUN_TIMEOUT_S = 60.0
SECRET = b"cluster test secret, 32 bytes..."


@pytest.fixture
def redis_client(redis_cluster: ClusterServers) -> Iterator[RedisCluster]:
    """A cluster client returning bytes (the suites' ``redis_client``)."""
    client = redis_cluster.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def signer() -> Signer:
    return Signer(channel_suite.SECRET)


@pytest.fixture
def channel(redis_client: RedisCluster, run_id: str, signer: Signer) -> Iterator[RedisChannel]:
    ch = RedisChannel(run_id, redis_client=redis_client, signer=signer)
    yield ch
    ch.clear()
    ch.close()


@pytest.fixture
def coordinator(redis_client: RedisCluster, run_id: str, signer: Signer) -> RedisCoordinator:
    return RedisCoordinator(redis_client, run_id, signer=signer)


slow_polling = barrier_suite.slow_polling


# -- the channel suite on the cluster -------------------------------------------------------

test_values_round_trip_exactly = channel_suite.test_values_round_trip_exactly
test_nan_and_exceptions_round_trip = channel_suite.test_nan_and_exceptions_round_trip
test_missing_keys_and_basic_operations = channel_suite.test_missing_keys_and_basic_operations
test_update_and_snapshot = channel_suite.test_update_and_snapshot
test_every_kind_of_write_leaves_a_ttl = channel_suite.test_every_kind_of_write_leaves_a_ttl
test_default_ttl_and_per_call_ttl = channel_suite.test_default_ttl_and_per_call_ttl
test_counters_and_lists_keep_their_ttl = channel_suite.test_counters_and_lists_keep_their_ttl
test_append_prepend_and_get_on_a_list_key = channel_suite.test_append_prepend_and_get_on_a_list_key
test_lists_set_whole_can_grow = channel_suite.test_lists_set_whole_can_grow
test_append_to_a_non_list_is_a_type_error = channel_suite.test_append_to_a_non_list_is_a_type_error
test_atomic_add_numbers = channel_suite.test_atomic_add_numbers
test_atomic_add_refuses_what_is_not_a_number = (
    channel_suite.test_atomic_add_refuses_what_is_not_a_number
)
test_lock_timeout_and_release = channel_suite.test_lock_timeout_and_release
test_a_lease_that_ran_out_is_reported = channel_suite.test_a_lease_that_ran_out_is_reported
test_runs_do_not_see_each_others_keys = channel_suite.test_runs_do_not_see_each_others_keys
test_forged_and_unsigned_values_are_poison_and_never_unpickled = (
    channel_suite.test_forged_and_unsigned_values_are_poison_and_never_unpickled
)
test_values_signed_with_a_previous_secret_still_read = (
    channel_suite.test_values_signed_with_a_previous_secret_still_read
)
test_a_pickled_channel_holds_no_client_or_secret = (
    channel_suite.test_a_pickled_channel_holds_no_client_or_secret
)

# -- the barrier suite on the cluster -------------------------------------------------------

test_a_barrier_completes_with_every_member = (
    barrier_suite.test_a_barrier_completes_with_every_member
)
test_repeated_completions_count_once = barrier_suite.test_repeated_completions_count_once
test_completions_replayed_from_many_threads = (
    barrier_suite.test_completions_replayed_from_many_threads
)
test_completions_before_the_wait_are_seen = barrier_suite.test_completions_before_the_wait_are_seen
test_an_empty_group_needs_no_wait = barrier_suite.test_an_empty_group_needs_no_wait
test_a_timeout_raises_barrier_timeout = barrier_suite.test_a_timeout_raises_barrier_timeout
test_every_barrier_key_expires_and_cleanup_removes_them = (
    barrier_suite.test_every_barrier_key_expires_and_cleanup_removes_them
)
test_create_barrier_starts_afresh = barrier_suite.test_create_barrier_starts_afresh
test_groups_and_runs_do_not_collide = barrier_suite.test_groups_and_runs_do_not_collide
test_record_task_completion_helper = barrier_suite.test_record_task_completion_helper
test_forged_completions_are_rejected = barrier_suite.test_forged_completions_are_rejected


def _subscribers(cluster: ClusterServers, run_id: str, group_id: str) -> int:
    """Subscribers of the barrier's channel, over every node (PUBSUB NUMSUB is node-local)."""
    channel = keys.barrier_channel(run_id, group_id)
    return sum(
        int(dict(cluster.node_client(port).pubsub_numsub(channel))[channel.encode()])
        for port in cluster.ports
    )


def test_a_waiter_is_woken_by_pub_sub_on_the_cluster(
    coordinator: RedisCoordinator, redis_cluster: ClusterServers, run_id: str, slow_polling: None
) -> None:
    coordinator.create_barrier("g", 2)
    waiter = barrier_suite.Waiter(lambda: coordinator.wait_barrier("g"))
    barrier_suite._wait_until(lambda: _subscribers(redis_cluster, run_id, "g") == 1)
    coordinator.record_completion("g", "a", True)
    coordinator.record_completion("g", "b", True)
    waiter.join()  # polls are an hour apart: only the PUBLISH from the script ended the wait
    assert _subscribers(redis_cluster, run_id, "g") == 0


# -- runs on the cluster --------------------------------------------------------------------

_KEY = re.compile(rb"graflow:\{([^}]*)\}")


class CommandLog:
    """Every command this process sends through a cluster client, and the checks on them."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def record(self, args: tuple[Any, ...]) -> None:
        with self.lock:
            self.commands.append(args)

    @staticmethod
    def tags(args: tuple[Any, ...]) -> set[bytes]:
        """The hash tags of the graflow keys (and pub/sub channels) among ``args``."""
        found: set[bytes] = set()
        for arg in args:
            raw = arg.encode() if isinstance(arg, str) else arg
            if isinstance(raw, bytes) and raw.startswith(b"graflow:{"):
                found.update(_KEY.findall(raw[: raw.index(b"}") + 1]))
        return found

    def violations(self) -> list[str]:
        """Commands that use KEYS or name keys of more than one hash tag."""
        bad = []
        for args in self.commands:
            name = str(args[0]).upper()
            if name == "KEYS":
                bad.append(f"KEYS used: {args[:3]!r}")
            elif len(self.tags(args)) > 1:
                bad.append(f"{name} spans {sorted(self.tags(args))}")
        return bad


# Multi-key calls that redis-py's cluster client splits into one command per slot: checked
# as called, so that a call over two runs is caught even though no single command shows it.
_SPLIT_CALLS = {"delete": "DEL", "unlink": "UNLINK", "exists": "EXISTS", "touch": "TOUCH"}


@pytest.fixture
def command_log(monkeypatch: pytest.MonkeyPatch) -> CommandLog:
    """Records each command of every cluster client and cluster pipeline in this process."""
    log = CommandLog()
    for cls in (RedisCluster, ClusterPipeline):
        original = cls.execute_command

        def recording(self: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
            log.record(args)
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, "execute_command", recording)
    for method, command in _SPLIT_CALLS.items():
        split = getattr(RedisCluster, method)

        def recording_call(
            self: Any, *names: Any, _split: Any = split, _command: str = command
        ) -> Any:
            log.record((f"{_command} (one call)", *names))
            return _split(self, *names)

        monkeypatch.setattr(RedisCluster, method, recording_call)
    return log


def _busy_workflow(name: str) -> Any:
    """A run that uses every kind of key: channel values, lists, counters, a lock, a group,
    a task created at run time, and a result large enough to travel through the channel."""
    with workflow(name) as wf:

        @task(inject_context=True)
        def head(ctx: Any) -> int:
            channel = ctx.get_channel()
            channel.set("seen", [])
            ctx.next_task(TaskWrapper("late", lambda: "late"))
            return 1

        def member(index: int) -> TaskWrapper:
            def body(ctx: Any) -> int:
                channel = ctx.get_channel()
                channel.atomic_add("count", 1)
                channel.append("seen", index)
                with channel.lock("l"):
                    channel.set(f"v{index}", index * index)
                return index

            return TaskWrapper(f"m{index}", body, inject_context=True)

        @task(inject_context=True)
        def tail(ctx: Any) -> tuple[int, bytes]:
            channel = ctx.get_channel()
            return int(channel.get("count")), b"x" * 100_000

        head >> parallel(*(member(i) for i in range(6))) >> tail
    return wf


def test_every_command_of_a_run_keeps_to_one_run(
    redis_cluster: ClusterServers, command_log: CommandLog
) -> None:
    queue = f"q-{uuid.uuid4().hex[:12]}"
    settings = NodeSettings(url=redis_cluster.url, queue=queue, lease_ms=3000, block_ms=100)
    workers = [RedisWorker(settings, Signer(SECRET), f"in-process:{i}") for i in range(2)]
    threads = [threading.Thread(target=w.serve, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        # Two runs at once on one queue: a worker's batch may hold entries of both.
        results: dict[str, Any] = {}

        def run(name: str) -> None:
            results[name] = graflow.run(
                _busy_workflow(name),
                start="head",
                redis=redis_cluster.url,
                queue=queue,
                secret=SECRET,
                timeout_s=RUN_TIMEOUT_S,
            )

        runs = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join(RUN_TIMEOUT_S)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(10)
    assert sorted(results) == ["one", "two"]
    for result in results.values():
        assert result.value == (6, b"x" * 100_000)
        assert result.channel["seen"] and sorted(result.channel["seen"]) == list(range(6))
        assert "late" in result.completed
    run_tags = {r.run_id.encode() for r in results.values()}
    used = {tag for args in command_log.commands for tag in CommandLog.tags(args)}
    assert run_tags <= used, "the log did not see both runs' keys"
    names = {str(args[0]).upper() for args in command_log.commands}
    assert {"XADD", "XREADGROUP", "XACK", "EVALSHA", "SET", "SADD", "SSCAN"} <= names
    assert "SCAN" not in names  # a run lists its channel keys from its index
    assert command_log.violations() == []


def test_the_command_check_catches_a_command_over_two_runs(
    redis_client: RedisCluster, command_log: CommandLog
) -> None:
    """The check above is live: a DEL of two runs' keys (redis-py would split it per slot,
    hiding it from the cluster) is reported, and so is KEYS."""
    redis_client.delete(keys.meta("run-a"), keys.meta("run-b"))
    redis_client.keys(keys.run_prefix("run-a") + "*")
    violations = command_log.violations()
    assert any("DEL (ONE CALL) spans" in v for v in violations), violations
    assert any("KEYS used" in v for v in violations), violations


def test_runs_and_queues_spread_over_the_masters(redis_cluster: ClusterServers) -> None:
    with redis_cluster.client() as client:
        masters = {node.name for node in client.get_primaries()}
        run_ids = [f"run-{i}" for i in range(40)]
        queues = [f"queue-{i}" for i in range(40)]
        run_homes = {client.get_node_from_key(keys.run_prefix(r)).name for r in run_ids}
        queue_homes = {client.get_node_from_key(keys.queue_stream(q)).name for q in queues}
        assert run_homes == masters
        assert queue_homes == masters
        for run_id in run_ids[:5]:  # every key of a run is on the run's slot
            slot = client.keyslot(keys.run_prefix(run_id))
            for name in (keys.graph, keys.handlers, keys.nodes, keys.done, keys.meta):
                assert client.keyslot(name(run_id)) == slot
            for name in (keys.channel(run_id, "k"), keys.lock(run_id, "l")):
                assert client.keyslot(name) == slot
            assert client.keyslot(keys.barrier_results(run_id, "g")) == slot
        for queue in queues[:5]:
            assert client.keyslot(keys.queue_stream(queue)) == client.keyslot(
                keys.dead_letters(queue)
            )


def _graflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "graflow", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
    )


def test_status_dlq_and_checkpoints_work_on_the_cluster(
    shared_cluster_node: RedisNode, tmp_path: Any
) -> None:
    url, queue = shared_cluster_node.url, shared_cluster_node.queue
    with workflow("ops") as wf:

        @task
        def one() -> int:
            return 1

    checkpoint = f"{url}#ops-{uuid.uuid4().hex[:8]}"
    first = graflow.run(wf, redis=url, queue=queue, checkpoint=checkpoint, timeout_s=60)
    again = graflow.run(wf, redis=url, queue=queue, checkpoint=checkpoint, timeout_s=60)
    assert first.value == 1 and again.already_finished and again.value == 1
    with connect(url) as client:  # a dead letter to list
        client.xadd(keys.dead_letters(queue), {b"reason": b"test", b"raw": b"x"})
    status = _graflow("status", "--redis", url, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    mine = [q for q in report["queues"] if q["name"] == queue]
    assert mine and mine[0]["dead_letters"] == 1
    assert any(w["queue"] == queue for n in report["nodes"] for w in n["workers"]), report["nodes"]
    listed = _graflow("dlq", "list", "--redis", url, "--queue", queue, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 1
    purged = _graflow("dlq", "purge", "--yes", "--redis", url, "--queue", queue)
    assert purged.returncode == 0, purged.stderr


def test_a_pickled_cluster_channel_reconnects_to_the_cluster(
    redis_client: RedisCluster, run_id: str, signer: Signer
) -> None:
    spec = spec_of(redis_client)
    assert len(spec["cluster"]) == 3
    again = from_spec(spec)
    assert isinstance(again, RedisCluster)
    channel = RedisChannel(run_id, redis_client=redis_client, signer=signer)
    channel.set("k", (1, "x"))
    copy = pickle.loads(pickle.dumps(channel))
    assert isinstance(copy.client, RedisCluster)
    assert copy.get("k") == (1, "x")
    channel.clear()
