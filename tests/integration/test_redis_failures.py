"""Issue 14 on Redis: a run with real nodes ends in its result or a named error, in time.

Every test starts its own ``graflow supervisor`` nodes as processes against the session's
redis-server and bounds each wait by a deadline (the run's ``timeout_s`` included).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import graflow
from graflow.core.task import TaskWrapper
from tests.conftest import RedisNode, RedisServer

SECRET_A = "a-secret-shared-by-producer-and-nodes"
RUN_DEADLINE_S = 60.0


def _node_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The node's environment: no GRAFLOW_* of the test's, a config dir of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    config = tmp_path / "node-config"
    config.mkdir(exist_ok=True)
    env.update(XDG_CONFIG_HOME=str(config), **extra)
    return env


@pytest.fixture
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's default secret file lives in a fresh dir: it differs from the node's."""
    config = tmp_path / "producer-config"
    config.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    for name in ("GRAFLOW_SECRET", "GRAFLOW_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def secret_node(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisNode]:
    """A node whose only secret is GRAFLOW_SECRET=SECRET_A."""
    if not redis_server.is_running():
        redis_server.start()
    env = _node_env(tmp_path, GRAFLOW_SECRET=SECRET_A)
    node = RedisNode(redis_server.url, f"q-{uuid.uuid4().hex[:12]}", env=env).start()
    try:
        yield node
    finally:
        node.stop()


def _double(x: int) -> int:
    return 2 * x


def _small_run() -> TaskWrapper:
    return TaskWrapper("double", lambda: _double(21))


# -- point 1: the producer reads GRAFLOW_SECRET / GRAFLOW_SECRET_FILE ---------------------------
def test_the_producer_signs_with_graflow_secret(
    secret_node: RedisNode, own_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAFLOW_SECRET", SECRET_A)
    result = graflow.run(
        _small_run(), redis=secret_node.url, queue=secret_node.queue, timeout_s=RUN_DEADLINE_S
    )
    assert result.value == 42


def test_the_producer_signs_with_graflow_secret_file(
    secret_node: RedisNode, own_config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET_A + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("GRAFLOW_SECRET_FILE", str(path))
    result = graflow.run(
        _small_run(), redis=secret_node.url, queue=secret_node.queue, timeout_s=RUN_DEADLINE_S
    )
    assert result.value == 42


def test_an_explicit_secret_wins_over_the_environment(
    secret_node: RedisNode, own_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAFLOW_SECRET", "not-the-secret-the-nodes-know-at-all")
    result = graflow.run(
        _small_run(),
        redis=secret_node.url,
        queue=secret_node.queue,
        secret=SECRET_A,
        timeout_s=RUN_DEADLINE_S,
    )
    assert result.value == 42
