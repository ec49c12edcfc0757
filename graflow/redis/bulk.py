"""Large string values to and from Redis without copying them in Python.

redis-py packs a command into one buffer (with hiredis: the whole value copied, twice for
a memoryview) and parses a reply by feeding 64 KB reads into an incremental reader that
copies them again and once more into the final ``bytes``. For a 100 MB value that is most
of the time of a SET or a GET. Here, on a connection taken from the client's pool:

    set_parts   SET <name> <parts joined> PX <ms>: the parts are sent as they are, so a
                marker and a payload are never concatenated
    get_string  GET <name>: the reply header is read, then the value is received in one
                ``recv(MSG_WAITALL)`` straight into the ``bytes`` returned (and a known
                marker in front of it is read off separately instead of sliced away)

Both fall back to plain redis-py commands for clients without a connection pool (Redis
Cluster) and, for reading, for connections that are not plain sockets (TLS). Values below
``LARGE_BYTES`` gain nothing and take the plain commands.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence
from typing import Any, Final

import redis

__all__ = ["LARGE_BYTES", "WrongType", "get_string", "set_parts"]

LARGE_BYTES: Final = 1 << 20
_PEEK_BYTES: Final = 1 << 16
_CRLF: Final = b"\r\n"
_NOT_A_STRING_REPLY: Final = object()


class WrongType(Exception):
    """Raised when the key holds something other than a string (a list, a hash, ...)."""


def set_parts(client: Any, name: str, parts: Sequence[bytes | memoryview], px: int) -> None:
    """SET ``name`` to the concatenation of ``parts`` with a TTL of ``px`` milliseconds."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        client.set(name, b"".join(parts), px=px)
        return
    key = name.encode()
    size = sum(len(part) for part in parts)
    ttl = b"%d" % px
    head = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, size)
    tail = b"\r\n$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl)
    conn = pool.get_connection()
    try:
        conn.send_packed_command([head, *parts, tail])
        conn.read_response()
    except redis.ResponseError:
        raise  # the reply was read: the connection is fine
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def get_string(client: Any, name: str, marker: bytes = b"") -> tuple[bool, bytes] | None:
    """The string under ``name``: (True, the rest) if it starts with ``marker``, else
    (False, the whole value); None when the key does not exist.

    Raises WrongType when the key holds another type.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return _split(_plain_get(client, name), marker)
    conn = pool.get_connection()
    try:
        sock = getattr(conn, "_sock", None)
        conn.send_command("GET", name)
        if type(sock) is socket.socket:  # not TLS, nor an unknown transport
            found = _read_bulk(sock, marker)
            if found is not _NOT_A_STRING_REPLY:
                return found  # type: ignore[return-value]
        # Nothing read yet: e.g. a RESP3 push message came first, which redis-py handles.
        return _split(_plain_reply(conn), marker)
    except (redis.ResponseError, WrongType):
        raise  # the reply was read whole: the connection is fine
    except OSError as exc:
        conn.disconnect()
        raise redis.ConnectionError(f"reading {name}: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _plain_get(client: Any, name: str) -> bytes | None:
    try:
        value: bytes | None = client.get(name)
    except redis.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise WrongType(name) from None
        raise
    return value


def _plain_reply(conn: Any) -> bytes | None:
    try:
        value: bytes | None = conn.read_response()
    except redis.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            raise WrongType() from None
        raise
    return value


def _split(value: bytes | None, marker: bytes) -> tuple[bool, bytes] | None:
    if value is None:
        return None
    if marker and value.startswith(marker):
        return True, value[len(marker) :]
    return False, value


def _read_bulk(sock: socket.socket, marker: bytes) -> tuple[bool, bytes] | object | None:
    """Read one GET reply off ``sock`` (its connection has no reply buffered).

    Returns ``_NOT_A_STRING_REPLY``, having consumed nothing, for a reply of another kind.
    """
    timeout = sock.gettimeout()
    # Blocking mode, so that MSG_WAITALL waits for the whole value; the kernel's receive
    # timeout stands in for the socket timeout (per call: a slow but live transfer goes on).
    sock.settimeout(None)
    if timeout is not None:
        seconds = max(timeout, 0.001)
        sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000)),
        )
    try:
        return _read_reply(sock, marker)
    except BlockingIOError:
        raise redis.TimeoutError("Timeout reading from socket") from None
    finally:
        if timeout is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 0))
        sock.settimeout(timeout)


def _read_reply(sock: socket.socket, marker: bytes) -> tuple[bool, bytes] | object | None:
    seen = _peek(sock)
    if seen[:1] not in (b"$", b"-", b"_"):
        return _NOT_A_STRING_REPLY
    end = seen.find(_CRLF)
    while end < 0:  # a header split across packets: rare, read it a byte at a time
        seen = _peek(sock, len(seen) + 1)
        end = seen.find(_CRLF)
    kind, header = seen[:1], seen[1:end]
    if kind == b"-":
        sock.recv(end + 2)
        message = header.decode(errors="replace")
        if message.startswith("WRONGTYPE"):
            raise WrongType(message)
        raise redis.ResponseError(message)
    if kind == b"_" or (kind == b"$" and header == b"-1"):
        sock.recv(end + 2)
        return None
    size = int(header)
    start = end + 2
    if start + size + 2 <= len(seen):  # all of it is here already: a small value
        reply = _receive(sock, start + size + 2)
        return _split(reply[start : start + size], marker)
    _receive(sock, start)
    stripped = False
    if marker and size >= len(marker):
        head = _receive(sock, len(marker))
        stripped = head == marker
        if stripped:
            size -= len(marker)
            value = _receive(sock, size)
        else:
            value = head + _receive(sock, size - len(marker))
    else:
        value = _receive(sock, size)
    if _receive(sock, 2) != _CRLF:
        raise redis.ConnectionError("malformed reply to GET")
    return stripped, value


def _peek(sock: socket.socket, at_least: int = 1) -> bytes:
    while True:
        seen = sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
        if not seen:
            raise redis.ConnectionError("Connection closed by server.")
        if len(seen) >= at_least:
            return seen
        _wait_readable(sock, len(seen))


def _wait_readable(sock: socket.socket, have: int) -> None:
    """Wait for more than ``have`` bytes to be buffered (a header arriving in pieces)."""
    with contextlib.suppress(BlockingIOError):
        sock.recv(have + 1, socket.MSG_PEEK | socket.MSG_WAITALL)


def _receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes, received into one ``bytes`` object when nothing interrupts."""
    data = sock.recv(size, socket.MSG_WAITALL)
    if len(data) == size:
        return data
    pieces = [data]
    got = len(data)
    while got < size:  # a signal or the receive timeout cut the wait short
        if not data:
            raise redis.ConnectionError("Connection closed by server.")
        data = sock.recv(size - got, socket.MSG_WAITALL)
        pieces.append(data)
        got += len(data)
    return b"".join(pieces)
