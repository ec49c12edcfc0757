"""Shared fixtures: no workflow current in any test's thread; a private redis-server per worker."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

import graflow
from graflow.core.workflow import clear_workflow_context
from tests.redis_servers import ClusterServers, TLSServer

_START_DEADLINE_S = 10.0
_STOP_DEADLINE_S = 10.0

# Runs record their history under $XDG_STATE_HOME (graflow.history): keep every test's runs,
# and those of the processes tests start, out of the real home, in one directory per test
# process that goes when the process ends.
_STATE_DIR = tempfile.TemporaryDirectory(prefix="graflow-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE_DIR.name
os.environ.pop("GRAFLOW_HISTORY", None)


@pytest.fixture(autouse=True)
def _no_current_workflow() -> Iterator[None]:
    clear_workflow_context()
    yield
    clear_workflow_context()


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A redis-server subprocess on loopback that tests may stop, kill and restart."""

    host = "127.0.0.1"

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.extra_args: tuple[str, ...] = ()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of this server (bytes replies unless ``decode_responses=True``)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, *extra_args: str) -> None:
        """Start the server (same port and directory), e.g. ``start("--appendonly", "yes")``."""
        if self.is_running():
            raise RuntimeError("redis-server is already running")
        self.extra_args = extra_args
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            *extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_ready()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it saves if persistence is on) or, with ``kill``, SIGKILL."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=_STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, *extra_args: str, kill: bool = False) -> None:
        """Stop and start again, with ``extra_args`` or else the arguments of the last start."""
        self.stop(kill=kill)
        self.start(*(extra_args or self.extra_args))

    def _wait_until_ready(self) -> None:
        """Poll PING until the server answers; fail with its log if it exits or stays silent."""
        assert self.process is not None
        deadline = time.monotonic() + _START_DEADLINE_S
        probe = self.client(socket_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)
        finally:
            probe.close()
        log = self.directory / "redis.log"
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        self.stop(kill=True)
        pytest.fail(f"redis-server on port {self.port} did not answer PING:\n{text}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test session (one per xdist worker) on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's redis-server that returns bytes."""
    if not redis_server.is_running():  # a chaos test stopped it
        redis_server.start()
    client = redis_server.client(decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses, so tests share the server without flushing it."""
    return f"test-{uuid.uuid4().hex[:16]}"


class RedisNode:
    """A ``graflow supervisor --redis`` node running as a real process group."""

    def __init__(
        self,
        url: str,
        queue: str,
        processes: int = 2,
        lease_s: float = 1.0,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env
        self.url = url
        self.queue = queue
        self.processes = processes
        self.lease_s = lease_s
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads the node's log while it runs, and a full pipe
        # would block every worker that logs (one warning per dead letter fills it quickly).
        # It lives as long as the node, so no `with`: stop() closes it.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115

    def start(self) -> RedisNode:
        """Start the node; returns once its workers registered with Redis."""
        command = [
            sys.executable, "-m", "graflow", "supervisor",
            "--redis", self.url,
            "--queue", self.queue,
            "--processes", str(self.processes),
            "--lease-s", str(self.lease_s),
            "--grace-s", "5",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
            env=self.env,
        )
        deadline = time.monotonic() + _START_DEADLINE_S
        while len(self.worker_pids()) < self.processes:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                pytest.fail(f"graflow supervisor did not start: {err[-2000:]}")
            time.sleep(0.05)
        return self

    def worker_pids(self) -> list[int]:
        """Process ids of the node's live worker processes."""
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if c.is_running()]

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (drain) or SIGKILL the whole node, and wait for it."""
        if self.process is None:
            return
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=_STOP_DEADLINE_S * 3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()
        self.process = None


@pytest.fixture
def redis_node(redis_server: RedisServer) -> Iterator[RedisNode]:
    """A node of 2 worker processes serving a queue of its own on the session's Redis."""
    if not redis_server.is_running():
        redis_server.start()
    node = RedisNode(redis_server.url, f"q-{uuid.uuid4().hex[:12]}").start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def shared_redis_node(redis_server: RedisServer) -> Iterator[RedisNode]:
    """One node for the whole session, for tests that only need some node to be there."""
    node = RedisNode(redis_server.url, f"shared-{uuid.uuid4().hex[:12]}").start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A Redis Cluster of 3 masters (no replicas) of this test session, on loopback."""
    cluster = ClusterServers(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_cluster_node(redis_cluster: ClusterServers) -> Iterator[RedisNode]:
    """One node serving a queue on the session's Redis Cluster."""
    node = RedisNode(redis_cluster.url, f"shared-{uuid.uuid4().hex[:12]}").start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    """A TLS-only redis-server with ACL users (see TLSServer), its certificates made here."""
    server = TLSServer(tmp_path_factory.mktemp("tls")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def supervisors() -> Iterator[Callable[..., graflow.Supervisor]]:
    """``supervisors(start_method, **options)``: a pool of 2 workers, forked once per module."""
    made: dict[tuple[Any, ...], graflow.Supervisor] = {}

    def get(start_method: str, **options: Any) -> graflow.Supervisor:
        key = (start_method, *sorted(options.items()))
        if key not in made:
            made[key] = graflow.Supervisor(2, start_method=start_method, **options)
        return made[key]

    yield get
    for sup in made.values():
        sup.close()


Runner = Callable[..., Any]


def runner_for(request: pytest.FixtureRequest, kind: str) -> Runner:
    """A `graflow.run`-like callable on one backend: inprocess, fork, spawn, redis or cluster."""
    if kind == "inprocess":
        return lambda target, **kw: graflow.run(target, processes=0, **kw)
    if kind in ("redis", "cluster"):
        node = request.getfixturevalue(f"shared_{kind}_node")
        return lambda target, **kw: graflow.run(
            target, redis=node.url, queue=node.queue, timeout_s=60, **kw
        )
    sup = request.getfixturevalue("supervisors")(kind)
    return lambda target, **kw: sup.run(target, **kw)


@pytest.fixture(params=["inprocess", "fork", "spawn", "redis"])
def run_on(request: pytest.FixtureRequest) -> Runner:
    """The test's workflow runner, once per backend."""
    return runner_for(request, request.param)
