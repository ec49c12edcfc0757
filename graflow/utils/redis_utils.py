"""Redis connection settings as plain dicts, under upstream's names.

A client travels between processes as its settings (``extract_redis_config``) and is built
again from them (``create_redis_client``); ``ensure_redis_connection_params`` adds the
settings of a ``redis_client`` found in a config dict.
"""

from __future__ import annotations

from typing import Any

from graflow.redis.connect import client_of, decodes_responses, spec_of

__all__ = ["create_redis_client", "ensure_redis_connection_params", "extract_redis_config"]


def extract_redis_config(redis_client: Any) -> dict[str, Any]:
    """The settings that reconnect to ``redis_client``'s server: host, port, db, ..."""
    config: dict[str, Any] = {"host": "localhost", "port": 6379, "db": 0}
    config.update(spec_of(redis_client))
    config["decode_responses"] = decodes_responses(redis_client)
    return config


def create_redis_client(config: dict[str, Any]) -> Any:
    """``config["redis_client"]`` if there is one, else a client built from the settings."""
    existing = config.get("redis_client")
    if existing is not None:
        return existing
    settings = {k: v for k, v in config.items() if k not in ("redis_client", "key_prefix")}
    return client_of(settings)


def ensure_redis_connection_params(config: dict[str, Any]) -> None:
    """Add the settings of ``config["redis_client"]`` (if any) where the config has none."""
    existing = config.get("redis_client")
    if existing is None:
        return
    for key, value in extract_redis_config(existing).items():
        config.setdefault(key, value)
