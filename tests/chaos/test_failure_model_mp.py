"""Issue 14 on the pool: a SIGKILLed driver takes its workers with it; SIGTERM has a deadline.

Real driver processes, real signals, deadlines only (the helpers are test_mp_chaos's).
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.test_mp_chaos import _assert_gone, _Driver, _markers, _segments_of


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


# The driver passes a large value from one task to the next, through shared memory, and the
# second task sleeps far longer than any deadline here.
_LONG_TASK_DRIVER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    import graflow
    from graflow import parallel, workflow
    from graflow.core.task import TaskWrapper

    out = Path(sys.argv[1])
    sleep_s = float(sys.argv[2])
    grace_s = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0


    def produce(i):
        return TaskWrapper(f"p{i}", lambda: bytes(1 << 20))


    def consume(i):
        def body(ctx):
            (out / f"start-{i}").touch()
            time.sleep(sleep_s)
            (out / f"done-{i}").touch()
            return len(ctx.get_result(f"p{i}"))

        return TaskWrapper(f"c{i}", body, inject_context=True)


    if __name__ == "__main__":
        with workflow("long") as wf:
            parallel(*[produce(i) >> consume(i) for i in range(2)]).set_group_name("g")
        with graflow.Supervisor(2, grace_s=grace_s) as sup:
            result = sup.run(wf, start="g")
        print("results", sorted(result.results.items()), flush=True)
    """
)


@pytest.mark.timeout(120)
def test_workers_running_long_tasks_die_with_a_killed_driver(
    start_driver: Callable[..., _Driver],
) -> None:
    driver = start_driver(_LONG_TASK_DRIVER, "600")
    driver.wait_for_tasks(2)  # both workers are 600 s into a sleep, not reading their pipes
    driver.proc.kill()
    driver.proc.wait()
    _assert_gone(driver.workers)  # within the deadline, not after 600 s
    assert _markers(driver.out, "done") == set()
    # ... and take their own segments with them (the killed driver's own go at the next
    # pool's start, which sweeps the segments of dead processes).
    assert _segments_of(driver.workers) == []


@pytest.mark.timeout(120)
def test_the_grace_period_holds_while_every_worker_is_in_a_long_task(
    start_driver: Callable[..., _Driver],
) -> None:
    driver = start_driver(_LONG_TASK_DRIVER, "600", "2")  # grace_s=2
    driver.wait_for_tasks(2)
    driver.proc.send_signal(signal.SIGTERM)
    driver.proc.wait(timeout=60)  # the grace period, not the 600 s the tasks would take
    assert driver.proc.returncode != 0
    assert "RunInterrupted" in driver.stderr
    assert "run interrupted by SIGTERM, stopped at once" in driver.stderr
    assert _markers(driver.out, "done") == set()
    _assert_gone(driver.workers)  # the in-flight tasks were killed with their workers
    assert _segments_of([driver.proc.pid, *driver.workers]) == []
