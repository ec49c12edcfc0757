"""Issue 14 on the pool and the command line: failures are named, bounded and explained.

Each test drives a real pool (forked or spawned worker processes) or the installed
``graflow`` command, and waits with deadlines only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graflow
import graflow.exceptions
from graflow import workflow
from graflow.core.task import ParallelGroup, TaskWrapper
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import MaxStepsExceeded

DEADLINE_S = 120.0
GRAFLOW = shutil.which("graflow")


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")
    return env


def _graflow(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if GRAFLOW is None:
        pytest.skip("the graflow command is not installed (pip install -e .)")
    return subprocess.run(
        [GRAFLOW, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=_environment(tmp_path),
    )


def _one_json(stdout: str) -> dict[str, object]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    data: dict[str, object] = json.loads(lines[0])
    return data


# -- point 14: an exception class of __main__ keeps its type on the pool ----------------------
_MAIN_ERROR_SCRIPT = """
import sys
import graflow
import graflow.exceptions
from graflow import task


class MainErr(Exception):
    pass


@task
def boom():
    raise MainErr("from the worker")


if __name__ == "__main__":
    try:
        graflow.run(boom, processes=1, start_method=sys.argv[1])
    except graflow.exceptions.GraflowError as exc:
        cause = exc.cause or exc.__cause__
        print(type(exc).__name__, type(cause) is MainErr, cause)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_an_exception_class_of_main_keeps_its_type_on_the_pool(
    tmp_path: Path, start_method: str
) -> None:
    script = tmp_path / "main_error.py"
    script.write_text(_MAIN_ERROR_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    # As in-process: the run fails with the task's own exception as its cause, same class.
    assert done.stdout.split() == ["GraflowRuntimeError", "True", "from", "the", "worker"]


# -- point 15: a flows file that does not load; groups nested deep ----------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def broken(:\n    pass\n", "syntax error in"),
        ("import graflow_no_such_module_here\n", "ModuleNotFoundError"),
        ("raise RuntimeError('flows refuse to load')\n", "flows refuse to load"),
    ],
)
def test_a_flows_file_that_does_not_load_exits_2_in_one_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text(source)
    done = _graflow("run", str(flows), "--json", tmp_path=tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert expected in errors[0] and str(flows) in errors[0]
    assert "Traceback" not in done.stderr
    summary = _one_json(done.stdout)
    assert summary["status"] == "error" and summary["exit_code"] == 2
    assert expected in json.dumps(summary["failures"])


def _nested_groups(depth: int) -> WorkflowContext:
    with workflow("nested") as wf:
        tasks = [TaskWrapper(f"t{i}", lambda: 1) for i in range(depth + 1)]
        group = ParallelGroup([tasks[0], tasks[1]])
        for member in tasks[2:]:
            group = ParallelGroup([group, member])
    return wf


@pytest.mark.parametrize("processes", [0, 2])
def test_groups_nested_300_deep_run_to_the_end(processes: int) -> None:
    result = graflow.run(_nested_groups(300), processes=processes)
    # 301 tasks and the 300 groups around them.
    assert len(result.completed) == 601
    assert sum(1 for task_id in result.completed if task_id.startswith("t")) == 301


# -- point 6: max_steps -------------------------------------------------------------------------
def test_the_default_step_limit_does_not_cut_a_group_of_20000() -> None:
    with workflow("wide") as wf:
        ParallelGroup([TaskWrapper(f"m{i}", lambda: 1) for i in range(20_000)])
    result = graflow.run(wf, processes=0)
    assert sum(1 for task_id in result.completed if task_id.startswith("m")) == 20_000
    assert not result.max_steps_reached


def test_the_default_step_limit_does_not_cut_a_group_of_20000_on_the_pool() -> None:
    with workflow("wide") as wf:
        ParallelGroup([TaskWrapper(f"m{i}", lambda: 1) for i in range(20_000)])
    result = graflow.run(wf, processes=2)
    assert sum(1 for task_id in result.completed if task_id.startswith("m")) == 20_000


def _endless_loop() -> WorkflowContext:
    with workflow("endless") as wf:
        ping = TaskWrapper("ping", lambda: 1)
        pong = TaskWrapper("pong", lambda: 2)
        ping >> pong >> ping
    return wf


@pytest.mark.parametrize("processes", [0, 2])
def test_reaching_max_steps_with_work_queued_fails_the_run(processes: int) -> None:
    with pytest.raises(MaxStepsExceeded) as info:
        graflow.run(_endless_loop(), start="ping", processes=processes, max_steps=50)
    assert info.value.max_steps == 50 and info.value.pending >= 1
    result = info.value.result
    assert isinstance(result, graflow.RunResult)
    assert result.max_steps_reached and result.stats.tasks_run == 50


def test_the_default_step_limit_stops_an_endless_loop() -> None:
    with pytest.raises(MaxStepsExceeded) as info:
        graflow.run(_endless_loop(), start="ping", processes=0)
    assert info.value.max_steps == 10_000 + 2


def test_wf_execute_keeps_the_quiet_upstream_stop() -> None:
    wf = _endless_loop()
    _, context = wf.execute("ping", max_steps=7, ret_context=True)
    assert context.max_steps_reached and context.steps == 7


_LOOP_FLOWS = """
from graflow import task, workflow

with workflow("endless") as endless:

    @task
    def ping():
        return 1

    @task
    def pong():
        return 2

    ping >> pong >> ping
"""


def test_the_cli_exits_1_when_the_run_reaches_max_steps(tmp_path: Path) -> None:
    flows = tmp_path / "loop_flows.py"
    flows.write_text(textwrap.dedent(_LOOP_FLOWS))
    done = _graflow(
        "run", f"{flows}:endless", "--start", "ping", "--processes", "0", "--max-steps", "30",
        "--json", tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = _one_json(done.stdout)
    assert summary["status"] == "failed"
    assert "MaxStepsExceeded" in json.dumps(summary["failures"])
    assert "max_steps=30" in done.stderr
