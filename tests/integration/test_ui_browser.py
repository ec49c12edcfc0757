"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Selenium.

``graflow ui`` runs as its own process over a history file that real runs write: a finished
and a failed run, and a 20-task run whose last task waits on a gate file the test opens
while the run's page is on screen. Set GRAFLOW_UI_SCREENSHOT_DIR to keep the screenshots
(README's docs/ui-run.png comes from here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import task, workflow
from graflow.exceptions import GraflowRuntimeError
from graflow.history.store import SqliteHistory

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 30.0
LIVE_DEADLINE_S = 2.0  # the promise: a finished task shows within 2 s

webdriver = pytest.importorskip("selenium.webdriver")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium "
            "chromium-driver; .ci/run installs them)",
            pytrace=False,
        )
    pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)  # fmt: skip


def poll(what: str, deadline_s: float, probe: Callable[[], Any]) -> Any:
    """``probe()`` once it is truthy; fails the test at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s} s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def dashboard(history: Path) -> Iterator[str]:
    """``graflow ui`` over ``history`` on a free loopback port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GRAFLOW_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "graflow", "ui", "--history", str(history), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"graflow ui exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(base + "/api/runs", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    try:
        poll("graflow ui answering", START_DEADLINE_S, answers)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finished_and_failed_runs(history: Path) -> tuple[str, str]:
    with workflow("nightly") as ok:

        @task
        def extract() -> int:
            return 1

        @task
        def load() -> int:
            return 2

        extract >> load

    with workflow("billing") as bad:

        @task
        def charge() -> None:
            raise RuntimeError("card declined")

    ok_id = graflow.run(ok, processes=0, history=str(history)).run_id
    with pytest.raises(GraflowRuntimeError):
        graflow.run(bad, processes=0, history=str(history))
    store = SqliteHistory(history)
    poll("both runs recorded", 30, lambda: len(store.list_runs(status="failed")) == 1)
    failed_id = store.list_runs(status="failed")[0].run_id
    return ok_id, failed_id


_LIVE_FLOW = textwrap.dedent(
    """
    import os, sys, time
    import graflow
    from graflow import task, workflow
    from graflow.core.task import ParallelGroup

    history, gate = sys.argv[1], sys.argv[2]

    def step(task_id):
        @task(id=task_id)
        def work() -> int:
            return 1
        return work

    with workflow("twenty") as wf:
        @task(id="report")
        def report() -> str:  # the last task: it waits for the test's gate file
            deadline = time.monotonic() + 120
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
            return "done"

        fetch = ParallelGroup([step(f"fetch_{i}") for i in range(9)], name="fetch")
        score = ParallelGroup([step(f"score_{i}") for i in range(8)], name="score")
        step("extract") >> fetch >> step("combine") >> score >> report
    graflow.run(wf, processes=0, history=history, start="extract")
    """
)
TASKS = ["extract", "combine", "report"] + [f"fetch_{i}" for i in range(9)]
TASKS += [f"score_{i}" for i in range(8)]
GROUPS = ["fetch", "score"]


def shoot(driver: Any, name: str) -> None:
    where = os.environ.get("GRAFLOW_UI_SCREENSHOT_DIR")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / name))


def attributes(driver: Any, selector: str, key: str, value: str) -> dict[str, str]:
    """``{key attribute: value attribute}`` of the elements ``selector`` finds, read in one
    script (the pages redraw while the test reads them)."""
    found: dict[str, str] = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0])]"
        ".map((e) => [e.getAttribute(arguments[1]), e.getAttribute(arguments[2])]));",
        selector,
        key,
        value,
    )
    return found


def texts(driver: Any, selector: str, key: str) -> dict[str, str]:
    """``{key attribute: text}`` of the elements ``selector`` finds, read in one script."""
    found: dict[str, str] = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0])]"
        ".map((e) => [e.getAttribute(arguments[1]), e.textContent]));",
        selector,
        key,
    )
    return found


def states_on_page(driver: Any) -> dict[str, str]:
    return attributes(driver, "#graph g.node", "data-task", "data-state")


def test_the_runs_page_lists_a_finished_and_a_failed_run(tmp_path: Path, browser: Any) -> None:
    history = tmp_path / "history.db"
    ok_id, failed_id = finished_and_failed_runs(history)
    with dashboard(history) as base:
        browser.get(base + "/")

        def listed() -> dict[str, str]:
            return attributes(browser, "#runs tbody tr", "data-run", "data-status")

        runs = poll("both runs listed", 10, lambda: len(listed()) == 2 and listed())
        assert runs == {ok_id: "succeeded", failed_id: "failed"}
        text = texts(browser, "#runs tbody tr", "data-run")
        assert "nightly" in text[ok_id] and "billing" in text[failed_id]
        shoot(browser, "ui-runs.png")

        # The failed run's page shows the failure with its traceback.
        browser.get(f"{base}/runs/{failed_id}")
        failure = poll(
            "the failure shown", 10, lambda: texts(browser, "#failures .failure", "data-task")
        )
        assert "card declined" in failure["charge"] and "Traceback" in failure["charge"]


def test_a_run_page_shows_every_task_and_follows_the_run_live(tmp_path: Path, browser: Any) -> None:
    history = tmp_path / "history.db"
    SqliteHistory(history)  # the dashboard opens it before the run writes to it
    gate = tmp_path / "gate"
    script = tmp_path / "live_flow.py"
    script.write_text(_LIVE_FLOW)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(
        [sys.executable, str(script), str(history), str(gate)], env=env, stderr=subprocess.PIPE
    )
    try:
        store = SqliteHistory(history)
        run_id = poll(
            "the run recorded as running",
            START_DEADLINE_S,
            lambda: next((r.run_id for r in store.list_runs(status="running")), None),
        )

        def waiting_on_last() -> bool:
            detail = store.get_run(run_id)
            return detail is not None and any(
                a.task_id == "report" and a.state == "queued" for a in detail.attempts
            )

        poll("the last task handed out", START_DEADLINE_S, waiting_on_last)
        with dashboard(history) as base:
            browser.get(f"{base}/runs/{run_id}")
            assert len(TASKS) == 20
            expected = dict.fromkeys(TASKS + GROUPS, "succeeded") | {"report": "queued"}
            poll("every task with its state", 10, lambda: states_on_page(browser) == expected)
            rows = attributes(browser, "#tasks tbody tr", "data-task", "data-state")
            assert rows == expected
            bars = attributes(browser, "#gantt rect.bar", "data-task", "class")
            assert set(bars) == set(TASKS + GROUPS) - {"report"}  # what ran, on its lane
            shoot(browser, "ui-run-live.png")

            gate.touch()  # the last task finishes now: the open page follows, no reload
            poll(
                "the last task turning to succeeded on the open page",
                LIVE_DEADLINE_S,
                lambda: states_on_page(browser).get("report") == "succeeded",
            )
            poll(
                "the run shown as succeeded",
                10,
                lambda: (
                    attributes(browser, "#run-status", "id", "data-state")
                    == {"run-status": "succeeded"}
                ),
            )
            shoot(browser, "ui-run.png")
        assert run.wait(30) == 0, run.stderr.read().decode() if run.stderr else ""
    finally:
        gate.touch()
        if run.poll() is None:
            run.kill()
            run.wait()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
