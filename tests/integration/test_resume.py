"""Resume after the driver was SIGKILLed mid-run: on the process pool, on Redis, via the CLI.

A driver subprocess (``python -m tests.integration.resume_flows``) runs a flow checkpointed
every 20 ms; one task of it (the gate) waits for a file, and the test SIGKILLs the driver
while it waits. The checkpoint on disk then says which tasks had completed; the resumed
driver must run exactly the others (counted in the append-only log every task writes to),
and end with the results of an uninterrupted run. Nothing here asserts on timings: waits
poll against deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from graflow.core.checkpoint import read_checkpoint
from tests.conftest import RedisNode, RedisServer
from tests.integration import resume_flows

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0

pytestmark = pytest.mark.timeout(180)


class Driver:
    """Runs resume_flows drivers (or the ``graflow`` command) with one log, gate and checkpoint."""

    def __init__(self, tmp: Path, gate_task: str | None) -> None:
        self.tmp = tmp
        self.log = tmp / "log"
        self.gate = tmp / "gate"
        self.checkpoint = tmp / "run.ckpt"
        self.gate_task = gate_task
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self, tag: str) -> dict[str, str]:
        env = dict(os.environ, RESUME_LOG=str(self.log), RESUME_TAG=tag)
        env["RESUME_GATE_FILE"] = str(self.gate)
        env["PYTHONPATH"] = str(ROOT)
        if self.gate_task is not None:
            env["RESUME_GATE_TASK"] = self.gate_task
        return env

    def start(self, tag: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env(tag),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def flow(self, tag: str, flow: str, out: str, *extra: str) -> subprocess.Popen[bytes]:
        module = "tests.integration.resume_flows"
        return self.start(tag, "-m", module, flow, str(self.tmp / out), *extra)

    def kill_at_gate(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the gate task started and a checkpoint exists; SIGKILL the driver only."""
        wait_for(lambda: f"gate:{self.gate_task}" in self.log_ids("first"), "the gate", proc)
        wait_for(self.checkpoint.exists, "a checkpoint", proc)
        proc.kill()
        proc.wait()

    def log_ids(self, tag: str) -> list[str]:
        if not self.log.exists():
            return []
        pairs = [line.split(" ", 1) for line in self.log.read_text().splitlines()]
        return [task_id for t, task_id in pairs if t == tag]

    def executions(self, tag: str) -> list[str]:
        return [t for t in self.log_ids(tag) if not t.startswith("gate:")]

    def cleanup(self) -> None:
        self.gate.touch()  # lets a gated worker that outlived its driver finish
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def driver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Driver]:
    gate = getattr(request, "param", None)
    d = Driver(tmp_path, gate)
    try:
        yield d
    finally:
        d.cleanup()


