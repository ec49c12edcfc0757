"""The installed ``graflow`` command, run as a subprocess: exit codes, output, locks, progress,
status, dead letters, metrics, and no secret in any output."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from graflow.redis import keys
from tests.conftest import RedisNode, RedisServer, _free_port

GRAFLOW = shutil.which("graflow")
FLOWS = Path(__file__).with_name("cli_flows.py")
DEADLINE_S = 30.0

if GRAFLOW is None:
    reason = "the graflow command is not installed (pip install -e .)"
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


def target(name: str) -> str:
    """TARGET of a workflow in cli_flows.py."""
    return f"{FLOWS}:{name}"


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment, with a private runtime dir (run locks) and no Redis default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    env.update(XDG_RUNTIME_DIR=str(tmp_path / "runtime"), **extra)
    return env


def graflow(
    *args: str, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``graflow ARGS`` to its end; stdout and stderr captured as text."""
    assert GRAFLOW is not None
    return subprocess.run(
        [GRAFLOW, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``graflow ARGS`` in a session of its own; stdout and stderr piped."""
    assert GRAFLOW is not None
    return subprocess.Popen(
        [GRAFLOW, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Kill what is left of ``proc``'s session and return its output."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=DEADLINE_S)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def one_json(stdout: str) -> dict[str, Any]:
    """The single JSON document ``--json`` printed (and nothing else on stdout)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    data: dict[str, Any] = json.loads(lines[0])
    return data


# -- help, usage, graph -------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["supervisor"],
        ["status"],
        ["graph"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "requeue"],
        ["dlq", "purge"],
    ],
)
def test_every_command_explains_itself_with_an_example(command: list[str], tmp_path: Path) -> None:
    proc = graflow(*command, "--help", env=environment(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout
    assert "graflow" in proc.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-steps", "0"], ["--max-steps", "'0'"]),
        (["--processes", "-1"], ["--processes", "'-1'"]),
        (["--timeout-s", "soon"], ["--timeout-s", "'soon'"]),
        (["--set", "novalue"], ["--set", "'novalue'"]),
        (["--lock", "../etc"], ["--lock", "'../etc'"]),
        (["--redis", "http://example.invalid"], ["--redis", "'http'"]),
        (["--processes", "0", "--timeout-s", "5"], ["--timeout-s", "5"]),
        (["--start", "nowhere"], ["nowhere"]),
    ],
)
def test_usage_errors_exit_2_naming_the_flag_and_value(
    args: list[str], named: list[str], tmp_path: Path
) -> None:
    proc = graflow("run", target("ok"), *args, env=environment(tmp_path))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    for text in named:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_target_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    proc = graflow("run", "no_such_module_here:flow", "--json", env=environment(tmp_path))
    assert proc.returncode == 2
    assert "TARGET 'no_such_module_here:flow'" in proc.stderr
    assert one_json(proc.stdout)["status"] == "error"


def test_graph_prints_mermaid_and_dot(tmp_path: Path) -> None:
    mermaid = graflow("graph", target("ok"), env=environment(tmp_path))
    assert mermaid.returncode == 0, mermaid.stderr
    assert "n_a --> n_b" in mermaid.stdout
    dot = graflow("graph", target("ok"), "--format", "dot", env=environment(tmp_path))
    assert dot.returncode == 0 and "digraph" in dot.stdout


