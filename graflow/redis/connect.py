"""Every Redis client of graflow is built here, from a URL and the TLS files (RedisTLS).

    redis://[user:password@]host:port/db                       one server
    rediss://[user:password@]host:port/db                      one server, over TLS
    unix:///path/to/redis.sock?db=0                            one server, local socket
    redis+cluster://[user:password@]host:port[,host:port...]   a Redis Cluster
    rediss+cluster://...                                       a Redis Cluster, over TLS

A cluster URL names the nodes to start from; redis-py's RedisCluster finds the others,
follows MOVED/ASK redirections and finds the new master after a failover. Every multi-key
command and script of a run uses keys of the run's hash slot (``graflow.redis.keys``), so
the same code serves one server and a cluster.

``connect`` pings and probes what graflow needs, and turns a refusal into a named error:
RedisAuthError (user or password), RedisTLSError (certificates), RedisPermissionError
(ACL), BackendUnavailable (no answer). No message shows the password.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any, Final, TypeAlias, TypeGuard
from urllib.parse import unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterError,
    NoPermissionError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from graflow.config import RedisTLS, redact_url, url_password_forms
from graflow.exceptions import (
    BackendUnavailable,
    ConfigError,
    GraflowError,
    RedisAuthError,
    RedisPermissionError,
    RedisTLSError,
)
from graflow.redis import keys

__all__ = [
    "OUTAGE_ERRORS",
    "RedisClient",
    "access_error",
    "binary_client",
    "client",
    "connect",
    "from_spec",
    "is_cluster",
    "is_passing",
    "refresh_after_outage",
    "spec_of",
]

RedisClient: TypeAlias = "redis.Redis | RedisCluster"

OUTAGE_ERRORS: Final = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,  # the cluster is down, a master is failing over, or redirections ran out
    TryAgainError,
    SlotNotCoveredError,
)
"""Errors that mean Redis, or one shard of a cluster, is away for now: back off, retry."""

# Replies of a Redis that is there but cannot serve a write or a read for now: out of memory
# under ``noeviction``, a replica or a master without its replicas, a failing disk with
# ``stop-writes-on-bgsave-error``, a long script, a dataset still loading.
_PASSING_REPLIES: Final = (
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "BUSY",
    "LOADING",
)


def is_passing(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a command for a condition that passes (retry later, as for an
    outage) rather than for the command itself."""
    message = str(exc)
    return message.split(" ", 1)[0] in _PASSING_REPLIES or isinstance(
        exc, redis.ReadOnlyError | redis.OutOfMemoryError
    )


_CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
_TLS_SCHEMES: Final = ("rediss", "rediss+cluster")
_SPEC_KEYS: Final = ("host", "port", "db", "username", "password")
_ACCESS_PROBE_LUA: Final = "return redis.call('EXISTS', KEYS[1])"


def is_cluster(made: object) -> TypeGuard[RedisCluster]:
    """True if ``made`` is a Redis Cluster client (or one of its pipelines)."""
    return isinstance(made, RedisCluster)


def refresh_after_outage(made: object) -> None:
    """After an outage error on ``made``: a cluster client asks the cluster for its layout.

    redis-py refreshes its slot map after a connection error too, but a refresh made while
    a master was failing over can leave the dead master in the map for good (seen with
    redis-py 8.1); asking again on every retry finds the promoted replica. A no-op for a
    single server, and when the cluster cannot be reached yet (the next retry asks again).
    """
    if is_cluster(made):
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            made.nodes_manager.initialize()


def _nodes(addresses: list[tuple[str, int]]) -> list[ClusterNode]:
    return [
        ClusterNode(host, port)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        for host, port in addresses
    ]


def _tls_options(tls: RedisTLS) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if tls.ca_cert:
        options["ssl_ca_certs"] = tls.ca_cert
    if tls.cert:
        options["ssl_certfile"] = tls.cert
        options["ssl_keyfile"] = tls.key
    return options


def client(
    url: str,
    tls: RedisTLS | None = None,
    *,
    timeout_s: float | None = None,
    decode_responses: bool = False,
) -> RedisClient:
    """A client of ``url`` (bytes replies unless ``decode_responses``); not yet pinged.

    ``timeout_s`` bounds every call (default: none, for blocking reads). ConfigError for a
    malformed URL, or TLS files with a URL that does not use TLS. A cluster client asks a
    node for the cluster's layout at once, so it may raise what ``connect`` names.
    """
    tls = tls if tls is not None else RedisTLS()
    scheme = url.partition("://")[0]
    if tls.is_set and scheme not in _TLS_SCHEMES:
        raise ConfigError(
            f"TLS files (--redis-ca-cert, --redis-cert, --redis-key) need a rediss:// or "
            f"rediss+cluster:// URL, got {redact_url(url)}"
        )
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if scheme in _TLS_SCHEMES:
        options.update(_tls_options(tls))
    if scheme in _CLUSTER_SCHEMES:
        nodes, username, password = _parse_cluster_url(url)
        return RedisCluster(
            startup_nodes=_nodes(nodes),
            username=username,
            password=password,
            ssl=scheme in _TLS_SCHEMES,
            **options,
        )
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {redact_url(url)}: {exc}") from None


