"""HMAC-SHA256 signing of every pickled blob that crosses Redis.

Anyone who can write to Redis could otherwise make every worker unpickle (that is, run) what
they wrote. A blob is trusted only if it carries a MAC made with the shared secret, and it
is checked before a single byte of it is unpickled. The envelope::

    b"GFS" | format (1 byte) | python major, minor (2 bytes) | len(graflow version) (1 byte)
        | graflow version (ASCII) | HMAC-SHA256(secret, everything before it + payload) | payload

The header names the Python and graflow versions that made the payload, because pickles of
classes and cloudpickled code only load in the same versions; a mismatch is reported as
version skew rather than as a crash while unpickling.

Secrets never travel in pickles: a pickled ``Signer`` holds only its key id (a keyed hash of
the secret) and is resolved on unpickling through the signers created in that process, or
else the default secret file. ``_signers`` is that process-wide registry; it is the one
mutable global here, so a worker that builds a ``Signer`` from the run's secret can then
unpickle channels and contexts that name it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from graflow import __version__
from graflow.core import codec
from graflow.exceptions import ConfigError, RejectedBlob

__all__ = ["MIN_SECRET_BYTES", "Signer", "default_secret_path", "load_secret", "signer_for"]

MIN_SECRET_BYTES: Final = 16

_MAGIC: Final = b"GFS"
_FORMAT: Final = 1
_MAC_BYTES: Final = hashlib.sha256().digest_size
# magic, format, python major and minor, length of the graflow version.
_FIXED_BYTES: Final = len(_MAGIC) + 4


def _make_header(python: tuple[int, int], graflow_version: str) -> bytes:
    """The envelope header for a payload made by ``python`` and ``graflow_version``."""
    version = graflow_version.encode("ascii")
    return _MAGIC + bytes([_FORMAT, python[0], python[1], len(version)]) + version


_PYTHON: Final = (sys.version_info.major, sys.version_info.minor)
_HEADER = _make_header(_PYTHON, __version__)

_signers: dict[str, Signer] = {}


def _key_id(secret: bytes) -> str:
    """A name for ``secret`` that reveals nothing about it (a keyed hash, 16 hex digits)."""
    return hmac.new(secret, b"graflow signing key id", hashlib.sha256).hexdigest()[:16]


class Signer:
    """Signs blobs with one secret and accepts blobs signed with it or any previous one.

    Thread safe; ``sign``/``verify`` hold no state. Pickles as its key id only (see the module
    docstring).
    """

    def __init__(self, secret: bytes, previous: Iterable[bytes] = ()) -> None:
        keys = [_checked_secret(secret), *(_checked_secret(old) for old in previous)]
        self._keys: tuple[bytes, ...] = tuple(keys)
        self.key_id = _key_id(keys[0])
        _signers[self.key_id] = self

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r}, previous={len(self._keys) - 1})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (signer_for, (self.key_id,))

    def sign(self, payload: bytes) -> bytes:
        """``payload`` in a signed envelope."""
        return b"".join((self.envelope(payload), payload))

    def envelope(self, payload: bytes | memoryview) -> bytes:
        """What goes in front of ``payload`` in its signed envelope (header and MAC).

        ``envelope(p) + p == sign(p)``: a large payload can be sent after it as it is.
        """
        mac = hmac.new(self._keys[0], _HEADER, hashlib.sha256)
        mac.update(payload)
        return _HEADER + mac.digest()

    def verify(self, blob: bytes) -> bytes:
        """The payload of a signed ``blob``; ``RejectedBlob`` (a PoisonMessage) otherwise."""
        return bytes(self._verified(bytes(blob)))

    def _verified(self, blob: bytes) -> memoryview:
        """The payload of a signed ``blob``, as a view into it (no copy of a large one)."""
        if not blob.startswith(_MAGIC):
            raise RejectedBlob("unsigned", f"unsigned blob of {len(blob)} bytes")
        if len(blob) < _FIXED_BYTES:
            raise RejectedBlob("truncated", f"truncated blob of {len(blob)} bytes")
        if blob[len(_MAGIC)] != _FORMAT:
            raise RejectedBlob(
                "format", f"unknown envelope format {blob[len(_MAGIC)]} (this graflow reads 1)"
            )
        header_end = _FIXED_BYTES + blob[_FIXED_BYTES - 1]
        if len(blob) < header_end + _MAC_BYTES:
            raise RejectedBlob("truncated", f"truncated blob of {len(blob)} bytes")
        header, mac = blob[:header_end], blob[header_end : header_end + _MAC_BYTES]
        payload = memoryview(blob)[header_end + _MAC_BYTES :]
        if not any(hmac.compare_digest(mac, _mac(key, header, payload)) for key in self._keys):
            raise RejectedBlob("signature", "bad signature (forged or signed with another secret)")
        if header != _HEADER:
            raise RejectedBlob("version", _skew_message(header))
        return payload

    def dumps(self, obj: Any) -> bytes:
        """``obj`` pickled (``graflow.core.codec``) and signed."""
        return self.sign(codec.dumps(obj))

    def loads(self, blob: bytes) -> Any:
        """The object in a blob made by ``dumps``, unpickled only after its signature checks."""
        return codec.loads(self._verified(bytes(blob)))


def _mac(key: bytes, header: bytes, payload: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of header and payload under ``key``."""
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def _skew_message(header: bytes) -> str:
    """The version-skew reason for an authentic blob with another ``header``."""
    major, minor = header[len(_MAGIC) + 1], header[len(_MAGIC) + 2]
    theirs = header[_FIXED_BYTES:].decode("ascii", "replace")
    return (
        f"version skew: made by Python {major}.{minor} / graflow {theirs}, "
        f"this is Python {_PYTHON[0]}.{_PYTHON[1]} / graflow {__version__}"
    )


