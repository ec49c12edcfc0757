"""Redis deployments that tests start and kill: a Redis Cluster, and a TLS server with ACL users.

Both run real ``redis-server`` processes on free loopback ports in a test's temporary
directory; the fixtures in ``tests/conftest.py`` start and stop them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

_START_DEADLINE_S = 15.0
_STOP_DEADLINE_S = 10.0
_BUS_PORT_OFFSET = 10_000  # a cluster node also listens on port + 10000 (its cluster bus)

ACL_PASSWORD = "acl-pass-7f3a9c"
OTHER_PASSWORD = "other-pass-2b8e1d"


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too and below 65536."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        port = 20_000 + port % 35_000
        bus = port + _BUS_PORT_OFFSET
        if port in taken or bus in taken or not (_is_free(port) and _is_free(bus)):
            continue
        taken.update((port, bus))
        return port


def _log_tail(directory: Path) -> str:
    log = directory / "redis.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _wait_for_ping(process: subprocess.Popen[bytes], make_client: Any, directory: Path) -> None:
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline and process.poll() is None:
        probe = make_client()
        try:
            if probe.ping():
                return
        except redis.RedisError:
            time.sleep(0.02)
        finally:
            probe.close()
    process.kill()
    pytest.fail(f"redis-server in {directory} did not answer PING:\n{_log_tail(directory)}")


def _stop(process: subprocess.Popen[bytes] | None, *, kill: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=_STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def binaries() -> tuple[str, str]:
    """The paths of redis-server and redis-cli (skip the test, or fail on CI, without them)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        reason = "redis-server and redis-cli are needed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return server, cli


