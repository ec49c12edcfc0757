"""graflow over TLS with Redis ACL users: a TLS-only redis-server whose certificates the
fixture makes with openssl, a ``graflow`` user that may only touch ``graflow:*`` keys, and a
user without rights to them. A full run works; a wrong password, a wrong CA and a user
without rights each end in their named error, whose message never shows the password."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import graflow
from graflow import parallel, task, workflow
from graflow.config import RedisTLS
from graflow.core.task import TaskWrapper
from graflow.exceptions import (
    ConfigError,
    RedisAuthError,
    RedisPermissionError,
    RedisTLSError,
)
from graflow.redis.connect import connect
from tests.conftest import RedisNode
from tests.redis_servers import ACL_PASSWORD, OTHER_PASSWORD, TLSServer

WRONG_PASSWORD = "not-the-password-91c4"
SECRET = "tls test signing secret, 32 bytes"


def tls_of(server: TLSServer, ca: str = "ca.crt") -> RedisTLS:
    certs = server.certs
    return RedisTLS(str(certs[ca]), str(certs["client.crt"]), str(certs["client.key"]))


def tls_flags(server: TLSServer) -> tuple[str, ...]:
    tls = tls_of(server)
    assert tls.ca_cert and tls.cert and tls.key
    return ("--redis-ca-cert", tls.ca_cert, "--redis-cert", tls.cert, "--redis-key", tls.key)


def graflow_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "graflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


@pytest.fixture
def tls_node(tls_redis: TLSServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisNode]:
    """A ``graflow supervisor`` on the TLS server, as the ACL user, with the TLS flags."""
    monkeypatch.setenv("GRAFLOW_SECRET", SECRET)  # inherited by the node
    queue = f"q-{uuid.uuid4().hex[:12]}"
    node = RedisNode(tls_redis.url(), queue, extra_args=tls_flags(tls_redis)).start()
    try:
        yield node
    finally:
        node.stop()


def test_a_full_run_over_tls_as_an_acl_user(tls_redis: TLSServer, tls_node: RedisNode) -> None:
    with workflow("tls") as wf:

        @task(inject_context=True)
        def head(ctx: object) -> int:
            ctx.get_channel().set("n", 0)  # type: ignore[attr-defined]
            return 2

        def bump(ctx: object) -> None:
            ctx.get_channel().atomic_add("n", 1)  # type: ignore[attr-defined]

        members = [TaskWrapper(f"b{i}", bump, inject_context=True) for i in range(4)]

        @task(inject_context=True)
        def total(ctx: object, head: int) -> int:
            return head + int(ctx.get_channel().get("n"))  # type: ignore[attr-defined]

        head >> parallel(*members) >> total

    result = graflow.run(
        wf,
        start="head",
        redis=tls_redis.url(),
        redis_tls=tls_of(tls_redis),
        queue=tls_node.queue,
        secret=SECRET,
        timeout_s=60,
    )
    assert result.value == 6
    assert result.channel["n"] == 4
    # The operations commands take the same files from the environment.
    certs = tls_redis.certs
    env = {
        "GRAFLOW_REDIS_CA_CERT": str(certs["ca.crt"]),
        "GRAFLOW_REDIS_CERT": str(certs["client.crt"]),
        "GRAFLOW_REDIS_KEY": str(certs["client.key"]),
    }
    status = graflow_command("status", "--redis", tls_redis.url(), "--queue", tls_node.queue, **env)
    assert status.returncode == 0, status.stderr
    assert tls_node.queue in status.stdout
    listed = graflow_command(
        "dlq", "list", "--redis", tls_redis.url(), "--queue", tls_node.queue, **env
    )
    assert listed.returncode == 0, listed.stderr


def test_a_wrong_password_is_a_redis_auth_error(tls_redis: TLSServer) -> None:
    url = tls_redis.url(password=WRONG_PASSWORD)
    with pytest.raises(RedisAuthError, match="username or password") as caught:
        connect(url, tls_of(tls_redis))
    assert WRONG_PASSWORD not in str(caught.value)
    assert ACL_PASSWORD not in str(caught.value)
    done = graflow_command("status", "--redis", url, *tls_flags(tls_redis))
    assert done.returncode == 2  # a configuration error: retrying cannot help
    assert "username or password" in done.stderr
    assert WRONG_PASSWORD not in done.stdout + done.stderr


def test_a_wrong_ca_is_a_redis_tls_error(tls_redis: TLSServer) -> None:
    with pytest.raises(RedisTLSError, match="--redis-ca-cert") as caught:
        connect(tls_redis.url(), tls_of(tls_redis, ca="other-ca.crt"))
    assert "certificate verify failed" in str(caught.value)
    assert ACL_PASSWORD not in str(caught.value)
    other_ca = str(tls_redis.certs["other-ca.crt"])
    flags = [*tls_flags(tls_redis)]
    flags[1] = other_ca
    done = graflow_command("dlq", "list", "--redis", tls_redis.url(), *flags)
    assert done.returncode == 2
    assert "TLS" in done.stderr and ACL_PASSWORD not in done.stdout + done.stderr


def test_a_user_without_rights_to_graflow_keys_is_a_redis_permission_error(
    tls_redis: TLSServer,
) -> None:
    url = tls_redis.url(user="other", password=OTHER_PASSWORD)
    with pytest.raises(RedisPermissionError, match="~graflow:") as caught:
        connect(url, tls_of(tls_redis))
    assert OTHER_PASSWORD not in str(caught.value)
    with workflow("denied") as wf:

        @task
        def never() -> None:
            raise AssertionError("ran without rights")

    with pytest.raises(RedisPermissionError):
        graflow.run(
            wf,
            redis=url,
            redis_tls=tls_of(tls_redis),
            secret=SECRET,
            timeout_s=10,
        )


def test_tls_files_are_checked_before_connecting(tls_redis: TLSServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--redis-ca-cert / GRAFLOW_REDIS_CA_CERT"):
        RedisTLS(ca_cert=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="go together"):
        RedisTLS(cert=str(tls_redis.certs["client.crt"]))
    with pytest.raises(ConfigError, match="rediss://"):
        connect(tls_redis.url().replace("rediss://", "redis://"), tls_of(tls_redis))
    done = graflow_command(
        "status", "--redis", tls_redis.url(), "--redis-ca-cert", str(tmp_path / "missing.pem")
    )
    assert done.returncode == 2
    assert "no such file" in done.stderr