def signer_for(key_id: str) -> Signer:
    """The signer of this process whose secret has ``key_id`` (used to unpickle a Signer).

    Looks among the signers created in this process, then at the default secret file.
    """
    found = _signers.get(key_id)
    if found is not None:
        return found
    with contextlib.suppress(ConfigError):
        secret = load_secret(create_default=False)
        if _key_id(secret) == key_id:
            return Signer(secret)
    raise ConfigError(
        f"no signing secret with key id {key_id} in this process: create a Signer from the "
        "run's secret (for example GRAFLOW_SECRET) before unpickling, or share the secret file"
    )


def _checked_secret(secret: bytes) -> bytes:
    """``secret`` if it is long enough; ConfigError (that never shows it) otherwise."""
    if not isinstance(secret, bytes | bytearray):
        raise ConfigError(f"a signing secret must be bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the signing secret is too short: {len(secret)} bytes, "
            f"at least {MIN_SECRET_BYTES} are needed"
        )
    return bytes(secret)


def default_secret_path() -> Path:
    """``$XDG_CONFIG_HOME/graflow/secret``, or ``~/.config/graflow/secret``."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "graflow" / "secret"


def load_secret(
    secret: str | bytes | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    *,
    create_default: bool = True,
) -> bytes:
    """The signing secret: ``secret``, else ``secret_file``, else the per-user default file.

    The default file (``default_secret_path()``) is created with 32 random bytes in hex and
    mode 0600 when missing and ``create_default`` is true; that is enough for one machine,
    while several machines must share one secret. Surrounding whitespace is stripped, so the
    same text in ``GRAFLOW_SECRET`` and in a file is the same secret. Raises ``ConfigError``
    for a secret shorter than 16 bytes, a secret file that group or others can read, or no
    secret at all.
    """
    if secret is not None:
        raw = secret.encode() if isinstance(secret, str) else secret
        return _checked_secret(raw.strip())
    if secret_file is not None:
        return _read_secret_file(Path(secret_file))
    path = default_secret_path()
    if not path.exists():
        if not create_default:
            raise ConfigError(f"no signing secret: pass one or create the secret file {path}")
        _create_secret_file(path)
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace stripped), if only its owner can read it."""
    try:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"secret file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}): run 'chmod 600 {path}'"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None
    return _checked_secret(raw.strip())


def _create_secret_file(path: Path) -> None:
    """Write a new random secret to ``path``, mode 0600, unless another process just did."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        # link() never replaces: of two processes creating the file at once, one secret wins.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
