"""Settings built once at the edge (CLI, environment) and passed down: the only env reader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from graflow.exceptions import ConfigError

__all__ = ["Settings"]


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


@dataclass(frozen=True)
class Settings:
    """Where Redis is, how a node serves it, and how blobs are signed."""

    redis_url: str | None = None
    queue: str = "default"
    processes: int | None = None
    worker_id: str = ""
    mode: str = "worker"
    secret: str | None = None
    secret_file: str | None = None
    lease_s: float = 30.0
    max_deliveries: int = 3
    grace_s: float = 10.0
    runtime_dir: str | None = None
    """Where per-user runtime files (run locks) go: ``$XDG_RUNTIME_DIR`` when set."""

    def __post_init__(self) -> None:
        if self.processes is not None and self.processes < 1:
            raise ConfigError(f"processes must be >= 1, got {self.processes}")
        if not self.queue or any(c in self.queue for c in "\n\0{}"):
            raise ConfigError(f"queue name {self.queue!r} is not allowed")
        if self.mode not in ("worker", "producer"):
            raise ConfigError(f"GRAFLOW_MODE must be 'worker' or 'producer', got {self.mode!r}")
        if self.lease_s <= 0:
            raise ConfigError(f"lease_s must be > 0, got {self.lease_s}")
        if self.max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, got {self.max_deliveries}")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError("redis URL must start with redis://, rediss:// or unix://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment (GRAFLOW_REDIS_URL or REDIS_HOST/PORT/DB, ...)."""
        env = os.environ if env is None else env
        url = env.get("GRAFLOW_REDIS_URL") or None
        if url is None and env.get("REDIS_HOST"):
            host = env["REDIS_HOST"]
            port = _int(env, "REDIS_PORT", 6379)
            db = _int(env, "REDIS_DB", 0)
            password = env.get("REDIS_PASSWORD")
            auth = f":{quote(password, safe='')}@" if password else ""
            url = f"redis://{auth}{host}:{port}/{db}"
        return cls(
            redis_url=url,
            queue=env.get("GRAFLOW_QUEUE") or "default",
            processes=_int(env, "MAX_CONCURRENT_TASKS", None),
            worker_id=env.get("WORKER_ID", ""),
            mode=env.get("GRAFLOW_MODE") or "worker",
            secret=env.get("GRAFLOW_SECRET") or None,
            secret_file=env.get("GRAFLOW_SECRET_FILE") or None,
            runtime_dir=env.get("XDG_RUNTIME_DIR") or None,
        )

    def __repr__(self) -> str:
        # Never show the secret or a password embedded in the URL.
        url = self.redis_url
        if url and "@" in url:
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return (
            f"Settings(redis_url={url!r}, queue={self.queue!r}, processes={self.processes}, "
            f"worker_id={self.worker_id!r}, mode={self.mode!r}, "
            f"secret={'***' if self.secret else None})"
        )
