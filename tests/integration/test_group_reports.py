"""Why a group failed reaches the user (#18): each failed member's id, error type and message
on stderr and in ``--json`` (tracebacks with ``-v``), in-process, on the pool and on Redis."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisNode, RedisServer
from tests.integration.test_cli import GRAFLOW, environment, graflow
from tests.integration.test_first_hour import _graflow, _project

FLOWS = Path(__file__).with_name("group_flows.py")
BROKEN = f"{FLOWS}:broken_fanout"


def _where(kind: str, request: pytest.FixtureRequest) -> list[str]:
    if kind == "redis":
        node: RedisNode = request.getfixturevalue("redis_node")
        return ["--redis", node.url, "--queue", node.queue, "--timeout-s", "60"]
    return ["--processes", "0" if kind == "inprocess" else "2"]


@pytest.mark.parametrize("kind", ["inprocess", "pool", "redis"])
def test_each_failed_member_is_named_on_stderr_and_in_json(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = environment(tmp_path)
    where = _where(kind, request)
    shown = graflow("run", BROKEN, *where, env=env)
    assert shown.returncode == 1
    err = shown.stderr
    assert "member 'part_1' of 'parts' failed: ValueError: part 1 is bad" in err
    assert "member 'part_3' of 'parts' failed: ZeroDivisionError" in err
    assert "Traceback" not in err and "rerun with -v" not in err.split("hint:")[0]

    verbose = graflow("run", BROKEN, *where, "-v", env=env)
    assert verbose.returncode == 1
    assert "traceback of task 'part_1'" in verbose.stderr
    assert "traceback of task 'part_3'" in verbose.stderr
    assert "rerun with -v" not in verbose.stderr

    summary: dict[str, Any] = json.loads(graflow("run", BROKEN, *where, "--json", env=env).stdout)
    tasks = summary["tasks"]
    assert tasks == {"succeeded": 2, "failed": 2, "retries": 0, "worker_deaths": 0,
                     "completed": 2}  # fmt: skip
    by_id = {f["task_id"]: f for f in summary["failures"]}
    assert by_id["parts"]["type"] == "ParallelGroupError"
    assert by_id["part_1"]["type"] == "ValueError"
    assert by_id["part_1"]["error"] == "ValueError: part 1 is bad"
    assert by_id["part_1"]["group"] == "parts"
    assert by_id["part_3"]["type"] == "ZeroDivisionError"
    assert set(by_id) == {"parts", "part_1", "part_3"}


GROUP_FLOWS = """
from localflows import helper
from graflow import task, workflow


@task
def first() -> int:
    return helper.ten()


@task
def second() -> int:
    return 2


def build():
    with workflow("helped") as wf:
        first | second
    return wf
"""


def test_a_node_that_cannot_import_the_code_is_named_with_the_fix(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The producer imports localflows from its working directory; the node runs elsewhere.
    project = _project(tmp_path)
    (project / "localflows" / "helper.py").write_text("def ten() -> int:\n    return 10\n")
    (project / "localflows" / "group.py").write_text(GROUP_FLOWS)
    queue = f"q-{uuid.uuid4().hex[:12]}"
    node = RedisNode(redis_server.url, queue)
    assert GRAFLOW is not None
    node.process = subprocess.Popen(
        [GRAFLOW, "supervisor", "--redis", redis_server.url, "--queue", queue,
         "--processes", "1", "--lease-s", "1", "--grace-s", "5"],
        stdout=subprocess.DEVNULL, stderr=node.log, cwd=tmp_path, env=environment(tmp_path),
        start_new_session=True,
    )  # fmt: skip
    try:
        run = _graflow("run", "localflows.group:build", "--redis", redis_server.url,
                       "--queue", queue, "--timeout-s", "60", "--json",
                       cwd=project, tmp_path=tmp_path)  # fmt: skip
    finally:
        node.stop()
    assert run.returncode == 1, run.stderr
    assert "No module named 'localflows'" in run.stderr
    assert "start its node where they import" in run.stderr
    summary = json.loads(run.stdout)
    members = [f for f in summary["failures"] if f.get("group")]
    assert {f["task_id"] for f in members} == {"first", "second"}
    assert all("No module named 'localflows'" in f["error"] for f in members)
