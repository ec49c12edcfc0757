"""Every Redis key name graflow uses, built in one place.

A run's keys carry its id in a hash tag (``graflow:{<run_id>}:...``) and a queue's keys carry
``q:<queue>``, so each run and each queue lives on one Redis Cluster slot and multi-key
scripts over them stay legal on a cluster. Node heartbeats share the ``{nodes}`` tag for the
same reason. Braces are refused in names: a ``}`` would end the hash tag early and let one
run's keys be spelled as another's.
"""

from __future__ import annotations

from typing import Final

from graflow.exceptions import ConfigError

__all__ = [
    "access_probe",
    "barrier",
    "barrier_channel",
    "barrier_expected",
    "barrier_members",
    "barrier_results",
    "canceled",
    "channel",
    "channel_index",
    "channel_index_custom",
    "checkpoint",
    "dead_letters",
    "done",
    "graph",
    "handlers",
    "history",
    "history_attempts",
    "history_index",
    "leased",
    "lock",
    "meta",
    "node",
    "nodes",
    "nodes_index",
    "producer",
    "queue_from_stream",
    "queue_group",
    "queue_stream",
    "queue_stream_pattern",
    "run_lock",
    "run_lock_pattern",
    "run_prefix",
]

PREFIX: Final = "graflow"

queue_group: Final = "graflow-workers"
"""The consumer group every node reads a queue stream with."""

_FORBIDDEN: Final = ("\n", "\r", "\0", "{", "}")
_GLOB_SPECIAL: Final = frozenset("*?[]\\")


def _checked(kind: str, name: str) -> str:
    """``name`` if it is a usable name of ``kind``; ConfigError otherwise."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} must be a non-empty string, got {name!r}")
    for char in _FORBIDDEN:
        if char in name:
            raise ConfigError(f"{kind} must not contain {char!r}, got {name!r}")
    return name


def _escape_glob(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


def run_prefix(run_id: str) -> str:
    """The prefix of every key of a run: ``graflow:{<run_id>}``."""
    return f"{PREFIX}:{{{_checked('run id', run_id)}}}"


def graph(run_id: str) -> str:
    """The run's signed, pickled task graph."""
    return f"{run_prefix(run_id)}:graph"


def handlers(run_id: str) -> str:
    """The run's signed, pickled task handlers."""
    return f"{run_prefix(run_id)}:handlers"


def nodes(run_id: str) -> str:
    """The list of tasks added to the run's graph while it runs (dynamic tasks)."""
    return f"{run_prefix(run_id)}:nodes"


def done(run_id: str) -> str:
    """The run's completion stream: workers append, the driver reads."""
    return f"{run_prefix(run_id)}:done"


def producer(run_id: str) -> str:
    """The producer's lease on the run: nodes run its items only while this key exists."""
    return f"{run_prefix(run_id)}:producer"


def leased(run_id: str) -> str:
    """Set while a run's producer holds a lease: the lease key missing then means it is gone
    (runs queued without a lease, e.g. by upstream-style code, are never taken for dead)."""
    return f"{run_prefix(run_id)}:leased"


def canceled(run_id: str) -> str:
    """Set by ``graflow cancel``: who stopped the run, and when."""
    return f"{run_prefix(run_id)}:canceled"


def meta(run_id: str) -> str:
    """The run's metadata hash (state, start time, driver)."""
    return f"{run_prefix(run_id)}:meta"


def history(run_id: str) -> str:
    """The run's history record (a hash: ``run`` and ``graph``, as JSON)."""
    return f"{run_prefix(run_id)}:history"


def history_attempts(run_id: str) -> str:
    """The run's task attempts in its history (a hash: seq -> the attempt as JSON)."""
    return f"{run_prefix(run_id)}:history:attempts"


def history_index() -> str:
    """The recent runs recorded in this Redis (a sorted set: run id by start time)."""
    return f"{PREFIX}:{{history}}:runs"


