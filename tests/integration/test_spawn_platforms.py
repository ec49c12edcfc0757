"""Spawn platforms (#18): a script without the main guard is told so in one line before any
worker starts; without /dev/shm values travel in band; run locks do not need fcntl."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graflow.mp import shm

SCRIPT = """
import graflow
from graflow import task, workflow


@task
def a() -> int:
    return 1


@task
def b(a: int) -> int:
    return a + 1


with workflow("w") as wf:
    a >> b

{call}
"""
CALL = 'print(graflow.run(wf, processes=2, start_method="spawn").value)'


def _run(tmp_path: Path, call: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "quick_start.py"
    script.write_text(textwrap.dedent(SCRIPT).format(call=call))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )


def test_a_script_without_the_main_guard_is_told_before_workers_start(tmp_path: Path) -> None:
    done = _run(tmp_path, CALL)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("graflow.exceptions.ConfigError: ")
    assert 'put that code under if __name__ == "__main__":' in last
    assert "line 19" in last
    assert "WorkerLost" not in done.stderr and "bootstrapping" not in done.stderr


def test_the_same_script_with_the_guard_runs_on_spawned_workers(tmp_path: Path) -> None:
    done = _run(tmp_path, 'if __name__ == "__main__":\n    ' + CALL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_without_dev_shm_values_travel_in_band(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm, "AVAILABLE", False)
    big = b"x" * (1 << 20)
    assert not shm.is_shareable(big, 1024)
    data, refs = shm.encode({"payload": big}, threshold_bytes=1024)
    assert refs == []
    assert shm.decode(data, refs) == {"payload": big}