# -- run: outcomes and exit codes ---------------------------------------------------------
def test_a_run_that_succeeds_exits_0_with_one_json_summary(tmp_path: Path) -> None:
    proc = graflow("run", target("flaky"), "--processes", "2", "--json", env=environment(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = one_json(proc.stdout)
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert summary["value"] == "ok!"
    assert len(summary["run_id"]) == 32
    assert summary["tasks"] == {
        "succeeded": 2,
        "failed": 1,
        "retries": 1,
        "worker_deaths": 0,
        "completed": 2,
    }
    assert summary["failures"] == []
    assert summary["wall_s"] >= 0 and summary["started_at"].endswith("Z")


def test_quiet_prints_nothing_on_success(tmp_path: Path) -> None:
    proc = graflow("run", target("ok"), "--processes", "0", "--quiet", env=environment(tmp_path))
    assert proc.returncode == 0
    assert proc.stdout == "" and proc.stderr == ""


def test_a_failed_run_exits_1_with_task_error_and_hint_and_no_traceback(tmp_path: Path) -> None:
    proc = graflow("run", target("bad"), "--processes", "2", env=environment(tmp_path))
    assert proc.returncode == 1
    assert "failed in task 'boom': ValueError: kaput 1" in proc.stderr
    assert "hint: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verbose_shows_the_failing_tasks_traceback(tmp_path: Path) -> None:
    proc = graflow("-v", "run", target("bad"), "--processes", "2", env=environment(tmp_path))
    assert proc.returncode == 1
    assert "traceback of task 'boom'" in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert ", in boom\nValueError: kaput 1" in proc.stderr


def test_a_failed_run_has_a_json_summary_naming_the_task(tmp_path: Path) -> None:
    proc = graflow("run", target("bad"), "--processes", "2", "--json", env=environment(tmp_path))
    assert proc.returncode == 1
    summary = one_json(proc.stdout)
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert summary["tasks"]["succeeded"] == 1 and summary["tasks"]["failed"] == 1
    [failure] = summary["failures"]
    assert failure["task_id"] == "boom"
    assert failure["type"] == "ValueError"
    assert failure["error"] == "ValueError: kaput 1"
    assert failure["hint"]


def test_log_json_writes_one_json_object_per_stderr_line(tmp_path: Path) -> None:
    proc = graflow(
        "--log-json", "run", target("bad"), "--processes", "0", env=environment(tmp_path)
    )
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    run_ids = {r.get("run_id") for r in records}
    assert len(run_ids) == 1 and None not in run_ids
    failure = records[-1]
    assert failure["level"] == "ERROR" and failure["task_id"] == "boom"
    assert failure["hint"] and failure["error_type"] == "ValueError"


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_the_run_with_128_plus_its_number(
    name: str, code: int, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    proc = start(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--json",
        "--set",
        f"marker={marker}",
        env=environment(tmp_path),
    )
    try:
        wait_for(marker.exists, "the run to start")
        proc.send_signal(signal.Signals[name])
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        stop(proc)
    assert proc.returncode == code, err
    summary = one_json(out)
    assert summary["status"] == "interrupted" and summary["exit_code"] == code
    assert f"interrupted by {name}" in err


def test_ctrl_c_stops_an_in_process_run_with_130(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    proc = start(
        "run",
        target("slow"),
        "--processes",
        "0",
        "--set",
        f"marker={marker}",
        env=environment(tmp_path),
    )
    try:
        wait_for(marker.exists, "the run to start")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=DEADLINE_S)
    finally:
        stop(proc)
    assert proc.returncode == 130


def test_an_unreachable_redis_exits_4(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    run = graflow("run", target("ok"), "--redis", url, env=environment(tmp_path))
    assert run.returncode == 4, run.stderr
    assert "unreachable" in run.stderr
    status = graflow("status", "--redis", url, env=environment(tmp_path))
    assert status.returncode == 4


# -- locks ----------------------------------------------------------------------------------
def test_a_local_lock_keeps_a_second_run_out_until_the_first_ends(tmp_path: Path) -> None:
    env = environment(tmp_path)
    marker, gate = tmp_path / "started", tmp_path / "gate"
    first = start(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--lock",
        "nightly",
        "--set",
        f"marker={marker}",
        "--set",
        f"gate={gate}",
        "--set",
        "pause_s=0.01",
        env=env,
    )
    try:
        wait_for(marker.exists, "the first run to start")
        second = graflow("run", target("ok"), "--processes", "0", "--lock", "nightly", env=env)
        assert second.returncode == 3
        assert "--lock 'nightly': held by another run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        other = graflow("run", target("ok"), "--processes", "0", "--lock", "other", env=env)
        assert other.returncode == 0, "locks of other names are independent"
        assert first.poll() is None, "the first run held the lock throughout"
        gate.touch()
        _, err = first.communicate(timeout=DEADLINE_S)
    finally:
        stop(first)
    assert first.returncode == 0, err
    third = graflow("run", target("ok"), "--processes", "0", "--lock", "nightly", env=env)
    assert third.returncode == 0, third.stderr


def test_a_killed_holder_releases_its_local_lock_at_once(tmp_path: Path) -> None:
    env = environment(tmp_path)
    marker = tmp_path / "started"
    holder = start(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--lock",
        "sync",
        "--set",
        f"marker={marker}",
        env=env,
    )
    try:
        wait_for(marker.exists, "the holder to start")
        workers = psutil.Process(holder.pid).children(recursive=True)
        assert workers, "the pool has worker processes"
        os.kill(holder.pid, signal.SIGKILL)  # its forked workers may outlive it for a moment
        holder.wait(timeout=DEADLINE_S)
        after = graflow("run", target("ok"), "--processes", "0", "--lock", "sync", env=env)
        assert after.returncode == 0, after.stderr
    finally:
        stop(holder)


def test_a_redis_lock_keeps_a_second_run_out_across_hosts(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = environment(tmp_path)
    marker, gate = tmp_path / "started", tmp_path / "gate"
    name = f"lock-{uuid.uuid4().hex[:8]}"
    where = ["--redis", redis_node.url, "--queue", redis_node.queue, "--lock", name]
    first = start(
        "run",
        target("slow"),
        *where,
        "--set",
        f"marker={marker}",
        "--set",
        f"gate={gate}",
        "--set",
        "pause_s=0.01",
        env=env,
    )
    try:
        wait_for(marker.exists, "the first run to start")
        assert redis_client.exists(keys.run_lock(name))
        status = graflow("status", "--redis", redis_node.url, "--json", env=env)
        assert name in [lock["name"] for lock in json.loads(status.stdout)["locks"]]
        second = graflow("run", target("ok"), *where, env=env)
        assert second.returncode == 3
        assert f"--lock '{name}': held by another run" in second.stderr
        assert "Redis key" in second.stderr
        assert first.poll() is None, "the first run held the lock throughout"
        gate.touch()
        _, err = first.communicate(timeout=DEADLINE_S)
    finally:
        stop(first)
    assert first.returncode == 0, err
    assert not redis_client.exists(keys.run_lock(name)), "released by compare-and-delete"
    third = graflow("run", target("ok"), *where, env=env)
    assert third.returncode == 0, third.stderr


# -- progress -------------------------------------------------------------------------------
def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    proc = graflow(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--set",
        "pause_s=0.05",
        env=environment(tmp_path),
    )
    assert proc.returncode == 0
    assert "\r" not in proc.stderr and "tasks/s" not in proc.stderr


def _run_on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run graflow with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    assert GRAFLOW is not None
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [GRAFLOW, *args], stdout=subprocess.DEVNULL, stderr=slave, stdin=slave, env=env
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the command ended
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=DEADLINE_S)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, shown.decode(errors="replace")


def test_live_progress_on_a_terminal(tmp_path: Path) -> None:
    code, shown = _run_on_a_terminal(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--set",
        "pause_s=0.15",
        env=environment(tmp_path),
    )
    assert code == 0
    assert "\r\x1b[K" in shown
    for text in (" done | ", " queued | ", " running | ", " failed | ", " tasks/s | "):
        assert text in shown
    assert re.search(r"run [0-9a-f]{8}: [1-9][0-9]* done \| ", shown)


def test_quiet_turns_progress_off_on_a_terminal(tmp_path: Path) -> None:
    code, shown = _run_on_a_terminal(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--set",
        "pause_s=0.05",
        "--quiet",
        env=environment(tmp_path),
    )
    assert code == 0
    assert "tasks/s" not in shown


# -- status and dead letters against a real node --------------------------------------------
def _status(node: RedisNode, env: dict[str, str]) -> dict[str, Any]:
    proc = graflow("status", "--redis", node.url, "--queue", node.queue, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return one_json(proc.stdout)


def _done_by_workers(status: dict[str, Any]) -> int:
    return sum(w["done"] for n in status["nodes"] for w in n["workers"])


def test_status_and_dlq_of_a_real_node_and_run(
    redis_node: RedisNode, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = environment(tmp_path)
    where = ["--redis", redis_node.url, "--queue", redis_node.queue]
    run = graflow("run", target("ok"), *where, "--json", env=env)
    assert run.returncode == 0, run.stderr

    def counted() -> dict[str, Any] | None:
        status = _status(redis_node, env)
        return status if _done_by_workers(status) >= 2 else None

    status = wait_for(counted, "the workers' heartbeats to count the run's tasks")
    [queue] = status["queues"]
    assert queue["name"] == redis_node.queue
    assert (queue["waiting"], queue["in_flight"], queue["dead_letters"]) == (0, 0, 0)
    [node] = status["nodes"]
    assert len(node["workers"]) == 2
    assert all(w["queue"] == redis_node.queue and w["seen_age_s"] < 10 for w in node["workers"])

    text = graflow("status", *where, env=env)
    assert text.returncode == 0
    assert redis_node.queue in text.stdout and node["node_id"] in text.stdout
    assert "throughput" in text.stdout

    # A forged entry (unsigned payload) is dead-lettered by the worker that claims it.
    redis_client.xadd(keys.queue_stream(redis_node.queue), {b"r": b"forged-run", b"b": b"junk"})
    wait_for(lambda: _status(redis_node, env)["queues"][0]["dead_letters"] == 1, "a dead letter")
    listed = graflow("dlq", "list", *where, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [entry] = one_json(listed.stdout)["entries"]
    assert entry["run_id"] == "forged-run" and "unsigned" in entry["reason"]

    shown = graflow("dlq", "show", entry["id"], *where, env=env)
    assert shown.returncode == 0
    assert "forged-run" in shown.stdout and "not readable" in shown.stdout

    missing = graflow("dlq", "show", "1-0", *where, env=env)
    assert missing.returncode == 1

    requeued = graflow("dlq", "requeue", entry["id"], *where, env=env)
    assert requeued.returncode == 0 and "requeued 1 entry" in requeued.stdout
    again = graflow("dlq", "requeue", entry["id"], *where, env=env)
    assert again.returncode == 1 and "no such dead letter" in again.stderr

    # The worker rejects it again: a new dead letter, under a new id.
    def dead_letters() -> list[dict[str, Any]]:
        listing = graflow("dlq", "list", *where, "--json", env=env)
        entries: list[dict[str, Any]] = one_json(listing.stdout)["entries"]
        return entries

    [again_dead] = wait_for(dead_letters, "the requeued entry to be dead-lettered again")
    assert again_dead["id"] != entry["id"]

    refused = graflow("dlq", "purge", *where, env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = graflow("dlq", "purge", "--yes", *where, env=env)
    assert purged.returncode == 0 and "purged 1" in purged.stdout
    assert redis_client.xlen(keys.dead_letters(redis_node.queue)) == 0


# -- metrics --------------------------------------------------------------------------------
def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_node(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    """A supervisor serving metrics on a free loopback port: (metrics URL, queue, process)."""
    queue = f"q-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "supervisor.log"
    assert GRAFLOW is not None
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                GRAFLOW,
                "supervisor",
                "--redis",
                redis_server.url,
                "--queue",
                queue,
                "--processes",
                "2",
                "--lease-s",
                "1",
                "--grace-s",
                "5",
                "--metrics-port",
                "0",
                "--metrics-addr",
                "127.0.0.1",
            ],
            stdout=sink,
            stderr=sink,
            env=environment(tmp_path),
            start_new_session=True,
        )
    try:
        line = wait_for(
            lambda: next((ln for ln in log.read_text().splitlines() if "/metrics" in ln), None),
            "the supervisor to serve metrics",
        )
        yield line[line.index("http://") :].split()[0], queue, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_metrics_are_served_with_conventional_names(
    metrics_node: tuple[str, str, Any], redis_server: RedisServer, tmp_path: Path
) -> None:
    url, queue, proc = metrics_node
    env = environment(tmp_path)
    for name in ("ok", "flaky"):
        run = graflow("run", target(name), "--redis", redis_server.url, "--queue", queue, env=env)
        assert run.returncode == 0, run.stderr

    def task_count(status: str) -> float:
        return _scrape(url).get(("graflow_tasks_total", (("queue", queue), ("status", status))), 0)

    def all_counted() -> bool:
        # Each worker publishes its counts with its heartbeat: wait for both to have.
        counts = [task_count(s) for s in ("started", "succeeded", "failed", "retried")]
        return counts == [5, 4, 1, 1]

    wait_for(all_counted, "5 tasks started, 4 succeeded, 1 failed, 1 retried")
    metrics = _scrape(url)
    labels = (("queue", queue),)
    assert metrics[("graflow_task_duration_seconds_count", labels)] == 5
    assert metrics[("graflow_task_duration_seconds_bucket", (("le", "+Inf"), *labels))] == 5
    assert metrics[("graflow_task_duration_seconds_sum", labels)] > 0
    assert metrics[("graflow_queue_depth", labels)] == 0
    assert metrics[("graflow_dead_letters", labels)] == 0
    assert metrics[("graflow_worker_deaths_total", ())] == 0
    assert metrics[("graflow_redis_up", ())] == 1

    victim = psutil.Process(proc.pid).children()[0]
    victim.kill()
    wait_for(
        lambda: _scrape(url).get(("graflow_worker_deaths_total", ())) == 1, "the death counted"
    )
    assert task_count("succeeded") >= 4, "a dead worker's counts are kept"


# -- secrets --------------------------------------------------------------------------------
@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server that requires a password: (port, password)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    password = f"pw-{uuid.uuid4().hex}"
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            password,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=password)
    try:
        wait_for(lambda: _pings(client), "redis-server with a password to answer")
        yield port, password
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_no_secret_ever_appears_in_output(password_redis: tuple[int, str], tmp_path: Path) -> None:
    port, password = password_redis
    secret = f"signing-{uuid.uuid4().hex}"
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    env = environment(tmp_path, GRAFLOW_SECRET=secret)
    queue = f"q-{uuid.uuid4().hex[:12]}"
    where = ["--redis", url, "--queue", queue]
    log = tmp_path / "supervisor.log"
    assert GRAFLOW is not None
    with log.open("w") as sink:
        node = subprocess.Popen(
            [
                GRAFLOW,
                "-v",
                "supervisor",
                *where,
                "--processes",
                "1",
                "--lease-s",
                "1",
                "--metrics-port",
                "0",
                "--metrics-addr",
                "127.0.0.1",
            ],
            stdout=sink,
            stderr=sink,
            env=env,
            start_new_session=True,
        )
    outputs = []
    try:
        wait_for(lambda: "serving queue" in log.read_text(), "the node to start")
        runs = [
            (0, ["-v", "run", target("ok"), *where, "--json", "--lock", "pw"]),
            (1, ["-v", "run", target("bad"), *where]),
            (1, ["--log-json", "-v", "run", target("bad"), *where, "--json"]),
            (0, ["-v", "status", "--redis", url]),
            (0, ["-v", "dlq", "list", *where]),
            (2, ["-v", "run", target("ok"), "--redis", url.replace(password, password[::-1])]),
            (2, ["-v", "status", "--redis", url.replace(password, "wrong" + password)]),
            (2, ["-v", "run", target("ok"), "--redis", f"http://:{password}@127.0.0.1/0"]),
        ]
        for code, args in runs:
            proc = graflow(*args, env=env)
            outputs.append((args, proc.stdout + proc.stderr))
            assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        url_env = environment(tmp_path, GRAFLOW_SECRET=secret, GRAFLOW_REDIS_URL=url)
        proc = graflow("-v", "run", target("bad"), "--queue", queue, env=url_env)
        outputs.append((["GRAFLOW_REDIS_URL run"], proc.stdout + proc.stderr))
        assert proc.returncode == 1
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=DEADLINE_S)
    outputs.append((["supervisor"], log.read_text()))
    assert "DEBUG" in log.read_text(), "debug logging was on"
    for args, text in outputs:
        assert password not in text, args
        assert password[::-1] not in text, args
        assert secret not in text, args


# -- run metrics ------------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    """Prometheus text exposition as {'name{labels}': value}."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


@pytest.mark.parametrize("flow, code, succeeded, failed", [("ok", 0, 2, 0), ("bad", 1, 1, 1)])
def test_a_metrics_file_ends_with_how_the_run_ended(
    tmp_path: Path, flow: str, code: int, succeeded: int, failed: int
) -> None:
    path = tmp_path / "textfile" / "nightly.prom"
    path.parent.mkdir()
    done = graflow(
        "run",
        target(flow),
        "--processes",
        "2",
        "--metrics-file",
        str(path),
        "--metrics-name",
        "nightly",
        env=environment(tmp_path),
    )
    assert done.returncode == code, done.stderr
    samples = _samples(path.read_text())
    label = '{workflow="nightly"}'
    assert samples[f"graflow_run_exit_code{label}"] == code
    assert samples['graflow_run_tasks_total{status="succeeded",workflow="nightly"}'] == succeeded
    assert samples['graflow_run_tasks_total{status="failed",workflow="nightly"}'] == failed
    started = samples[f"graflow_run_started_seconds{label}"]
    finished = samples[f"graflow_run_finished_seconds{label}"]
    assert started <= finished <= time.time()
    assert samples[f"graflow_run_elapsed_seconds{label}"] == pytest.approx(finished - started)
    assert [p.name for p in path.parent.iterdir()] == ["nightly.prom"]  # written by rename


def test_metrics_are_served_while_the_run_lasts(tmp_path: Path) -> None:
    marker, gate = tmp_path / "started", tmp_path / "gate"
    port = _free_port()
    proc = start(
        "run",
        target("slow"),
        "--processes",
        "2",
        "--metrics-port",
        str(port),
        "--metrics-addr",
        "127.0.0.1",
        "--set",
        f"marker={marker}",
        "--set",
        f"gate={gate}",
        "--set",
        "pause_s=0",
        env=environment(tmp_path),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(marker.exists, "the run to start")
        during = _samples(wait_for(lambda: _scrape_text(url), "the metrics endpoint"))
        assert during['graflow_run_tasks_running{workflow="' + target("slow") + '"}'] == 1
        assert f'graflow_run_exit_code{{workflow="{target("slow")}"}}' not in during
        gate.touch()
        _out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert _scrape_text(url) is None  # the endpoint went with the command


def test_a_metrics_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = graflow(
            "run",
            target("ok"),
            "--metrics-port",
            str(port),
            "--metrics-addr",
            "127.0.0.1",
            env=environment(tmp_path),
        )
    assert done.returncode == 2
    assert f"--metrics-port {port}" in done.stderr


def _scrape_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return None
