"""The run history of pool and Redis runs, and many processes writing one SQLite file at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import task, workflow
from graflow.cli import main
from graflow.history.model import RunDetail
from graflow.history.store import HistoryStore, SqliteHistory
from graflow.redis import keys
from graflow.redis.connect import connect
from graflow.redis.history import DEFAULT_RETENTION_S, RedisHistory

DEADLINE_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def recorded(store: HistoryStore, run_id: str) -> RunDetail:
    """The run's record once it says the run ended (polling to a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        detail = store.get_run(run_id)
        if detail is not None and detail.run.status != "running":
            return detail
        assert time.monotonic() < deadline, f"run {run_id} was not recorded as ended"
        time.sleep(0.05)


def fan_flow(name: str, width: int, queue: str | None = None) -> Any:
    with workflow(name) as wf:
        members = []
        for i in range(width):

            @task(id=f"t{i}")
            def work() -> int:
                return os.getpid()

            members.append(work)
        graflow.parallel(*members)
    return wf


def test_a_pool_run_names_the_worker_process_of_each_task(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    result = graflow.run(fan_flow("pool-fan", 8), processes=2, history=str(path))
    detail = recorded(SqliteHistory(path), result.run_id)
    assert detail.run.backend == "pool"
    pids = {f"pid {result.results[f't{i}']}" for i in range(8)}
    tasks = {a.task_id: a for a in detail.attempts if a.task_id.startswith("t")}
    assert set(tasks) == {f"t{i}" for i in range(8)}
    assert {a.worker for a in tasks.values()} == pids
    assert all(a.state == "succeeded" for a in tasks.values())


def test_a_redis_run_is_recorded_in_its_redis(
    redis_server: Any, shared_redis_node: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = fan_flow("redis-fan", 4)
    result = graflow.run(wf, redis=redis_server.url, queue=shared_redis_node.queue)
    client = connect(redis_server.url)
    store = RedisHistory(client, redis_server.url)
    detail = recorded(store, result.run_id)
    assert (detail.run.backend, detail.run.status, detail.run.exit_code) == (
        "redis",
        "succeeded",
        0,
    )
    tasks = [a for a in detail.attempts if a.task_id.startswith("t")]
    assert len(tasks) == 4 and all(a.state == "succeeded" for a in tasks)
    assert all(a.worker and a.worker != "driver" for a in tasks)  # the node's consumer names
    for key in (keys.history(result.run_id), keys.history_attempts(result.run_id)):
        assert 0 < client.ttl(key) <= DEFAULT_RETENTION_S
    assert client.zscore(keys.history_index(), result.run_id) is not None
    capsys.readouterr()
    assert main(["runs", "list", "--redis", redis_server.url, "--json", "--limit", "50"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[result.run_id]["workflow"] == "redis-fan"
    assert main(["runs", "show", result.run_id, "--redis", redis_server.url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {t["task_id"] for t in shown["tasks"]} >= {"t0", "t1", "t2", "t3"}


_WRITER = textwrap.dedent(
    """
    import sys
    import graflow
    from graflow import task, workflow

    path, runs, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for n in range(runs):
        with workflow("cron") as wf:
            members = []
            for i in range(width):
                @task(id=f"t{i}")
                def work() -> int:
                    return i
                members.append(work)
            graflow.parallel(*members)
        graflow.run(wf, processes=0, history=path)
    """
)


def test_many_processes_write_one_history_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), "6", "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        text = err.decode(errors="replace")
        assert proc.returncode == 0, text
        assert "locked" not in text and "could not be written" not in text, text
    store = SqliteHistory(path)
    runs = store.list_runs(limit=100)
    assert len(runs) == 36
    for run in runs:
        assert run.status == "succeeded"
        assert run.counts.get("succeeded") == 41  # 40 members and their group
