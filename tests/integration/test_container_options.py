"""Docker as a Docker user reads it (#18): the entry point passes options to its command, the
image is pinned and tagged one way, the README says how to keep the producer's exit code."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.integration.test_containers import (
    DEADLINE_S,
    DOCKERFILE,
    ROOT,
    _start_redis,
    container_env,
    dockerfile_instructions,
    load_compose,
)

README = ROOT / "README.md"
CONSTRAINTS = ROOT / "constraints.txt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis_server = _start_redis(tmp_path_factory.mktemp("container-options"))
    try:
        yield redis_server
    finally:
        redis_server.stop()


def _container(*options: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "graflow.container", *options],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def test_a_producer_container_takes_json_lock_and_checkpoint_options(
    server: RedisServer, tmp_path: Path
) -> None:
    queue = f"opts-{uuid.uuid4().hex[:8]}"
    worker_env = {**container_env("worker", server, GRAFLOW_QUEUE=queue), "HOME": str(tmp_path)}
    producer_env = container_env(
        "producer", server, GRAFLOW_QUEUE=queue, GRAFLOW_TARGET="examples.pipeline:build"
    )
    producer_env["HOME"] = str(tmp_path)
    worker = _container("--lease-s", "5", "--grace-s", "5", env=worker_env)
    try:
        checkpoint = tmp_path / "data" / "etl.ckpt"
        checkpoint.parent.mkdir()
        producer = _container("--json", "--lock", "etl", "--checkpoint", str(checkpoint),
                              "--resume", env=producer_env)  # fmt: skip
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
        summary = json.loads(out)
        assert summary["status"] == "succeeded"
        assert summary["value"]["total"] == 614.0
        assert checkpoint.exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0


def test_a_worker_container_serves_metrics_on_every_interface(
    server: RedisServer, tmp_path: Path
) -> None:
    env = {**container_env("worker", server), "HOME": str(tmp_path)}
    worker = _container("--metrics-port", "0", "--lease-s", "6", env=env)
    assert worker.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEADLINE_S * 2
    try:
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "serving queue" in line:  # past start-up: SIGTERM now drains
                break
        served = next((line for line in lines if "metrics served at" in line), "")
        assert re.search(r"metrics served at http://0\.0\.0\.0:\d+/metrics", served), lines
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0


def test_status_in_a_worker_container_needs_no_flags(server: RedisServer, tmp_path: Path) -> None:
    env = {**container_env("worker", server), "HOME": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-m", "graflow", "status"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "nodes:" in shown.stdout


def test_the_container_help_names_the_options_it_passes_on(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "graflow.container", "--help"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0
    for option in ("--metrics-port", "--lease-s", "--lock", "--checkpoint", "--json"):
        assert option in shown.stdout


def test_the_image_is_pinned_and_tagged_one_way() -> None:
    base = [arg for name, arg in dockerfile_instructions() if name == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:\w+)?",
                                           base[0]), base  # fmt: skip
    runs = " ".join(arg for name, arg in dockerfile_instructions() if name == "RUN")
    assert "--constraint constraints.txt" in runs
    pinned = dict(
        line.split("==") for line in CONSTRAINTS.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert name in pinned, f"{name} is not pinned in constraints.txt"
    assert "hiredis" in pinned  # the redis[hiredis] extra
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text()

    image_tag = r"(?:-t |FROM |image: |`|\s)(graflow:[\w.-]+)\b(?![@:])"  # not a key name
    tags = set(re.findall(image_tag, DOCKERFILE.read_text()))
    tags |= set(re.findall(image_tag, README.read_text()))
    tags |= {s["image"] for s in load_compose()["services"].values() if "build" in s}
    assert tags == {"graflow:local"}, tags


def test_readme_says_how_to_keep_the_producers_exit_code_and_where_files_go() -> None:
    text = README.read_text()
    assert "docker compose up --scale worker=3 --exit-code-from producer" in text
    assert "docker compose exec worker graflow status" in text
    assert "read-only for user 10001" in text and "needs a volume" in text
    assert "--exit-code-from producer" in (ROOT / "docker-compose.yml").read_text()