class ClusterServers:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, on loopback."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
    ) -> None:
        self.server, self.cli = binaries()
        self.directory = directory
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        taken: set[int] = set()
        self.ports = [free_cluster_port(taken) for _ in range(masters * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a start node."""
        return "redis+cluster://" + ",".join(f"{self.host}:{port}" for port in self.ports)

    def node_client(self, port: int, **kwargs: Any) -> redis.Redis:
        """A plain client of one node (for CLUSTER commands)."""
        return redis.Redis(host=self.host, port=port, socket_timeout=2.0, **kwargs)

    def client(self) -> RedisCluster:
        """A cluster client returning bytes."""
        nodes = [ClusterNode(self.host, port) for port in self.ports]
        return RedisCluster(startup_nodes=nodes)

    def start(self) -> ClusterServers:
        """Start every node, create the cluster, and wait until its state is ok."""
        for port in self.ports:
            directory = self.directory / str(port)
            directory.mkdir(parents=True, exist_ok=True)
            command = [
                self.server,
                "--port", str(port),
                "--bind", self.host,
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--repl-diskless-sync-delay", "0",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
                "--logfile", "redis.log",
            ]  # fmt: skip
            self.processes[port] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        for port, process in self.processes.items():
            _wait_for_ping(process, lambda port=port: self.node_client(port), self.directory)
        addresses = [f"{self.host}:{port}" for port in self.ports]
        replicas = ["--cluster-replicas", str(self.replicas)]
        create = subprocess.run(
            [self.cli, "--cluster", "create", *addresses, *replicas, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        self.wait_until_ok(self.ports, replicated=False)
        if self.replicas:
            self._write_to_every_master()
            self.wait_until_ok(self.ports)
        return self

    def _write_to_every_master(self) -> None:
        """One key on each master, so that its replicas have something to acknowledge."""
        with self.client() as cluster:
            unwritten = {node.name for node in cluster.get_primaries()}
            index = 0
            while unwritten:
                key = f"sync-probe:{index}"
                name = cluster.get_node_from_key(key).name
                if name in unwritten:
                    cluster.set(key, b"1", ex=60)
                    unwritten.discard(name)
                index += 1

    def wait_until_ok(
        self, ports: list[int], deadline_s: float = 30.0, *, replicated: bool = True
    ) -> None:
        """Wait until every node of ``ports`` says cluster_state:ok and sees all slots (and,
        if ``replicated``, every master has its replicas in sync)."""
        deadline = time.monotonic() + deadline_s
        pending = list(ports)
        while pending:
            port = pending[0]
            try:
                info = self.node_client(port).cluster("info")
                ready = info.get("cluster_state") == "ok" and int(info["cluster_slots_ok"]) == 16384
                if ready and self.replicas and replicated:
                    ready = self._replicas_in_sync(port)
            except (redis.RedisError, KeyError, ValueError):
                ready = False
            if ready:
                pending.pop(0)
            elif time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"cluster node {port} never reached cluster_state:ok")
            else:
                time.sleep(0.05)

    def _replicas_in_sync(self, port: int) -> bool:
        """A master: its replicas acknowledged all it sent; a replica: its link is up.

        A replica may say "connected" before its first sync has delivered anything, and a
        master killed then would leave an empty replica to take over.
        """
        role = self.node_client(port).execute_command("ROLE")
        if role[0] == b"master":
            offset, replicas = int(role[1]), role[2]
            return (
                len(replicas) >= self.replicas
                and offset > 0
                and all(int(r[2]) == offset for r in replicas)
            )
        info = self.node_client(port).info("replication")
        return role[3] == b"connected" and int(info.get("slave_repl_offset", 0)) > 0

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot now."""
        with self.client() as cluster:
            node = cluster.get_node_from_key(key)
            return int(node.port)

    def replica_of(self, master_port: int) -> int:
        """The port of a replica of the master on ``master_port``."""
        role = self.node_client(master_port).execute_command("ROLE")
        return int(role[2][0][1])

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        _stop(self.processes.get(port), kill=True)

    def stop(self) -> None:
        """Kill every node."""
        for process in self.processes.values():
            _stop(process, kill=True)


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {done.stderr}")


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate (SAN 127.0.0.1, localhost) and a client certificate it
    signed, and a second CA that signed nothing here; EC keys (quick to make)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make certificates")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=graflow test {ca}", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=graflow test {name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip
    names = ("ca.crt", "other-ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {name: directory / name for name in names}


class TLSServer:
    """A redis-server that speaks only TLS and only to its ACL users.

    ``graflow`` may touch ``graflow:*`` keys and channels, and run every command outside
    @dangerous; ``other`` may do the same, but only on ``other:*`` keys. The default user
    is off.
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path) -> None:
        self.server, _ = binaries()
        self.directory = directory
        self.certs = make_certificates(directory)
        self.port = free_cluster_port(set())
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, user: str = "graflow", password: str = ACL_PASSWORD) -> str:
        """``rediss://user:password@127.0.0.1:<port>/0``."""
        return f"rediss://{user}:{password}@{self.host}:{self.port}/0"

    def client(self, user: str = "graflow", password: str = ACL_PASSWORD) -> redis.Redis:
        """A client over TLS with the client certificate."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            username=user,
            password=password,
            ssl=True,
            ssl_ca_certs=str(self.certs["ca.crt"]),
            ssl_certfile=str(self.certs["client.crt"]),
            ssl_keyfile=str(self.certs["client.key"]),
            socket_timeout=2.0,
        )

    def start(self) -> TLSServer:
        """Start the server and wait until the graflow user gets an answer to PING."""
        certs = self.certs
        command = [
            self.server,
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", self.host,
            "--tls-cert-file", str(certs["server.crt"]),
            "--tls-key-file", str(certs["server.key"]),
            "--tls-ca-cert-file", str(certs["ca.crt"]),
            "--tls-auth-clients", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            "--user", "default", "off",
            "--user", "graflow", "on", f">{ACL_PASSWORD}", "~graflow:*", "&graflow:*",
            "+@all", "-@dangerous",
            "--user", "other", "on", f">{OTHER_PASSWORD}", "~other:*", "&*",
            "+@all", "-@dangerous",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_ping(self.process, self.client, self.directory)
        return self

    def stop(self) -> None:
        """Kill the server."""
        _stop(self.process, kill=True)
