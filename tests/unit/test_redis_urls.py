"""Redis URLs and TLS settings, without a server: parsing, checks, and no password shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from graflow.config import RedisTLS, Settings, redact_url
from graflow.exceptions import ConfigError
from graflow.redis.connect import _parse_cluster_url, access_error, client, is_passing


def test_cluster_urls_name_their_start_nodes_and_credentials() -> None:
    nodes, user, password = _parse_cluster_url("redis+cluster://u:p%40ss@h1:7000,h2:7001/0")
    assert nodes == [("h1", 7000), ("h2", 7001)]
    assert (user, password) == ("u", "p@ss")
    assert _parse_cluster_url("rediss+cluster://[::1]:7000") == ([("::1", 7000)], None, None)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://h1:7000/3",
        "redis+cluster://h1:7000?db=1",
        "redis+cluster://h1",
        "redis+cluster://:secret-pw@h1:x",
    ],
)
def test_bad_cluster_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse_cluster_url(url)
    assert "secret-pw" not in str(caught.value)


def test_redact_url_hides_user_and_password() -> None:
    assert redact_url("rediss://graflow:pw@h:6380/0") == "rediss://***@h:6380/0"
    assert redact_url("redis+cluster://:pw@h1:1,h2:2") == "redis+cluster://***@h1:1,h2:2"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_tls_files_come_from_the_environment(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    env = {
        "GRAFLOW_REDIS_URL": "rediss+cluster://u:pw@h:7000",
        "GRAFLOW_REDIS_CA_CERT": str(tmp_path / "ca.pem"),
        "GRAFLOW_REDIS_CERT": str(tmp_path / "c.pem"),
        "GRAFLOW_REDIS_KEY": str(tmp_path / "k.pem"),
    }
    settings = Settings.from_env(env)
    assert settings.redis_tls == RedisTLS(
        *(str(tmp_path / n) for n in ("ca.pem", "c.pem", "k.pem"))
    )
    assert "pw" not in repr(settings)
    with pytest.raises(ConfigError, match="GRAFLOW_REDIS_KEY"):
        Settings.from_env({**env, "GRAFLOW_REDIS_KEY": str(tmp_path / "missing")})


def test_tls_files_need_a_tls_url(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="rediss://"):
        client("redis://:pw@127.0.0.1:1/0", RedisTLS(ca_cert=str(tmp_path / "ca.pem")))


def test_an_unknown_failure_is_backend_unavailable_without_the_password() -> None:
    error = access_error(OSError("refused for secret-pw"), "redis://:secret-pw@h:1/0")
    assert type(error).__name__ == "BackendUnavailable"
    assert "secret-pw" not in str(error)


@pytest.mark.parametrize(
    "error, passing",
    [
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), True),
        (redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
        (redis.ReadOnlyError("You can't write against a read only replica."), True),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but..."), True),
        (redis.ResponseError("BUSY Redis is busy running a script."), True),
        (redis.ResponseError("MASTERDOWN Link with MASTER is down"), True),
        (redis.ResponseError("ERR unknown command 'FOO'"), False),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (redis.ResponseError("NOSCRIPT No matching script"), False),
        (redis.ResponseError("BUSYGROUP Consumer Group name already exists"), False),
    ],
)
def test_what_redis_refuses_for_now_is_told_from_what_it_refuses_for_good(
    error: redis.ResponseError, passing: bool
) -> None:
    assert is_passing(error) is passing
