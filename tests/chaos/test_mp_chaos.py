"""Chaos for the process pool: random SIGKILLs under a 10,000-task run, signals to the driver.

The killed run must end exactly like an unkilled one: every task completed once in the
results, the same channel contents. Side effects can happen more than once (a task whose
worker dies after running it is run again), so totals are kept idempotently (``set`` per
key). Kills start once the run is under way, and a task after the groups waits for the
last kill, so all of them land mid-run.

The driver tests run a small script in a subprocess and signal it once its tasks have
started; each task writes a start and a done marker file, which is how a test tells what
ran, what finished, and what never started.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import graflow
from graflow import chain, parallel, workflow
from graflow.core.task import TaskWrapper
from graflow.mp import shm

GROUPS = 3  # groups of MEMBERS chains of 3 tasks ...
MEMBERS = 1000
SINGLES = 1000  # ... then one group of single tasks ...
ITERATIONS = 50  # ... then a next_iteration cycle
KILLS = 20

_ITERATION_ID = re.compile(r"_cycle_(\d+)_[0-9a-f]{8}$")
_SEGMENT = re.compile(r"graflow_(\d+)_[0-9a-f]+")


def _value(name: str) -> int:
    return sum(map(ord, name))


def _step(ctx: Any) -> int:
    """A tiny task: its value depends only on its id; the last of a chain also records it."""
    ch = ctx.get_channel()
    if ctx.task_id == "r4":
        Path(ch.get("underway")).touch()  # the chaos may begin
    value = _value(ctx.task_id)
    if ctx.task_id.endswith("c") or ctx.task_id.startswith("s"):
        ch.set(f"total:{ctx.task_id}", value)
    return value


def _loop(ctx: Any, data: int | None = None) -> int:
    total = (data or 0) + ctx.cycle_count
    if ctx.cycle_count < ITERATIONS:
        ctx.next_iteration(total)
    return total


def _gate(ctx: Any, gate: str) -> str:
    """Hold the end of the run until the chaos thread has landed all its kills."""
    # The chaos spares the process that waits here: kills of it would be charged to this
    # task as deliveries (max_deliveries), which is not what this test is about.
    Path(gate + ".pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the chaos thread never finished")
        time.sleep(0.01)
    return "done"


def _step_task(name: str) -> TaskWrapper:
    return TaskWrapper(name, _step, inject_context=True)


def _chaos_wf() -> Any:
    with workflow("chaos") as wf:
        previous: Any = chain(*[_step_task(f"r{i}") for i in range(5)])
        for g in range(GROUPS):
            members = [chain(*[_step_task(f"g{g}m{i}{x}") for x in "abc"]) for i in range(MEMBERS)]
            previous = previous >> parallel(*members).set_group_name(f"g{g}")
        singles = [_step_task(f"s{i}") for i in range(SINGLES)]
        previous = previous >> parallel(*singles).set_group_name("singles")
        loop = TaskWrapper("loop", _loop, inject_context=True, max_cycles=ITERATIONS + 1)
        gate = TaskWrapper("gate", _gate, inject_context=True)
        previous >> gate >> loop
    return wf


def _task_count() -> int:
    return 5 + GROUPS * MEMBERS * 3 + SINGLES + ITERATIONS + 1


def _normalized(task_id: str) -> str:
    # next_iteration names each iteration node with a random suffix: drop it.
    return _ITERATION_ID.sub(r"_cycle_\1", task_id)


def _summary(result: Any) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    completed = sorted(_normalized(t) for t in result.completed)
    results = {_normalized(k): v for k, v in result.results.items()}
    totals = {k: v for k, v in result.channel.items() if k.startswith("total:")}
    return completed, results, totals


class _Chaos:
    """A thread that SIGKILLs ``KILLS`` random workers of ``sup`` at random intervals."""

    def __init__(self, sup: graflow.Supervisor, markers: Path, seed: int) -> None:
        self.sup = sup
        self.underway = markers / "underway"
        self.done_marker = markers / "gate"
        self.rng = random.Random(seed)
        self.killed: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def _run(self) -> None:
        try:
            while not self.underway.exists() and not self.stop.wait(0.01):
                pass
            while len(self.killed) < KILLS and not self.stop.wait(self.rng.uniform(0.005, 0.05)):
                self._kill_one()
        finally:
            self.done_marker.touch()

    def _kill_one(self) -> None:
        pid = self.rng.choice(self.sup.worker_pids)
        spared = self.done_marker.with_suffix(".pid")
        if spared.exists() and spared.read_text() == str(pid):
            return
        try:
            # Only our own children: a reaped worker's pid could already name another process.
            if psutil.Process(pid).ppid() != os.getpid():
                return
            os.kill(pid, signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        self.killed.append(pid)

    def __enter__(self) -> _Chaos:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _run(sup: graflow.Supervisor, wf: Any, markers: Path) -> Any:
    channel = {"gate": str(markers / "gate"), "underway": str(markers / "underway")}
    return sup.run(wf, start="r0", max_steps=100_000, initial_channel=channel)


@pytest.mark.timeout(300)
def test_random_worker_kills_do_not_change_the_outcome(tmp_path: Path) -> None:
    wf = _chaos_wf()
    calm_dir, stormy_dir = tmp_path / "calm", tmp_path / "stormy"
    calm_dir.mkdir()
    stormy_dir.mkdir()
    (calm_dir / "gate").touch()
    with graflow.Supervisor(2) as sup:
        calm = _run(sup, wf, calm_dir)
    assert calm.stats.worker_deaths == 0
    assert len(calm.completed) == _task_count() + GROUPS + 1  # and the group nodes
    assert calm.value == sum(range(1, ITERATIONS + 1))
    assert calm.results["gate"] == "done"

    with graflow.Supervisor(2) as sup, _Chaos(sup, stormy_dir, seed=20) as chaos:
        stormy = _run(sup, wf, stormy_dir)
    assert len(chaos.killed) == KILLS
    assert stormy.stats.worker_deaths >= 1
    assert stormy.value == calm.value
    assert _summary(stormy) == _summary(calm)


# -- signals to the driver ----------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    import graflow
    from graflow import parallel, workflow
    from graflow.core.task import TaskWrapper

    out = Path(sys.argv[1])
    sleep_s = float(sys.argv[2])


    def make(i):
        def body():
            (out / f"start-{i}").touch()
            time.sleep(sleep_s)
            (out / f"done-{i}").touch()
            return i

        return TaskWrapper(f"s{i}", body)


    if __name__ == "__main__":
        with workflow("drain") as wf:
            parallel(*[make(i) for i in range(12)]).set_group_name("g")
        result = graflow.run(wf, processes=2)
        print("results", sorted(result.results.items()), flush=True)
    """
)


