"""The run history: what an in-process run records, where, and what ``graflow runs`` shows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

import graflow
from graflow import RetryPolicy, task, workflow
from graflow.cli import main
from graflow.config import Settings
from graflow.exceptions import ConfigError, GraflowRuntimeError
from graflow.history.location import open_store
from graflow.history.model import RunDetail, transitions
from graflow.history.store import SqliteHistory, default_path
from graflow.redis import keys

DEADLINE_S = 30.0


def recorded(store: SqliteHistory, run_id: str) -> RunDetail:
    """The run's record once its writer has written its end (polling to a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        detail = store.get_run(run_id)
        if detail is not None and detail.run.status != "running":
            return detail
        assert time.monotonic() < deadline, f"run {run_id} was not recorded as ended"
        time.sleep(0.02)


def latest_run_id(store: SqliteHistory, count: int = 1) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        runs = store.list_runs(limit=100)
        if len(runs) >= count:
            return runs[0].run_id
        assert time.monotonic() < deadline, "no run was recorded"
        time.sleep(0.02)


def chain_flow(name: str, fail: bool = False) -> Any:
    with workflow(name) as wf:

        @task
        def first() -> int:
            return 1

        @task
        def second() -> int:
            if fail:
                raise ValueError("second refuses")
            return 2

        @task
        def third() -> int:
            return 3

        first >> second >> third
    return wf


