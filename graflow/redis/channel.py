"""``RedisChannel``: a run's channel in Redis, shared by the driver and every node of the run.

Layout: channel key ``k`` of run ``r`` is the Redis key ``graflow:{r}:ch:k`` (``keys.channel``),
always with a TTL. What it holds:

- an ``int`` in the 64-bit range: its decimal digits, so Redis can ``INCRBY`` it exactly;
- a ``float``: ``#f:<repr>``, added to by a Lua script in double precision;
- a non-empty ``list`` (from ``set``, ``append`` or ``prepend``): a Redis list of encoded items;
  the empty list is ``#l:``;
- ``bytes``: ``#b:<the bytes>``, as they are;
- anything else: a signed pickle (``Signer.dumps``), never unpickled before its MAC checks.

Numbers and bytes travel unsigned: neither is ever unpickled (signing guards against code
execution through pickles), and skipping the MAC keeps a 100 MB bytes value from costing a
SHA-256 pass on each side. Every multi-step operation is one Lua script or one MULTI over a
single key, so it is atomic across processes and nodes and legal on Redis Cluster.

Every write also adds the key's name to one of the run's two indexes (sets), which ``keys``,
``snapshot`` and ``clear`` read instead of SCANning a keyspace that other runs and
applications share. Writes with the channel's default TTL (results, ``set``, ``update``)
go to ``keys.channel_index`` in the same pipeline, which then gets that same TTL again: no
member outlives it, and it needs neither a script (Redis Cluster pipelines cannot run one)
nor Redis 7's ``PEXPIRE GT``. The scripts (``append``, ``atomic_add``) and writes with a TTL
of their own go to ``keys.channel_index_custom``, whose TTL a script raises to the longest
of its members'. A name whose key expired stays in its index and is skipped.

Values of ``bulk.LARGE_BYTES`` or more (once encoded) are written and read with
``graflow.redis.bulk``: sent as marker (or signed envelope) and payload without joining
them, received straight into one ``bytes``. ``get`` is a plain GET (the get script only
for lists), so a 100 MB value is never copied into and out of a Lua string.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import redis
from redis.client import Pipeline
from redis.exceptions import LockError
from redis.lock import Lock

from graflow.channels.base import Channel
from graflow.channels.factory import ChannelFactory
from graflow.core import codec
from graflow.exceptions import BackendError, BackendUnavailable, PoisonMessage, RejectedBlob
from graflow.redis import bulk, keys
from graflow.redis.connect import (
    OUTAGE_ERRORS,
    RedisClient,
    binary_client,
    from_spec,
    is_passing,
    spec_of,
)
from graflow.redis.signing import Signer, load_secret

__all__ = ["DEFAULT_TTL_S", "Encoded", "RedisChannel", "binary_client"]

logger = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 7 * 24 * 3600

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INT_RE: Final = re.compile(rb"-?[0-9]+")
_FLOAT_MARK: Final = b"#f:"
_EMPTY_LIST: Final = b"#l:"
_BYTES_MARK: Final = b"#b:"
_INDEX_BATCH: Final = 1000  # names per SADD
_READ_BATCH: Final = 1000
_UNLINK_BATCH: Final = 500
_LOCK_POLL_S: Final = 0.01
_ABSENT: Final = object()

# The value under KEYS[1] as {type, string} or {type, list of items}; nil when missing.
_GET_LUA: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then return {kind, redis.call('GET', KEYS[1])} end
if kind == 'list' then return {kind, redis.call('LRANGE', KEYS[1], 0, -1)} end
if kind == 'none' then return false end
return {kind}
"""

# For each of KEYS: the length of its string, -1 when missing, -2 for another type.
_SIZES_LUA: Final = """
local sizes = {}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'string' then
    sizes[i] = redis.call('STRLEN', KEYS[i])
  elseif kind == 'none' then
    sizes[i] = -1
  else
    sizes[i] = -2
  end
end
return sizes
"""

# Add ARGV[2..] to the index set KEYS[1], and keep its TTL at least ARGV[1] ms (a key's TTL).
_INDEX_LUA: Final = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

