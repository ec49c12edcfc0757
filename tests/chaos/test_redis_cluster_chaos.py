"""Chaos on a Redis Cluster: workers SIGKILLed mid-run on a 3-master cluster, and a master
SIGKILLed mid-run on a 3-master, 3-replica cluster whose replica takes over. Either run
must end like an unkilled one: every task completed once in the result, the same values.

The helpers (marks, the chaos workflow, the reference run) are those of test_redis_chaos.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from graflow.redis import keys
from tests.chaos.test_redis_chaos import (
    RUN_TIMEOUT_S,
    Marks,
    assert_same_run,
    chaos_run,
    new_queue,
    node,
    reference_run,
    wait_for,
)
from tests.redis_servers import ClusterServers


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[ClusterServers]:
    """3 masters with one replica each; a master is declared failed after 1 s."""
    cluster = ClusterServers(tmp_path / "cluster", replicas=1, node_timeout_ms=1000).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(90)
def test_sigkill_of_workers_mid_run_on_a_cluster_loses_no_task(
    redis_cluster: ClusterServers, tmp_path: Path
) -> None:
    count = 60
    marks = Marks(tmp_path)
    killed: list[int] = []
    with (
        node(redis_cluster.url, new_queue()) as served,
        chaos_run(served.url, served.queue, count, marks, 0.03) as future,
    ):
        for progress in (10, 35):
            marks.wait_finished(progress)
            pids = served.worker_pids()
            victim = random.choice(marks.busy(pids) or pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_for(
                lambda victim=victim: (
                    victim not in served.worker_pids() and len(served.worker_pids()) == 2
                ),
                "the node to replace the killed worker",
            )
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert_same_run(result, reference_run(count))
    ran_on = {pid for pids in marks.pids(marks.started).values() for pid in pids}
    assert set(killed) & ran_on, "no killed worker had run a task"
    marks.report_reruns()


def _run_id(cluster: ClusterServers) -> str:
    """The id of the one run on ``cluster`` (from its graph key)."""
    with cluster.client() as client:
        found = [k.decode() for k in client.scan_iter(match="graflow:{*}:graph")]
    assert len(found) == 1, found
    return found[0][len("graflow:{") : found[0].index("}")]


@pytest.mark.timeout(90)
def test_a_master_killed_mid_run_fails_over_and_the_run_loses_no_task(
    failover_cluster: ClusterServers, tmp_path: Path
) -> None:
    count = 60
    marks = Marks(tmp_path)
    cluster = failover_cluster
    with (
        node(cluster.url, new_queue()) as served,
        chaos_run(served.url, served.queue, count, marks, 0.03) as future,
    ):
        marks.wait_finished(15)
        # The master of the run's keys: its channel, its completions, its graph.
        victim = cluster.master_of(keys.run_prefix(_run_id(cluster)))
        replica = cluster.replica_of(victim)
        cluster.kill(victim)
        finished_at_kill = marks.finished_count()
        survivors = [port for port in cluster.ports if port != victim]
        wait_for(
            lambda: cluster.node_client(replica).execute_command("ROLE")[0] == b"master",
            "the replica to be promoted",
        )
        cluster.wait_until_ok(survivors, replicated=False)
        print(f"finished at the kill: {finished_at_kill}, after the failover: "
              f"{marks.finished_count()} of {count + 1}")  # fmt: skip
        assert finished_at_kill < count + 1, "the run was over before the kill"
        marks.gate.touch()
        result = future.result(timeout=RUN_TIMEOUT_S)

    assert_same_run(result, reference_run(count))
    assert len(marks.pids(marks.finished)) == count + 1
    marks.report_reruns()
