"""The dashboard's app without a browser: its JSON, the token gate, the layout, the command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

import graflow
from graflow import task, workflow
from graflow.cli import main
from graflow.history.store import SqliteHistory
from graflow.ui.app import TOKEN_COOKIE, create_app
from graflow.ui.command import is_loopback
from graflow.ui.layout import MAX_NODES, layout


def recorded_run(path: Path) -> str:
    with workflow("shown") as wf:

        @task
        def a() -> int:
            return 1

        @task
        def b() -> int:
            return 2

        @task
        def c() -> int:
            return 3

        a >> (b | c)

    result = graflow.run(wf, processes=0, history=str(path), start="a")
    store = SqliteHistory(path)
    deadline = time.monotonic() + 10
    while (detail := store.get_run(result.run_id)) is None or detail.run.status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return result.run_id


def test_the_api_describes_runs_and_their_graph(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    run_id = recorded_run(path)
    client = TestClient(create_app(SqliteHistory(path)))
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs] == [run_id]
    assert client.get("/api/runs?status=failed").json() == []
    detail = client.get(f"/api/runs/{run_id}").json()
    assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "ParallelGroup_1": "succeeded",
    }
    boxes = {n["id"]: n for n in detail["layout"]["nodes"]}
    assert boxes["a"]["x"] < boxes["ParallelGroup_1"]["x"] < boxes["b"]["x"] == boxes["c"]["x"]
    assert client.get("/api/runs/nope").status_code == 404
    for page in ("/", f"/runs/{run_id}", "/nodes", "/queues"):
        reply = client.get(page)
        assert reply.status_code == 200 and "/static/common.js" in reply.text
    assert "EventSource" in client.get("/static/run.js").text
    assert client.get("/api/nodes").json()["available"] is False


def test_the_event_stream_of_a_finished_run_sends_it_once_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    run_id = recorded_run(path)
    client = TestClient(create_app(SqliteHistory(path), poll_s=0.01))
    with client.stream("GET", f"/api/runs/{run_id}/events") as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        body = b"".join(reply.iter_bytes()).decode()
    events = [block for block in body.split("\n\n") if block.strip()]
    assert events[-1].startswith("event: end")
    update = orjson.loads(events[0].removeprefix("data: "))
    assert update["run"]["status"] == "succeeded"
    assert {t["task_id"] for t in update["tasks"]} == {"a", "b", "c", "ParallelGroup_1"}


def test_a_token_guards_every_page(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    SqliteHistory(path)
    client = TestClient(create_app(SqliteHistory(path), token="s3cret"))
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs?token=wrong").status_code == 401
    reply = client.get("/?token=s3cret", follow_redirects=False)
    assert reply.status_code == 303 and "token" not in reply.headers["location"]
    assert reply.cookies.get(TOKEN_COOKIE) == "s3cret"
    assert client.get("/api/runs").status_code == 200  # the cookie now
    bearer = TestClient(create_app(SqliteHistory(path), token="s3cret"))
    assert bearer.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_dead_letter_actions_need_the_dashboard_and_a_confirmation(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    SqliteHistory(path)
    client = TestClient(create_app(SqliteHistory(path), redis=FakeNothing()))
    headers = {"X-Graflow-UI": "1"}
    assert client.post("/api/queues/default/purge", json={"confirm": "default"}).status_code == 403
    refused = client.post("/api/queues/default/purge", json={}, headers=headers)
    assert refused.status_code == 400 and "confirm" in refused.json()["error"]
    wrong = client.post("/api/queues/default/purge", json={"confirm": "other"}, headers=headers)
    assert wrong.status_code == 400
    assert client.post("/api/queues/default/drop", json={}, headers=headers).status_code == 404


class FakeNothing:
    """Stands where a Redis client goes; the refused requests above never reach it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was touched ({name}) by a request that should be refused")


def test_the_layout_places_loops_and_refuses_huge_graphs() -> None:
    looped = layout({"nodes": [{"id": "a"}, {"id": "b"}], "edges": [["a", "b"], ["b", "a"]]})
    assert {n["id"] for n in looped["nodes"]} == {"a", "b"}
    xs = {n["id"]: n["x"] for n in looped["nodes"]}
    assert xs["a"] != xs["b"]
    big = {"nodes": [{"id": f"t{i}"} for i in range(MAX_NODES + 1)], "edges": []}
    assert layout(big)["too_large"] == MAX_NODES + 1


def test_other_addresses_need_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    assert main(["ui", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "needs a token" in capsys.readouterr().err
