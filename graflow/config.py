"""Settings built once at the edge (CLI, environment) and passed down: the only env reader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from graflow.exceptions import ConfigError
from graflow.trace.setup import TRACERS, TraceSetup, check_otel_installed

__all__ = [
    "REDIS_URL_SCHEMES",
    "RedisTLS",
    "Settings",
    "redact_url",
    "signing_secret",
    "url_password_forms",
]

REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
"""What a Redis URL may start with: one server, over TLS, a socket, or a Redis Cluster."""


def redact_url(url: str) -> str:
    """``url`` with its user and password replaced by ``***`` (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if not sep or "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rsplit('@', 1)[1]}{slash}{path}"


def url_password_forms(url: str | None) -> list[str]:
    """The password of a Redis URL as written, decoded and re-encoded (to redact them)."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if not password:
        return []
    return [password, unquote(password), quote(unquote(password), safe="")]


@dataclass(frozen=True)
class RedisTLS:
    """The certificate files of a TLS connection to Redis (``rediss://``); None: not given.

    ``ca_cert`` verifies the server (default: the system's CAs); ``cert`` and ``key`` are
    this client's certificate and private key, for servers that ask for one.
    """

    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_cert", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                flag, env = name.replace("_", "-"), name.upper()
                raise ConfigError(f"--redis-{flag} / GRAFLOW_REDIS_{env} {path!r}: no such file")
        if (self.cert is None) != (self.key is None):
            raise ConfigError(
                "--redis-cert and --redis-key (GRAFLOW_REDIS_CERT, GRAFLOW_REDIS_KEY) go "
                "together: give both or neither"
            )

    @property
    def is_set(self) -> bool:
        """True if any file is given."""
        return any((self.ca_cert, self.cert, self.key))


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def _otlp_endpoint(env: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the standard OpenTelemetry variables name, if any."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        return base.rstrip("/") + "/v1/traces"  # the generic one names the collector
    return None


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    return default if value is None else value


DEFAULT_THREADS = 16
DEFAULT_MAX_ASYNC = 1000


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
    redis_ca_cert: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = None
    history: str | None = None
    """Where runs are recorded (``GRAFLOW_HISTORY``): ``off``, a SQLite file, None: default."""
    state_dir: str | None = None
    """Where per-user state (the run history) goes: ``$XDG_STATE_HOME`` when set."""
    ui_token: str | None = None
    """The token ``graflow ui`` asks for on an address other than loopback."""
    tracer: str = "off"
    """``otel``: trace runs with OpenTelemetry (``--tracer`` / ``GRAFLOW_TRACER``)."""
    otlp_endpoint: str | None = None
    """Where spans go over OTLP/HTTP (``--otlp-endpoint``; the OTEL_EXPORTER_OTLP_* vars)."""
    service_name: str = "graflow"
    """The ``service.name`` of the spans (``OTEL_SERVICE_NAME``)."""
    threads: int = DEFAULT_THREADS
    """io tasks a worker process runs at once (``GRAFLOW_THREADS``)."""
    max_async: int = DEFAULT_MAX_ASYNC
    """async tasks a worker process keeps in flight (``GRAFLOW_MAX_ASYNC``)."""

    def __post_init__(self) -> None:
        if self.processes is not None and self.processes < 1:
            raise ConfigError(f"processes must be >= 1, got {self.processes}")
        check_lane_sizes(self.threads, self.max_async)
        if not self.queue or any(c in self.queue for c in "\n\0{}"):
            raise ConfigError(f"queue name {self.queue!r} is not allowed")
        if self.mode not in ("worker", "producer"):
            raise ConfigError(f"GRAFLOW_MODE must be 'worker' or 'producer', got {self.mode!r}")
        if self.lease_s <= 0:
            raise ConfigError(f"lease_s must be > 0, got {self.lease_s}")
        if self.max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, got {self.max_deliveries}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_URL_SCHEMES):
            raise ConfigError(f"redis URL must start with {', '.join(REDIS_URL_SCHEMES)}")
        RedisTLS(self.redis_ca_cert, self.redis_cert, self.redis_key)  # checks the files now
        if self.tracer not in TRACERS:
            raise ConfigError(
                f"--tracer / GRAFLOW_TRACER must be one of {', '.join(TRACERS)}, "
                f"got {self.tracer!r}"
            )
        if self.tracer == "otel":
            check_otel_installed()
        TraceSetup(self.otlp_endpoint, self.service_name)  # checks the URL now

    @property
    def trace_setup(self) -> TraceSetup | None:
        """Where traced runs send their spans (None: tracing is off)."""
        if self.tracer != "otel":
            return None
        return TraceSetup(self.otlp_endpoint, self.service_name)

    @property
    def redis_tls(self) -> RedisTLS:
        """The TLS files of the Redis connection."""
        return RedisTLS(self.redis_ca_cert, self.redis_cert, self.redis_key)

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
            redis_ca_cert=env.get("GRAFLOW_REDIS_CA_CERT") or None,
            redis_cert=env.get("GRAFLOW_REDIS_CERT") or None,
            redis_key=env.get("GRAFLOW_REDIS_KEY") or None,
            history=env.get("GRAFLOW_HISTORY") or None,
            state_dir=env.get("XDG_STATE_HOME") or None,
            ui_token=env.get("GRAFLOW_UI_TOKEN") or None,
            tracer=(env.get("GRAFLOW_TRACER") or "off").lower(),
            otlp_endpoint=_otlp_endpoint(env),
            service_name=env.get("OTEL_SERVICE_NAME") or "graflow",
            threads=_size(env, "GRAFLOW_THREADS", DEFAULT_THREADS),
            max_async=_size(env, "GRAFLOW_MAX_ASYNC", DEFAULT_MAX_ASYNC),
        )

    def __repr__(self) -> str:
        # Never show the secret or a password embedded in the URL.
        url = redact_url(self.redis_url) if self.redis_url else None
        return (
            f"Settings(redis_url={url!r}, queue={self.queue!r}, processes={self.processes}, "
            f"worker_id={self.worker_id!r}, mode={self.mode!r}, "
            f"secret={'***' if self.secret else None})"
        )


def signing_secret(
    secret: str | bytes | None, secret_file: str | None, env: Settings | None = None
) -> tuple[str | bytes | None, str | None]:
    """The signing secret of a public entry point: what its caller gave, else the environment.

    An explicit ``secret`` or ``secret_file`` wins (both of the caller's, none of the env's);
    otherwise GRAFLOW_SECRET, then GRAFLOW_SECRET_FILE, as ``Settings.from_env`` reads them
    (``env``: settings already read). None and None: the per-user default secret file.
    """
    if secret is not None or secret_file is not None:
        return secret, secret_file
    settings = env if env is not None else Settings.from_env()
    return settings.secret, settings.secret_file


def check_lane_sizes(threads: int, max_async: int) -> None:
    """ConfigError naming the fix for a lane size no worker can use."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(
            f"threads must be an int >= 1 (how many io=True tasks a worker process runs at "
            f"once; plain tasks run one at a time whatever it is), got {threads!r}"
        )
    if isinstance(max_async, bool) or not isinstance(max_async, int) or max_async < 1:
        raise ConfigError(
            f"max_async must be an int >= 1 (how many async tasks a worker process keeps in "
            f"flight), got {max_async!r}"
        )


def lane_sizes(
    threads: int | None, max_async: int | None, env: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """``threads`` and ``max_async``: the arguments, else GRAFLOW_THREADS / GRAFLOW_MAX_ASYNC,
    else the defaults (16, 1000). Raises ConfigError for a size no worker can use."""
    env = os.environ if env is None else env
    sizes = (
        _size(env, "GRAFLOW_THREADS", DEFAULT_THREADS) if threads is None else threads,
        _size(env, "GRAFLOW_MAX_ASYNC", DEFAULT_MAX_ASYNC) if max_async is None else max_async,
    )
    check_lane_sizes(*sizes)
    return sizes