def _parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The start nodes, username and password of a ``redis+cluster://`` URL."""
    rest = url.partition("://")[2]
    netloc, _, path = rest.partition("/")
    auth, _, hosts = netloc.rpartition("@")
    if path.partition("?")[0] not in ("", "0") or "?" in netloc or "?" in path:
        raise ConfigError(
            f"invalid Redis URL {redact_url(url)}: a cluster has only database 0 and "
            "takes no options"
        )
    username, password = None, None
    if auth:
        user, has_password, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"invalid Redis URL {redact_url(url)}: nodes are host:port, comma-separated"
            )
        nodes.append((host.strip("[]"), int(port)))
    return nodes, username, password


def connect(url: str, tls: RedisTLS | None = None, *, timeout_s: float | None = None) -> Any:
    """A client of ``url`` that answered PING and may touch graflow's keys and run scripts.

    Raises RedisAuthError, RedisTLSError or RedisPermissionError when Redis refuses
    graflow, BackendUnavailable when it does not answer, ConfigError for a bad URL.
    """
    try:
        made = client(url, tls, timeout_s=timeout_s)
        made.ping()
        # A user whose ACL leaves out graflow's keys or scripting answers PING: find out now,
        # not in the middle of a run. The probe key never exists; EXISTS writes nothing.
        probe = keys.access_probe()
        made.exists(probe)
        made.eval(_ACCESS_PROBE_LUA, 1, probe)
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise access_error(exc, url) from None
    return made


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (or during), outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def access_error(exc: BaseException, url: str) -> GraflowError:
    """The named graflow error for a failure to connect to ``url`` (password kept out)."""
    where = redact_url(url)
    chain = _chain(exc)
    reason = str(exc) or type(exc).__name__
    for secret in url_password_forms(url):
        reason = reason.replace(secret, "***")
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, redis.AuthenticationError) for e in chain) or (
        "WRONGPASS" in text or "NOAUTH" in text or "invalid username-password" in text
    ):
        return RedisAuthError(
            f"Redis at {where} refused the username or password ({reason}): fix the "
            "credentials in the URL (--redis or GRAFLOW_REDIS_URL)"
        )
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in text:
        return RedisTLSError(
            f"TLS with Redis at {where} failed ({reason}): check that the server speaks TLS "
            "and that --redis-ca-cert (GRAFLOW_REDIS_CA_CERT) holds the CA that signed its "
            "certificate, and --redis-cert/--redis-key the client's, if it asks for one"
        )
    if any(isinstance(e, NoPermissionError) for e in chain) or "NOPERM" in text:
        return RedisPermissionError(
            f"the Redis user of {where} may not do what graflow needs ({reason}): grant it "
            "the keys ~graflow:*, the channels &graflow:* and the commands listed in the "
            "README (Redis ACL)"
        )
    return BackendUnavailable(f"Redis at {where} is unreachable: {reason}")


def binary_client(made: RedisClient) -> RedisClient:
    """``made`` if it returns bytes, else a client of the same server(s) that does."""
    if isinstance(made, RedisCluster):
        if not made.get_encoder().decode_responses:  # type: ignore[no-untyped-call]  # unannotated
            return made
        return from_spec(spec_of(made))
    pool = made.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return made
    settings = dict(pool.connection_kwargs, decode_responses=False)
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **settings)
    )


def spec_of(made: RedisClient) -> dict[str, Any]:
    """What it takes to connect again to ``made``'s server(s), e.g. from another process."""
    if isinstance(made, RedisCluster):
        settings = made.nodes_manager.connection_kwargs
        spec: dict[str, Any] = {
            "cluster": [
                (node.host, node.port)
                for node in made.get_primaries()  # type: ignore[no-untyped-call]  # unannotated
            ]
        }
    else:
        settings = made.connection_pool.connection_kwargs
        spec = {}
        if settings.get("path"):
            spec["unix_socket_path"] = settings["path"]
        if issubclass(made.connection_pool.connection_class, redis.SSLConnection):
            spec["ssl"] = True
    spec.update({name: settings[name] for name in _SPEC_KEYS if settings.get(name) is not None})
    if isinstance(made, RedisCluster):
        spec.pop("host", None)
        spec.pop("port", None)
        spec.pop("db", None)
        if settings.get("ssl") or settings.get("connection_class") is redis.SSLConnection:
            spec["ssl"] = True
    if spec.get("ssl"):
        spec.update({name: value for name, value in settings.items() if name.startswith("ssl_")})
    return spec


def from_spec(spec: dict[str, Any]) -> RedisClient:
    """A client (bytes replies) for a spec made by ``spec_of``, or ``{"url": ...}``."""
    if "url" in spec:
        return client(spec["url"], RedisTLS(*spec.get("tls", ())))
    settings = dict(spec)
    nodes = settings.pop("cluster", None)
    if nodes is not None:
        return RedisCluster(
            startup_nodes=_nodes(nodes),
            decode_responses=False,
            **settings,
        )
    return redis.Redis(**settings)


def decodes_responses(made: RedisClient) -> bool:
    """True if ``made`` returns str rather than bytes."""
    if isinstance(made, RedisCluster):
        return bool(made.get_encoder().decode_responses)  # type: ignore[no-untyped-call]
    return bool(made.connection_pool.connection_kwargs.get("decode_responses"))


def client_of(settings: dict[str, Any]) -> redis.Redis:
    """A client built from plain connection settings (``host``, ``port``, ``db``, ...)."""
    return redis.Redis(**settings)