def _markers(out: Path, kind: str) -> set[str]:
    return {p.name.split("-", 1)[1] for p in out.glob(f"{kind}-*")}


def _assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _is_running(p)]
        time.sleep(0.02)
    assert alive == [], f"worker processes left behind: {alive}"


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _Driver:
    """The driver script in a subprocess; its output goes to files, so that no process left
    behind holding a pipe can block the test."""

    def __init__(self, tmp_path: Path, script: str, *args: str) -> None:
        path = tmp_path / "driver.py"
        path.write_text(script)
        self.out = tmp_path / "markers"
        self.out.mkdir()
        self.stdout_path = tmp_path / "stdout.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(path), str(self.out), *args],
                stdout=stdout,
                stderr=stderr,
                cwd=tmp_path,
            )
        self.children: list[psutil.Process] = []

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            assert self.proc.poll() is None, f"the driver ended early:\n{self.stderr}"
            assert time.monotonic() < deadline, f"{what} never happened:\n{self.stderr}"
            time.sleep(0.01)

    def wait_for_tasks(self, count: int) -> None:
        """Wait until ``count`` tasks have started; note the driver's worker processes."""
        self.wait_for(f"{count} tasks starting", lambda: len(_markers(self.out, "start")) >= count)
        self.children = psutil.Process(self.proc.pid).children()

    @property
    def workers(self) -> list[int]:
        return [c.pid for c in self.children]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for child in self.children:
            # psutil checks the process is still the one it saw: a reused pid is spared.
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@pytest.fixture
def start_driver(tmp_path: Path) -> Iterator[Callable[..., _Driver]]:
    """Start a driver script; whatever a test leaves running is killed afterwards."""
    drivers: list[_Driver] = []

    def start(script: str, *args: str) -> _Driver:
        drivers.append(_Driver(tmp_path, script, *args))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.kill()