# Push ARGV[1] at the front (ARGV[2] == '1') or back; ARGV[3]: TTL in ms or 0 to keep the
# key's; ARGV[4]: the default TTL for a key that has none; ARGV[5]: the empty-list marker;
# KEYS[2]: the run's index, where ARGV[6] (the channel key's name) is added.
_PUSH_LUA: Final = """
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
local keep = -1
if kind == 'string' then
  if redis.call('GET', key) ~= ARGV[5] then return redis.error_reply('GRAFLOW_NOT_LIST') end
  keep = redis.call('PTTL', key)
  redis.call('DEL', key)
elseif kind ~= 'list' and kind ~= 'none' then
  return redis.error_reply('GRAFLOW_NOT_LIST')
end
local length
if ARGV[2] == '1' then
  length = redis.call('LPUSH', key, ARGV[1])
else
  length = redis.call('RPUSH', key, ARGV[1])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', key, ARGV[3])
elseif keep > 0 then
  redis.call('PEXPIRE', key, keep)
elseif redis.call('PTTL', key) < 0 then
  redis.call('PEXPIRE', key, ARGV[4])
end
redis.call('SADD', KEYS[2], ARGV[6])
local ttl = redis.call('PTTL', key)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return length
"""

# Add ARGV[1] (an integer when ARGV[2] == '1') to the number under KEYS[1], missing = 0;
# return the new stored form. Integers stay exact through INCRBY (which keeps the TTL);
# anything involving a float is added in double precision and kept as '#f:%.17g', which
# reads back as the same double. ARGV[3]: the default TTL for a key that has none; KEYS[2]:
# the run's index, where ARGV[4] (the channel key's name) is added.
_ADD_LUA: Final = """
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
local current = '0'
if kind == 'string' then
  current = redis.call('GET', key)
elseif kind ~= 'none' then
  return redis.error_reply('GRAFLOW_NOT_NUMBER')
end
local result
if string.match(current, '^%-?%d+$') then
  if ARGV[2] == '1' then
    redis.call('INCRBY', key, ARGV[1])
    result = redis.call('GET', key)
  else
    result = tonumber(current) + tonumber(ARGV[1])
  end
elseif string.sub(current, 1, 3) == '#f:' and tonumber(string.sub(current, 4)) then
  result = tonumber(string.sub(current, 4)) + tonumber(ARGV[1])
else
  return redis.error_reply('GRAFLOW_NOT_NUMBER')
end
if type(result) == 'number' then
  result = '#f:' .. string.format('%.17g', result)
  redis.call('SET', key, result, 'KEEPTTL')
end
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[3]) end
redis.call('SADD', KEYS[2], ARGV[4])
local ttl = redis.call('PTTL', key)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return result
"""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _translating_errors(
    method: Callable[Concatenate[RedisChannel, _P], _R],
) -> Callable[Concatenate[RedisChannel, _P], _R]:
    """Turn Redis client errors of a channel method into graflow's backend errors."""

    @functools.wraps(method)
    def wrapper(self: RedisChannel, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except OUTAGE_ERRORS as exc:
            raise BackendUnavailable(
                f"Redis unreachable for channel of run {self.name!r}", cause=exc
            ) from exc
        except redis.ResponseError as exc:
            if is_passing(exc):  # out of memory, read-only, loading...: it passes, as outages do
                raise BackendUnavailable(
                    f"Redis refuses the channel of run {self.name!r} for now", cause=exc
                ) from exc
            raise BackendError(f"Redis failed for channel of run {self.name!r}", cause=exc) from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis failed for channel of run {self.name!r}", cause=exc) from exc

    return wrapper


def _ttl_ms(ttl: float) -> int:
    """``ttl`` seconds in whole milliseconds (at least 1); ValueError unless positive and finite."""
    if isinstance(ttl, bool) or not isinstance(ttl, Real) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, math.ceil(float(ttl) * 1000))


