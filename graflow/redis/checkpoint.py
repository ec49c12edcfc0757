"""A run's checkpoint kept in Redis: ``graflow.run(wf, checkpoint="redis://host:6379/0#nightly")``.

The URL is a Redis URL plus ``#<name>``; the checkpoint is the key ``keys.checkpoint(name)``
(default name ``default``). Its value is the checkpoint container (``graflow.core.
checkpoint_store``) signed with the run's secret, written with one SET in a MULTI/EXEC
transaction, so a reader sees the old checkpoint or the new one. An unsigned or forged value
is refused before it is unpickled (``CorruptCheckpoint``). The key carries the channel's TTL:
a Redis run's channel keys, which a resume needs, expire after the same time.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisClusterException

from graflow.config import RedisTLS
from graflow.core.checkpoint_store import STORE_FACTORIES
from graflow.exceptions import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    CorruptCheckpoint,
    RejectedBlob,
)
from graflow.redis import keys
from graflow.redis.channel import DEFAULT_TTL_S
from graflow.redis.connect import OUTAGE_ERRORS, client
from graflow.redis.signing import Signer, load_secret

__all__ = ["RedisCheckpointStore"]


class RedisCheckpointStore:
    """A checkpoint in one Redis key, replaced in one transaction and signed."""

    def __init__(
        self,
        location: str,
        signer: Signer,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        tls: RedisTLS | None = None,
    ) -> None:
        url, _, name = location.partition("#")
        self.location = location
        self.key = keys.checkpoint(name or "default")
        self.signer = signer
        self.ttl_s = ttl_s
        try:
            self.client: Any = client(url, tls)
        except ConfigError as exc:
            raise ConfigError(f"checkpoint {location!r}: {exc}") from None
        except (redis.RedisError, RedisClusterException) as exc:
            raise BackendUnavailable(
                f"checkpoint {location}: Redis is unreachable: {exc}", cause=exc
            ) from exc

    def read(self) -> bytes | None:
        """The checkpoint's bytes (signature checked), or None if there is none."""
        blob = self._call(self.client.get, self.key)
        if blob is None:
            return None
        try:
            return self.signer.verify(blob)
        except RejectedBlob as exc:
            raise CorruptCheckpoint(self.location, f"refused: {exc.message}") from None

    def write(self, data: bytes) -> None:
        """Replace the checkpoint in one MULTI/EXEC."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key, self.signer.sign(data), px=int(self.ttl_s * 1000))
        self._call(pipe.execute)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OUTAGE_ERRORS as exc:
            raise BackendUnavailable(
                f"checkpoint {self.location}: Redis is unreachable: {exc}", cause=exc
            ) from exc
        except redis.RedisError as exc:
            raise CheckpointError(self.location, f"Redis failed: {exc}", cause=exc) from exc


def _open(location: str, options: dict[str, Any]) -> RedisCheckpointStore:
    signer = options.get("signer")
    if not isinstance(signer, Signer):
        signer = Signer(load_secret(options.get("secret"), options.get("secret_file")))
    tls = options.get("redis_tls")
    return RedisCheckpointStore(location, signer, tls=tls if isinstance(tls, RedisTLS) else None)


for _scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
    STORE_FACTORIES[_scheme] = _open