def wait_for(predicate: Any, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"driver exited ({proc.returncode}) before {what}: {err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[bytes]) -> str:
    """Wait for a driver that must succeed; return its stdout."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def report(tmp: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp / name).read_text())
    return data


def clean_run(tmp: Path, flow: str) -> dict[str, Any]:
    """The report of the same flow run without interruption, in a directory of its own."""
    clean = tmp / "clean"
    clean.mkdir()
    d = Driver(clean, None)
    try:
        finish(d.flow("clean", flow, "out.json"))
    finally:
        d.cleanup()
    return report(clean, "out.json")


def assert_resumed_exactly_the_rest(d: Driver, done: set[str], static: set[str]) -> None:
    resumed = d.executions("resume")
    counts = Counter(resumed)
    assert not set(resumed) & done, "the resumed run ran a task the checkpoint had completed"
    assert [t for t, n in counts.items() if n > 1] == [], "a task ran twice after resume"
    assert {t for t in resumed if "_cycle_" not in t} == static - done


# -- the process pool -----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["t1200"], indirect=True)
def test_sigkill_mid_run_then_resume_runs_only_what_was_left(driver: Driver) -> None:
    first = driver.flow("first", "chain", "first.json", str(driver.checkpoint))
    driver.kill_at_gate(first)
    saved = read_checkpoint(str(driver.checkpoint)).state
    done = set(saved["completed_tasks"])
    assert saved["status"] == "running"
    assert 0 < len(done) < resume_flows.CHAIN_LENGTH

    driver.gate.touch()
    finish(driver.flow("resume", "chain", "resumed.json", str(driver.checkpoint)))

    static = {f"t{i}" for i in range(resume_flows.CHAIN_LENGTH)}
    assert_resumed_exactly_the_rest(driver, done, static)
    assert len(driver.executions("resume")) == resume_flows.CHAIN_LENGTH - len(done)
    resumed = report(driver.tmp, "resumed.json")
    assert resumed["tasks_run"] == resume_flows.CHAIN_LENGTH - len(done)
    clean = clean_run(driver.tmp, "chain")
    assert resumed["value"] == clean["value"] == sum(range(resume_flows.CHAIN_LENGTH))
    assert resumed["results"] == clean["results"]
    assert read_checkpoint(str(driver.checkpoint)).state["status"] == "finished"
    assert_workers_gone(driver)


@pytest.mark.parametrize("driver", ["b7_post", "loop#12"], indirect=True)
def test_resume_of_a_parallel_group_and_a_next_iteration_loop(driver: Driver) -> None:
    first = driver.flow("first", "mixed", "first.json", str(driver.checkpoint))
    driver.kill_at_gate(first)
    saved = read_checkpoint(str(driver.checkpoint)).state
    done = set(saved["completed_tasks"])
    if driver.gate_task == "b7_post":
        assert saved["groups"]["id"] == "fan", "the checkpoint shows the group in progress"
        assert "b7_post" not in done

    driver.gate.touch()
    finish(driver.flow("resume", "mixed", "resumed.json", str(driver.checkpoint)))

    members = {f"b{i}" for i in range(resume_flows.MEMBERS)}
    static = {"begin", "fan", "loop"} | members | {f"{m}_post" for m in members}
    static.discard("fan")  # the group node itself runs no function
    assert_resumed_exactly_the_rest(driver, done, static)
    loops = [t for t in done if t.startswith("loop")]
    loops += [t for t in driver.executions("resume") if t.startswith("loop")]
    assert len(loops) == resume_flows.LOOP_CYCLES, "every cycle ran exactly once in all"

    resumed = report(driver.tmp, "resumed.json")
    clean = clean_run(driver.tmp, "mixed")
    assert resumed["value"] == clean["value"]
    assert resumed["loop_total"] == clean["loop_total"] == sum(range(1, 31))
    assert resumed["results"] == clean["results"]


def assert_workers_gone(d: Driver) -> None:
    """The killed driver's workers noticed and exited (no orphans left serving nobody)."""
    first = d.started[0]
    orphans = [
        p
        for p in psutil.process_iter(["environ"])
        if (p.info.get("environ") or {}).get("RESUME_LOG") == str(d.log)
        and p.pid != first.pid
        and p.info["environ"].get("RESUME_TAG") == "first"
    ]
    wait_for(lambda: not [p for p in orphans if p.is_running() and p.status() != "zombie"], "exit")


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture
def node_env(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log and gate for the tasks of a Redis node started after this fixture."""
    for name, value in driver.env("-").items():
        if name.startswith("RESUME_"):
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize("driver", ["t25"], indirect=True)
def test_a_redis_run_resumes_with_its_channel_in_redis(
    driver: Driver, node_env: None, redis_server: RedisServer, redis_node: RedisNode
) -> None:
    location = f"{redis_server.url}#{driver.tmp.name}"
    args = (location, "--redis", redis_server.url, redis_node.queue)
    first = driver.flow("first", "small", "first.json", *args)
    wait_for(lambda: "gate:t25" in driver.log_ids("-"), "the gate", first)
    wait_for(lambda: "t24" in read_checkpoint(location).state["completed_tasks"], "t24 saved")
    first.kill()
    first.wait()
    saved = read_checkpoint(location).state
    done = set(saved["completed_tasks"])
    mark = len(driver.executions("-"))

    driver.gate.touch()  # the node's worker finishes the stale t25; its completion is ignored
    finish(driver.flow("resume", "small", "resumed.json", *args))

    later = driver.executions("-")[mark:]
    assert not set(later) & done, "a task completed before the checkpoint ran again"
    assert {f"t{i}" for i in range(40)} - done <= set(later)
    resumed = report(driver.tmp, "resumed.json")
    assert resumed["value"] == sum(range(40))
    assert resumed["results"] == {f"t{i}": sum(range(i + 1)) for i in range(40)}


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["t20"], indirect=True)
def test_graflow_run_resume_from_the_command_line(driver: Driver) -> None:
    target = "tests/integration/resume_flows.py:small"
    base = ["-m", "graflow", "run", target, "--processes", "2", "--start", "t0", "--json"]
    ckpt = ["--checkpoint", str(driver.checkpoint), "--checkpoint-every-s", "0"]

    first = driver.start("first", *base, *ckpt, "--resume")
    driver.kill_at_gate(first)
    done = set(read_checkpoint(str(driver.checkpoint)).state["completed_tasks"])
    assert "t20" not in done

    refused = driver.start("refused", *base, *ckpt)  # neither --resume nor --fresh
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2
    assert str(driver.checkpoint) in err.decode() and "--resume" in err.decode()

    driver.gate.touch()
    summary = json.loads(finish(driver.start("resume", *base, *ckpt, "--resume")))
    assert summary["status"] == "succeeded"
    assert summary["value"] == sum(range(40))
    assert set(driver.executions("resume")) == {f"t{i}" for i in range(40)} - done

    again = json.loads(finish(driver.start("again", *base, *ckpt, "--resume")))
    assert again["value"] == sum(range(40))
    assert driver.executions("again") == [], "a finished run's rerun is a no-op"

    fresh = json.loads(finish(driver.start("fresh", *base, *ckpt, "--fresh")))
    assert fresh["value"] == sum(range(40))
    assert sorted(driver.executions("fresh")) == sorted(f"t{i}" for i in range(40))


def test_graflow_run_names_a_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    good = tmp_path / "good.ckpt"
    env = dict(os.environ, RESUME_LOG=str(tmp_path / "log"), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "graflow", "run", "tests/integration/resume_flows.py:small"]
    command += ["--processes", "0", "--start", "t0"]
    done = subprocess.run(
        [*command, "--checkpoint", str(good)], cwd=ROOT, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    data = good.read_bytes()
    bad.write_bytes(data[:-10] + bytes(10))  # same length, damaged tail
    broken = subprocess.run(
        [*command, "--checkpoint", str(bad), "--resume"], cwd=ROOT, env=env, capture_output=True
    )
    err = broken.stderr.decode()
    assert broken.returncode == 2
    assert str(bad) in err and "checksum" in err
    assert "Traceback" not in err