def _encode_amount(amount: int | float) -> tuple[str, str]:
    """``amount`` for the add script: its text, and '1' if it is an integer."""
    if isinstance(amount, bool) or not isinstance(amount, Real):
        raise TypeError(f"amount must be a number, got {type(amount).__name__}")
    if isinstance(amount, Integral):
        if not _INT64_MIN <= int(amount) <= _INT64_MAX:
            raise OverflowError(f"amount {amount} is outside the 64-bit range Redis adds in")
        return str(int(amount)), "1"
    return repr(float(amount)), "0"


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value as a RedisChannel stores it: a string in parts, or the items of a list."""

    parts: list[bytes] | None
    items: list[bytes] | None
    nbytes: int


class RedisChannel(Channel):
    """A run's channel stored in Redis under the run id ``name``, every key with a TTL.

    Values round-trip exactly (signed pickles, not JSON); ``get`` on a list key returns the
    list. ``atomic_add`` and ``lock`` are atomic across processes and nodes; ints stay exact
    within 64 bits, and an ``atomic_add`` past that range raises ``OverflowError``. Redis
    errors surface as ``BackendUnavailable`` (cannot connect) or ``BackendError``; a value
    that is unsigned or forged raises ``PoisonMessage`` and is never unpickled.

    Pickling keeps only the connection settings (``url``, or host, port, db, credentials and
    TLS options taken from the client) and the signer's key id, never the client or secret;
    the unpickling process must know the secret (see ``graflow.redis.signing``). Extra keyword
    arguments (options meant for other backends, such as ``key_prefix``) are ignored.
    """

    def __init__(
        self,
        name: str,
        redis_client: RedisClient | None = None,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        *,
        url: str | None = None,
        signer: Signer | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(name)
        self._key_start = len(keys.channel(name, "").encode())  # in the bytes of a Redis name
        self._index = keys.channel_index(name)
        self._custom_index = keys.channel_index_custom(name)
        # One tuple, replaced whole: a worker's lanes read it while another replaces it.
        self._kept: tuple[str | None, Any] = (None, None)
        self._default_ms = _ttl_ms(ttl_s)
        self.ttl_s = ttl_s
        self._signer = signer if signer is not None else Signer(load_secret())
        if redis_client is not None:
            client = binary_client(redis_client)
        elif url is not None:
            client = from_spec({"url": url})
        else:
            client = from_spec({"host": host, "port": port, "db": db})
        self._owns_client = client is not redis_client
        self._connection = {"url": url} if url is not None else spec_of(client)
        self._attach(client)
        if kwargs:
            logger.debug("run %s: channel ignores options %s", name, sorted(kwargs))

    @property
    def client(self) -> RedisClient:
        """The (bytes-returning) Redis client this channel talks through."""
        return self._client

    @property
    def signer(self) -> Signer:
        """The signer of this channel's values."""
        return self._signer

    def _attach(self, client: RedisClient) -> None:
        """Use ``client`` and register the channel's scripts on it."""
        self._client = client
        self._get_script = client.register_script(_GET_LUA)
        self._sizes_script = client.register_script(_SIZES_LUA)
        self._push_script = client.register_script(_PUSH_LUA)
        self._add_script = client.register_script(_ADD_LUA)
        self._index_script = client.register_script(_INDEX_LUA)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connection": self._connection,
            "ttl_s": self.ttl_s,
            "signer": self._signer,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._key_start = len(keys.channel(self.name, "").encode())
        self._index = keys.channel_index(self.name)
        self._custom_index = keys.channel_index_custom(self.name)
        self._kept = (None, None)
        self.ttl_s = state["ttl_s"]
        self._default_ms = _ttl_ms(self.ttl_s)
        self._signer = state["signer"]
        self._connection = state["connection"]
        self._owns_client = True
        self._attach(from_spec(self._connection))

    @_translating_errors
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` with ``ttl`` (default: the channel's ``ttl_s``)."""
        self._forget(key)
        name = keys.channel(self.name, key)
        px = self._default_ms if ttl is None else _ttl_ms(ttl)
        pipe = self._client.pipeline(transaction=True)
        if type(value) is list and value:
            self._queue_list(pipe, name, [self._encode(item) for item in value], px)
        else:
            parts = self._encode_parts(value)
            if len(parts) > 1:
                bulk.set_parts(self._client, name, parts, px)
            else:
                pipe.set(name, parts[0], px=px)
        if ttl is None:
            self._queue_index(pipe, [key])
            pipe.execute()
        else:
            pipe.execute()
            self._index_script(keys=[self._custom_index], args=[px, key])

    @_translating_errors
    def update(self, mapping: Mapping[str, Any]) -> None:
        """``set`` every item of ``mapping`` with the default TTL, in one transaction.

        Values whose encoding has ``bulk.LARGE_BYTES`` or more are written first, each on
        its own (see ``queue_update``).
        """
        if not mapping:
            return
        if self._kept[0] in mapping:
            self._forget(None)
        pipe = self._client.pipeline(transaction=True)
        self.queue_update(pipe, mapping)
        pipe.execute()

    def encode(self, value: Any) -> Encoded:
        """``value`` encoded as ``update`` would store it (raises what pickling raises).

        Pass the result to ``queue_update`` in place of the value: a worker encodes a result
        as soon as its task returns, so that a value that cannot be stored fails that task
        instead of the write of a whole batch.
        """
        if type(value) is list and value:
            items = [self._encode(item) for item in value]
            return Encoded(None, items, sum(map(len, items)))
        parts = self._encode_parts(value)
        return Encoded(parts, None, sum(map(len, parts)))

    def queue_update(self, pipe: Pipeline, mapping: Mapping[str, Any]) -> None:
        """Queue on ``pipe`` the writes of ``update(mapping)`` (the caller executes it).

        Values may be ``Encoded`` already (see ``encode``). A large value is written at once
        instead, sent as it is (a pipeline would copy it into one buffer): it is stored
        before anything queued on ``pipe`` runs.
        """
        for key, value in mapping.items():
            name = keys.channel(self.name, key)
            encoded = value if type(value) is Encoded else self.encode(value)
            if encoded.items is not None:
                self._queue_list(pipe, name, encoded.items, self._default_ms)
                continue
            parts = encoded.parts
            assert parts is not None
            if len(parts) > 1:
                bulk.set_parts(self._client, name, parts, self._default_ms)
            else:
                pipe.set(name, parts[0], px=self._default_ms)
        self._queue_index(pipe, list(mapping))

    def _queue_index(self, pipe: Pipeline, names: list[str]) -> None:
        """Queue on ``pipe`` the addition of ``names``, keys written with the default TTL, to
        the run's index, and give the index that TTL again."""
        if not names:
            return
        for start in range(0, len(names), _INDEX_BATCH):
            pipe.sadd(self._index, *names[start : start + _INDEX_BATCH])
        pipe.pexpire(self._index, self._default_ms)

    def _queue_list(self, pipe: Pipeline, name: str, encoded: list[bytes], px: int) -> None:
        """Queue on ``pipe`` the commands that replace ``name`` with the encoded list items."""
        pipe.delete(name)
        pipe.rpush(name, *encoded)
        pipe.pexpire(name, px)

    def remember(self, key: str | None, value: Any = None) -> None:
        """Hold ``value`` as what Redis stores under ``key`` now (None: hold nothing).

        A worker keeps the result of the task it ran last, which it has just written: a
        successor that takes it (``b(a)`` right after ``a``) then reads it without a GET.
        A write of that key through this channel forgets it.
        """
        self._kept = (key, value if key is not None else None)

    def _forget(self, key: str | None) -> None:
        if key is None or key == self._kept[0]:
            self._kept = (None, None)

    @_translating_errors
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` (a list for list keys), or ``default`` when missing."""
        kept_key, kept_value = self._kept
        if key == kept_key:
            return kept_value
        name = keys.channel(self.name, key)
        try:
            found = bulk.get_string(self._client, name, _BYTES_MARK)
        except bulk.WrongType:
            reply = self._get_script(keys=[name])  # a list: read whole in one step
            return default if reply is None else self._decode_reply(key, reply)
        if found is None:
            return default
        is_bytes, raw = found
        return raw if is_bytes else self._decode(key, raw)

    @_translating_errors
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        self._forget(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.channel(self.name, key))
        pipe.srem(self._index, key)
        pipe.srem(self._custom_index, key)
        return bool(pipe.execute()[0])

    @_translating_errors
    def exists(self, key: str) -> bool:
        """True if ``key`` holds a live value."""
        return bool(self._client.exists(keys.channel(self.name, key)))

    @_translating_errors
    def keys(self) -> list[str]:
        """Every live key of the run (from the run's index: no SCAN, never KEYS)."""
        names = list(self._indexed())
        live: list[str] = []
        for start in range(0, len(names), _READ_BATCH):
            batch = names[start : start + _READ_BATCH]
            sizes = self._sizes_script(keys=batch)
            live += [
                n[self._key_start :].decode() for n, z in zip(batch, sizes, strict=True) if z != -1
            ]
        return live

    @_translating_errors
    def clear(self) -> None:
        """Remove every key of the run (UNLINKed in batches), then the run's index."""
        self._forget(None)
        names = list(self._indexed())
        for start in range(0, len(names), _UNLINK_BATCH):
            self._client.unlink(*names[start : start + _UNLINK_BATCH])
        self._client.unlink(self._index)
        self._client.unlink(self._custom_index)

    @_translating_errors
    def snapshot(self) -> dict[str, Any]:
        """Every live key and its value, read in batches (large values one by one)."""
        names = list(self._indexed())
        contents: dict[str, Any] = {}
        for start in range(0, len(names), _READ_BATCH):
            self._read_batch(names[start : start + _READ_BATCH], contents)
        return contents

    def _read_batch(self, names: list[bytes], contents: dict[str, Any]) -> None:
        """Add the values of ``names`` to ``contents`` (keys gone meanwhile are left out)."""
        sizes = self._sizes_script(keys=names)
        small = [n for n, size in zip(names, sizes, strict=True) if 0 <= size < bulk.LARGE_BYTES]
        values: list[Any] = self._client.mget(small) if small else []
        for name, raw in zip(small, values, strict=True):
            if raw is not None:
                key = name[self._key_start :].decode()
                contents[key] = self._decode(key, raw)
        for name, size in zip(names, sizes, strict=True):
            if size >= bulk.LARGE_BYTES or size == -2:
                key = name[self._key_start :].decode()
                value = self.get(key, _ABSENT)
                if value is not _ABSENT:
                    contents[key] = value

    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the end of the list under ``key``; return the new length."""
        return self._push(key, value, ttl, at_front=False)

    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Add ``value`` to the front of the list under ``key``; return the new length."""
        return self._push(key, value, ttl, at_front=True)

    @_translating_errors
    def _push(self, key: str, value: Any, ttl: float | None, *, at_front: bool) -> int:
        """Add ``value`` at one end of the list under ``key``, creating it when missing."""
        self._forget(key)
        px = 0 if ttl is None else _ttl_ms(ttl)
        args = [
            self._encode(value),
            "1" if at_front else "0",
            px,
            self._default_ms,
            _EMPTY_LIST,
            key,
        ]
        try:
            name = keys.channel(self.name, key)
            return int(self._push_script(keys=[name, self._custom_index], args=args))
        except redis.ResponseError as exc:
            if "GRAFLOW_NOT_LIST" not in str(exc):
                raise
        raise TypeError(f"Value under key '{key}' is not a list")

    @_translating_errors
    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        """Add ``amount`` to the number under ``key`` (missing: 0) in Redis; return the sum."""
        self._forget(key)
        text, is_int = _encode_amount(amount)
        try:
            raw = self._add_script(
                keys=[keys.channel(self.name, key), self._custom_index],
                args=[text, is_int, self._default_ms, key],
            )
        except redis.ResponseError as exc:
            if "GRAFLOW_NOT_NUMBER" in str(exc):
                raise TypeError(f"Key '{key}' holds a non-number, expected int or float") from None
            if "overflow" in str(exc):
                raise OverflowError(
                    f"Value under key '{key}' would leave the 64-bit range Redis adds in"
                ) from None
            raise
        number = self._decode(key, raw)
        if not isinstance(number, int | float):
            raise PoisonMessage(f"channel key {key!r} of run {self.name!r}: not a number")
        return number

    @contextmanager
    def lock(self, key: str, timeout: float = 10.0, *, lease_s: float = 60.0) -> Iterator[None]:
        """Hold the lock named ``key`` across processes and nodes.

        Waits up to ``timeout`` seconds (``TimeoutError`` after). The lock is not re-entrant,
        and its holder has ``lease_s`` seconds before Redis frees it for others (so a crashed
        holder does not block them forever); a lease that ran out raises ``BackendError`` on
        leaving the block.
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        held = Lock(
            self._client,
            keys.lock(self.name, key),
            timeout=lease_s,
            sleep=_LOCK_POLL_S,
            blocking_timeout=timeout,
        )
        if not self._acquire(held):
            raise TimeoutError(
                f"Could not acquire lock '{key}' of channel '{self.name}' within {timeout} s"
            )
        try:
            yield
        except BaseException:
            self._release(held, key, quiet=True)
            raise
        self._release(held, key, quiet=False)

    @_translating_errors
    def _acquire(self, held: Lock) -> bool:
        """Acquire ``held``; True once it is ours, False when its wait ran out."""
        return bool(held.acquire())

    @_translating_errors
    def _release(self, held: Lock, key: str, *, quiet: bool) -> None:
        """Release ``held``; a lease that ran out is logged if ``quiet``, else raised."""
        try:
            held.release()
        except LockError as exc:
            if not quiet:
                raise BackendError(
                    f"lock '{key}' of channel '{self.name}' expired while held", cause=exc
                ) from exc
            logger.warning("run %s: lock %r expired while held", self.name, key)

    @_translating_errors
    def ping(self) -> bool:
        """True if Redis answers (``BackendUnavailable`` if it does not)."""
        return bool(self._client.ping())

    def close(self) -> None:
        """Close the connections this channel opened (a client passed in stays open)."""
        if self._owns_client:
            self._client.close()

    def _indexed(self) -> Iterator[bytes]:
        """The Redis names of every channel key the run wrote (some may have expired since)."""
        prefix = self._index_prefix
        seen: set[bytes] = set()
        for index in (self._index, self._custom_index):
            for member in self._client.sscan_iter(index, count=_READ_BATCH):
                if member not in seen:
                    seen.add(member)
                    yield prefix + member

    @functools.cached_property
    def _index_prefix(self) -> bytes:
        return keys.channel(self.name, "").encode()

    def _encode_parts(self, value: Any) -> list[bytes]:
        """``value`` as ``_encode`` stores it, in two parts when large (sent one after the
        other, never joined)."""
        if type(value) is bytes and len(value) >= bulk.LARGE_BYTES:
            return [_BYTES_MARK, value]
        if type(value) in (bytes, int, float) or (type(value) is list and not value):
            return [self._encode(value)]
        payload = codec.dumps(value)
        if len(payload) >= bulk.LARGE_BYTES:
            return [self._signer.envelope(payload), payload]
        return [self._signer.sign(payload)]

    def _encode(self, value: Any) -> bytes:
        """``value`` as stored in a string key or list item (see the module docstring)."""
        if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
            return b"%d" % value
        if type(value) is float:
            return _FLOAT_MARK + repr(value).encode()
        if type(value) is list and not value:
            return _EMPTY_LIST
        if type(value) is bytes:
            return _BYTES_MARK + value
        return self._signer.dumps(value)

    def _decode(self, key: str, raw: bytes) -> Any:
        """The value stored as ``raw`` under ``key``; PoisonMessage if it is not trusted."""
        try:
            if _INT_RE.fullmatch(raw):
                return int(raw)
            if raw.startswith(_FLOAT_MARK):
                return float(raw[len(_FLOAT_MARK) :])
        except ValueError:
            raise PoisonMessage(
                f"channel key {key!r} of run {self.name!r} holds an unreadable number"
            ) from None
        if raw == _EMPTY_LIST:
            return []
        if raw.startswith(_BYTES_MARK):
            return raw[len(_BYTES_MARK) :]
        try:
            return self._signer.loads(raw)
        except RejectedBlob as exc:
            raise RejectedBlob(
                exc.reason, f"channel key {key!r} of run {self.name!r}: {exc.message}"
            ) from None
        except Exception as exc:  # a trusted value whose own unpickling fails
            raise BackendError(
                f"channel key {key!r} of run {self.name!r}: its value could not be rebuilt "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _decode_reply(self, key: str, reply: list[Any]) -> Any:
        """The value in a reply of the get script."""
        kind = reply[0]
        if kind == b"string":
            return self._decode(key, reply[1])
        if kind == b"list":
            return [self._decode(key, item) for item in reply[1]]
        raise PoisonMessage(
            f"channel key {key!r} of run {self.name!r} holds a Redis {kind.decode()}, "
            "which no channel writes"
        )


ChannelFactory.register_backend("redis", RedisChannel)