def test_a_run_records_each_task_with_its_transitions(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    result = graflow.run(chain_flow("chain"), processes=0, history=str(path))
    detail = recorded(SqliteHistory(path), result.run_id)
    run = detail.run
    assert (run.workflow, run.status, run.exit_code, run.backend) == (
        "chain",
        "succeeded",
        0,
        "inprocess",
    )
    assert run.started_at <= (run.ended_at or 0.0)
    assert run.tasks == 3
    assert run.counts == {"succeeded": 3}
    assert [a.task_id for a in detail.attempts] == ["first", "second", "third"]
    for attempt in detail.attempts:
        states = [t["state"] for t in transitions(attempt)]
        assert states == ["queued", "started", "succeeded"]
        assert attempt.worker == "driver"
        assert attempt.duration_s is not None and attempt.duration_s >= 0
        assert run.started_at <= (attempt.queued_at or 0) <= (attempt.ended_at or 0)
    assert {n["id"] for n in detail.graph["nodes"]} == {"first", "second", "third"}
    assert ["first", "second"] in detail.graph["edges"]


def test_a_failed_run_records_the_traceback_and_the_tasks_it_never_ran(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with pytest.raises(GraflowRuntimeError):
        graflow.run(chain_flow("broken", fail=True), processes=0, history=str(path))
    store = SqliteHistory(path)
    detail = recorded(store, latest_run_id(store))
    assert (detail.run.status, detail.run.exit_code) == ("failed", 1)
    assert "second refuses" in detail.run.error
    states = {a.task_id: a.state for a in detail.attempts}
    assert states == {"first": "succeeded", "second": "failed", "third": "skipped"}
    failed = next(a for a in detail.attempts if a.task_id == "second")
    assert failed.error == "ValueError: second refuses"
    assert "Traceback" in failed.traceback and "second refuses" in failed.traceback


def test_a_retried_task_records_each_attempt(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    calls: list[int] = []
    with workflow("flaky") as wf:

        @task(retry_policy=RetryPolicy(max_retries=2, initial_interval=0.01, jitter=False))
        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError(f"attempt {len(calls)} fails")
            return "ok"

    result = graflow.run(wf, processes=0, history=str(path))
    detail = recorded(SqliteHistory(path), result.run_id)
    attempts = [(a.attempt, a.state) for a in detail.attempts]
    assert attempts == [(0, "retried"), (1, "retried"), (2, "succeeded")]
    states = [t["state"] for t in transitions(detail.attempts[0])]
    assert states == ["queued", "started", "failed", "retried"]
    assert detail.attempts[0].error == "RuntimeError: attempt 1 fails"


def test_a_parallel_group_is_recorded_as_run_by_the_driver(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with workflow("fan") as wf:

        @task
        def a() -> int:
            return 1

        @task
        def b() -> int:
            return 2

        group = a | b

    result = graflow.run(wf, processes=0, history=str(path), start=group.task_id)
    detail = recorded(SqliteHistory(path), result.run_id)
    by_task = {a.task_id: a for a in detail.attempts}
    assert by_task[group.task_id].state == "succeeded"
    assert by_task[group.task_id].worker == "driver"
    assert {by_task["a"].state, by_task["b"].state} == {"succeeded"}
    node = next(n for n in detail.graph["nodes"] if n["id"] == group.task_id)
    assert node["members"] == ["a", "b"]


def test_history_off_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    graflow.run(chain_flow("quiet"), processes=0, history="off")
    monkeypatch.setenv("GRAFLOW_HISTORY", "off")
    graflow.run(chain_flow("quiet"), processes=0)
    assert not (tmp_path / "graflow").exists()


def test_the_environment_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    graflow.run(chain_flow("default"), processes=0)
    default = tmp_path / "state" / "graflow" / "history.db"
    assert default == default_path(str(tmp_path / "state"))
    assert recorded(SqliteHistory(default), latest_run_id(SqliteHistory(default))).run.workflow
    chosen = tmp_path / "chosen.db"
    monkeypatch.setenv("GRAFLOW_HISTORY", str(chosen))
    result = graflow.run(chain_flow("chosen"), processes=0)
    assert recorded(SqliteHistory(chosen), result.run_id).run.workflow == "chosen"
    # An explicit argument wins over the environment.
    explicit = tmp_path / "explicit.db"
    result = graflow.run(chain_flow("explicit"), processes=0, history=str(explicit))
    assert recorded(SqliteHistory(explicit), result.run_id).run.workflow == "explicit"
    assert SqliteHistory(chosen).get_run(result.run_id) is None


def test_the_default_without_xdg_state_home_is_under_the_home() -> None:
    assert default_path(None) == Path("~/.local/state/graflow/history.db").expanduser()


def test_an_unusable_history_file_is_a_config_error_before_the_run(tmp_path: Path) -> None:
    ran: list[int] = []
    with workflow("never") as wf:

        @task
        def work() -> None:
            ran.append(1)

    with pytest.raises(ConfigError, match="GRAFLOW_HISTORY"):
        graflow.run(wf, processes=0, history=str(tmp_path))  # a directory, not a file
    assert ran == []
    with pytest.raises(ConfigError, match="no run history"):
        SqliteHistory(tmp_path / "missing.db", create=False)


def test_open_store_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(history=str(tmp_path / "s.db"))
    store = open_store(None, settings)
    assert isinstance(store, SqliteHistory) and store.path == tmp_path / "s.db"
    assert open_store(False, settings) is None
    assert open_store("OFF", Settings()) is None
    assert open_store(None, Settings(history="off")) is None


def test_a_runs_history_keys_share_its_hash_slot() -> None:
    run_id = "3f2a9c"
    slot = key_slot(keys.run_prefix(run_id).encode())
    assert key_slot(keys.history(run_id).encode()) == slot
    assert key_slot(keys.history_attempts(run_id).encode()) == slot


def test_runs_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.db"
    ok = graflow.run(chain_flow("listed"), processes=0, history=str(path))
    with pytest.raises(GraflowRuntimeError):
        graflow.run(chain_flow("listed", fail=True), processes=0, history=str(path))
    store = SqliteHistory(path)
    failed_id = latest_run_id(store, 2)
    recorded(store, failed_id)
    recorded(store, ok.run_id)
    capsys.readouterr()

    assert main(["runs", "list", "--history", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["run_id"]: r["status"] for r in listed} == {
        ok.run_id: "succeeded",
        failed_id: "failed",
    }
    assert main(["runs", "list", "--history", str(path), "--status", "failed", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [failed_id]
    assert main(["runs", "list", "--history", str(path), "--workflow", "nope", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "list", "--history", str(path)]) == 0
    text = capsys.readouterr().out
    assert ok.run_id[:12] in text and failed_id[:12] in text and "listed" in text

    assert main(["runs", "show", failed_id[:8], "--history", str(path), "--timeline"]) == 0
    shown = capsys.readouterr().out
    assert "failed" in shown and "second refuses" in shown and "Traceback" in shown
    lines = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}
    assert lines["first"][1:4] == ["succeeded", "1", "driver"]
    assert lines["third"][1] == "skipped"
    assert "#" in lines["first"][-1]  # its bar on the timeline

    assert main(["runs", "show", ok.run_id, "--history", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["task_id"] for t in data["tasks"]] == ["first", "second", "third"]
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in data["tasks"])
    assert data["attempts"][0]["transitions"][0]["state"] == "queued"

    assert main(["runs", "show", "no-such-run", "--history", str(path)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_graflow_run_records_its_target_where_history_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cli.db"
    example = str(Path(__file__).resolve().parents[2] / "examples" / "pipeline.py")
    assert main(["run", example, "--processes", "0", "--quiet", "--history", str(path)]) == 0
    store = SqliteHistory(path)
    detail = recorded(store, latest_run_id(store))
    assert (detail.run.target, detail.run.backend, detail.run.exit_code) == (
        example,
        "inprocess",
        0,
    )
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert main(["run", example, "--processes", "0", "--quiet", "--history", "off"]) == 0
    assert not (tmp_path / "state").exists()  # not even the default file
    assert len(store.list_runs()) == 1
    capsys.readouterr()
