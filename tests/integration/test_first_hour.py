"""What a newcomer runs first (#18): targets found from the working directory, by ``run``,
``graph`` and a Redis node alike; wrong targets named with the fix; a closed pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.conftest import RedisNode, RedisServer
from tests.integration.test_cli import GRAFLOW, environment

ROOT = Path(__file__).resolve().parents[2]

LOCAL_FLOWS = """
from graflow import task, workflow


@task
def numbers() -> list[int]:
    return [1, 2, 3, 4]


@task
def squares(numbers: list[int]) -> int:
    return sum(n * n for n in numbers)


def build():
    with workflow("local") as wf:
        numbers >> squares
    return wf
"""


def _project(tmp_path: Path) -> Path:
    """A directory holding a package ``localflows`` that is on no path but the cwd."""
    package = tmp_path / "project" / "localflows"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(textwrap.dedent(LOCAL_FLOWS))
    return package.parent


def _graflow(
    *args: str, cwd: Path, tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    assert GRAFLOW is not None
    return subprocess.run(
        [GRAFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(tmp_path),
        cwd=cwd,
    )


def test_run_and_graph_import_modules_from_the_working_directory(tmp_path: Path) -> None:
    project = _project(tmp_path)
    run = _graflow("run", "localflows.jobs:build", "--processes", "2", "--json",
                   cwd=project, tmp_path=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert '"value": 30' in run.stdout
    graph = _graflow("graph", "localflows.jobs:build", "--format", "text",
                     cwd=project, tmp_path=tmp_path)  # fmt: skip
    assert graph.returncode == 0, graph.stderr
    assert "numbers" in graph.stdout and "squares" in graph.stdout


def test_a_node_started_in_the_working_directory_imports_its_tasks(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    queue = f"q-{uuid.uuid4().hex[:12]}"
    node = RedisNode(redis_server.url, queue)
    node_env = environment(tmp_path)
    assert GRAFLOW is not None
    # RedisNode runs `python -m graflow`, which puts the cwd on the path itself: start the
    # console script instead, from the project directory, as a user would.
    node.process = subprocess.Popen(
        [GRAFLOW, "supervisor", "--redis", redis_server.url, "--queue", queue,
         "--processes", "2", "--lease-s", "1", "--grace-s", "5"],
        stdout=subprocess.DEVNULL, stderr=node.log, cwd=project, env=node_env,
        start_new_session=True,
    )  # fmt: skip
    try:
        run = _graflow("run", "localflows.jobs:build", "--redis", redis_server.url,
                       "--queue", queue, "--timeout-s", "60", "--json",
                       cwd=project, tmp_path=tmp_path)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert '"value": 30' in run.stdout
    finally:
        node.stop()


def test_every_importing_command_says_so_in_its_help(tmp_path: Path) -> None:
    for command in ("run", "supervisor", "graph"):
        shown = _graflow(command, "--help", cwd=tmp_path, tmp_path=tmp_path)
        assert shown.returncode == 0
        assert "working directory comes first on sys.path" in shown.stdout, command


def test_a_target_that_runs_its_workflow_is_refused_before_it_runs(tmp_path: Path) -> None:
    graph = _graflow("graph", "examples/pipeline.py:main", cwd=ROOT, tmp_path=tmp_path)
    assert graph.returncode == 2
    assert "extract:" not in graph.stdout  # the pipeline did not run
    assert "returns dict[str, Any], not a workflow" in graph.stderr
    assert "Traceback" not in graph.stderr


def test_a_factory_returning_something_else_is_named(tmp_path: Path) -> None:
    flows = tmp_path / "odd.py"
    flows.write_text("def make():\n    return 42\n\ndef needs(x):\n    return x\n")
    made = _graflow("graph", f"{flows}:make", cwd=tmp_path, tmp_path=tmp_path)
    assert made.returncode == 2
    assert "returned int, not a workflow" in made.stderr
    needs = _graflow("graph", f"{flows}:needs", cwd=tmp_path, tmp_path=tmp_path)
    assert needs.returncode == 2
    assert "must be callable without arguments" in needs.stderr


def test_a_file_without_a_workflow_uses_its_build_function(tmp_path: Path) -> None:
    shown = _graflow("graph", "examples/word_count.py", "--format", "text",
                     cwd=ROOT, tmp_path=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "count_chunks" in shown.stdout


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "text"])
def test_graph_into_a_closed_pipe_stops_quietly(fmt: str, tmp_path: Path) -> None:
    assert GRAFLOW is not None
    shell = f"{GRAFLOW} graph examples/word_count.py --format {fmt} | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment(tmp_path),
    )  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "BrokenPipeError" not in done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode in (0, 141)  # 141 = 128 + SIGPIPE, as a command killed by it


def test_dlq_examples_name_redis_once(tmp_path: Path) -> None:
    for action in ("list", "show", "requeue", "purge"):
        shown = _graflow("dlq", action, "--help", cwd=tmp_path, tmp_path=tmp_path)
        example_lines = [line for line in shown.stdout.splitlines() if "graflow dlq" in line]
        assert example_lines, action
        for line in example_lines:
            assert line.count("--redis") == 1, line


def test_a_draining_node_says_so_in_its_log(redis_server: RedisServer) -> None:
    node = RedisNode(redis_server.url, f"q-{uuid.uuid4().hex[:12]}").start()
    assert node.process is not None
    os.killpg(node.process.pid, signal.SIGTERM)
    assert node.process.wait(timeout=60) == 0
    node.log.seek(0)
    text = node.log.read().decode(errors="replace")
    node.process = None
    node.log.close()
    assert "draining: no new tasks" in text
    assert "stopped" in text.split("draining")[1]