def channel(run_id: str, key: str) -> str:
    """The Redis key holding channel key ``key`` of the run (any string is a valid ``key``)."""
    if not isinstance(key, str):
        raise TypeError(f"channel keys are strings, got {type(key).__name__}")
    return f"{run_prefix(run_id)}:ch:{key}"


def channel_index(run_id: str) -> str:
    """The names of the run's channel keys written with the channel's default TTL: how the
    channel lists its keys without scanning a keyspace others share."""
    return f"{run_prefix(run_id)}:chidx"


def channel_index_custom(run_id: str) -> str:
    """The names of the run's channel keys whose writer set their TTL (``set(ttl=...)``,
    ``append``, ``atomic_add``): this index lasts as long as the longest of them."""
    return f"{run_prefix(run_id)}:chidx:ttl"


def checkpoint(name: str) -> str:
    """The checkpoint kept by ``graflow.run(checkpoint="redis://.../db#<name>")``."""
    return f"{PREFIX}:{{ckpt:{_checked('checkpoint name', name)}}}:checkpoint"


def lock(run_id: str, key: str) -> str:
    """The key of the run's advisory lock named ``key``."""
    if not isinstance(key, str):
        raise TypeError(f"lock names are strings, got {type(key).__name__}")
    return f"{run_prefix(run_id)}:lock:{key}"


def barrier(run_id: str, group_id: str) -> str:
    """The prefix of the keys of one parallel group's barrier in a run."""
    return f"{run_prefix(run_id)}:barrier:{_checked('group id', group_id)}"


def barrier_members(run_id: str, group_id: str) -> str:
    """The set of member task ids that reported completion to the barrier."""
    return f"{barrier(run_id, group_id)}:members"


def barrier_expected(run_id: str, group_id: str) -> str:
    """The number of members the barrier waits for."""
    return f"{barrier(run_id, group_id)}:expected"


def barrier_results(run_id: str, group_id: str) -> str:
    """The hash of member task id to its signed completion record."""
    return f"{barrier(run_id, group_id)}:results"


def barrier_channel(run_id: str, group_id: str) -> str:
    """The pub/sub channel told ``complete`` when the barrier is reached."""
    return f"{barrier(run_id, group_id)}:done"


def queue_stream(queue: str) -> str:
    """The stream of tasks waiting in ``queue``."""
    return f"{PREFIX}:{{q:{_checked('queue name', queue)}}}:tasks"


def dead_letters(queue: str) -> str:
    """The stream of entries of ``queue`` that could not be run (poison, lost too often)."""
    return f"{PREFIX}:{{q:{_checked('queue name', queue)}}}:dead"


def node(node_id: str) -> str:
    """The heartbeat hash of a worker node (kept alive by its TTL)."""
    return f"{PREFIX}:{{nodes}}:node:{_checked('node id', node_id)}"


def nodes_index() -> str:
    """The set of ids of worker nodes that registered."""
    return f"{PREFIX}:{{nodes}}:index"


def queue_stream_pattern() -> str:
    """The SCAN MATCH pattern of every queue stream."""
    return f"{PREFIX}:{{q:*}}:tasks"


def queue_from_stream(key: str) -> str | None:
    """The queue name of a queue stream key (as ``queue_stream`` builds it), else None."""
    head, tail = f"{PREFIX}:{{q:", "}:tasks"
    if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
        return key[len(head) : -len(tail)]
    return None


def access_probe() -> str:
    """A key that never exists, read once on connecting to check the user's ACL rights."""
    return f"{PREFIX}:{{access}}:probe"


def run_lock(name: str) -> str:
    """The lease that keeps two runs started with ``graflow run --lock <name>`` apart."""
    return f"{PREFIX}:{{lock:{_checked('lock name', name)}}}"


def run_lock_pattern() -> str:
    """The SCAN MATCH pattern of every ``run_lock`` key."""
    return f"{PREFIX}:{{lock:*}}"