def _segments_of(pids: list[int]) -> list[str]:
    names = os.listdir(shm.SHM_DIR)
    return [n for n in names if (m := _SEGMENT.fullmatch(n)) and int(m.group(1)) in pids]


@pytest.mark.timeout(120)
def test_sigterm_drains_in_flight_tasks_then_stops(start_driver: Callable[..., _Driver]) -> None:
    driver = start_driver(_DRIVER, "1.5")
    driver.wait_for_tasks(2)  # one on each worker
    started_before = _markers(driver.out, "start")
    driver.proc.send_signal(signal.SIGTERM)
    driver.proc.wait(timeout=60)

    assert driver.proc.returncode != 0
    assert "RunInterrupted" in driver.stderr
    assert "run interrupted by SIGTERM, stopped after in-flight tasks finished" in driver.stderr
    assert "results" not in driver.stdout
    assert len(started_before) == 2
    assert _markers(driver.out, "done") == started_before  # in-flight tasks finished ...
    assert _markers(driver.out, "start") == started_before  # ... and no new task started
    _assert_gone(driver.workers)
    assert _segments_of([driver.proc.pid, *driver.workers]) == []


@pytest.mark.timeout(120)
def test_second_sigint_stops_at_once(start_driver: Callable[..., _Driver]) -> None:
    driver = start_driver(_DRIVER, "600")
    driver.wait_for_tasks(2)
    driver.proc.send_signal(signal.SIGINT)
    driver.wait_for("draining", lambda: "finishing in-flight tasks" in driver.stderr)
    driver.proc.send_signal(signal.SIGINT)
    driver.proc.wait(timeout=60)  # not the 10 minutes the tasks would sleep

    assert driver.proc.returncode != 0
    assert "run interrupted by SIGINT, stopped at once" in driver.stderr
    assert "results" not in driver.stdout
    assert _markers(driver.out, "done") == set()
    _assert_gone(driver.workers)
    assert _segments_of([driver.proc.pid, *driver.workers]) == []


_LARGE_RESULTS = textwrap.dedent(
    """
    import os
    import sys
    import time
    from pathlib import Path

    import graflow
    from graflow import parallel, workflow
    from graflow.core.task import TaskWrapper

    out = Path(sys.argv[1])


    def make(i):
        def body():
            (out / f"start-{i}").touch()
            time.sleep(0.02)
            return bytes(1 << 20)  # through shared memory

        return TaskWrapper(f"s{i}", body)


    if __name__ == "__main__":
        with workflow("large") as wf:
            parallel(*[make(i) for i in range(2000)]).set_group_name("g")
        graflow.run(wf, processes=2)
    """
)


@pytest.mark.timeout(120)
def test_workers_exit_and_leave_no_segments_when_the_driver_is_killed(
    start_driver: Callable[..., _Driver],
) -> None:
    driver = start_driver(_LARGE_RESULTS)
    driver.wait_for_tasks(20)
    driver.proc.kill()
    driver.proc.wait()
    _assert_gone(driver.workers)  # they notice that the driver is gone ...
    assert _segments_of(driver.workers) == []  # ... and take their segments with them
