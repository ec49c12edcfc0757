"""graflow.utils.redis_utils against a real redis-server: settings out of a client and back."""

from __future__ import annotations

from typing import Any

from graflow.utils.redis_utils import (
    create_redis_client,
    ensure_redis_connection_params,
    extract_redis_config,
)


def test_a_client_travels_as_its_settings(redis_server: Any) -> None:
    original = redis_server.client(decode_responses=True, db=3)
    try:
        config = extract_redis_config(original)
        assert config["host"] == redis_server.host
        assert config["port"] == redis_server.port
        assert config["db"] == 3
        assert config["decode_responses"] is True
        rebuilt = create_redis_client(config)
        try:
            rebuilt.set("compat:key", "value")
            assert original.get("compat:key") == "value"  # same server, same db, str replies
        finally:
            rebuilt.delete("compat:key")
            rebuilt.close()
        assert create_redis_client({"redis_client": original}) is original
    finally:
        original.close()


def test_connection_params_are_added_beside_a_client(redis_server: Any) -> None:
    client = redis_server.client()
    try:
        config: dict[str, Any] = {"redis_client": client, "port": 1}
        ensure_redis_connection_params(config)
        assert config["host"] == redis_server.host
        assert config["port"] == 1  # what the config already says wins
        assert config["decode_responses"] is False
        empty: dict[str, Any] = {"key_prefix": "p"}
        ensure_redis_connection_params(empty)
        assert empty == {"key_prefix": "p"}
    finally:
        client.close()
