"""Redis key names: one hash slot per run and per queue, validated names, escaped patterns."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from graflow.exceptions import ConfigError
from graflow.redis import keys


def _slot(name: str) -> int:
    return int(key_slot(name.encode()))


def test_every_key_of_a_run_shares_one_slot() -> None:
    run = "run-1"
    names = [
        keys.graph(run),
        keys.handlers(run),
        keys.nodes(run),
        keys.done(run),
        keys.meta(run),
        keys.channel(run, "a.__result__"),
        keys.channel(run, "{odd} key"),
        keys.channel_index(run),
        keys.lock(run, "l"),
        keys.barrier_members(run, "g"),
        keys.barrier_expected(run, "g"),
        keys.barrier_results(run, "g"),
    ]
    assert {_slot(name) for name in names} == {_slot(run)}
    assert len(set(names)) == len(names)
    assert all(name.startswith("graflow:{run-1}:") for name in names)
    assert keys.channel(run, "k") == "graflow:{run-1}:ch:k"


def test_queue_and_node_keys_share_their_own_slots() -> None:
    assert keys.queue_stream("default") == "graflow:{q:default}:tasks"
    assert keys.dead_letters("default") == "graflow:{q:default}:dead"
    assert _slot(keys.queue_stream("default")) == _slot(keys.dead_letters("default"))
    assert _slot(keys.node("n1")) == _slot(keys.nodes_index())
    assert keys.queue_group == "graflow-workers"


@pytest.mark.parametrize("bad", ["", "a\nb", "a\rb", "a\0b", "a}b", "{a", None, 3])
def test_bad_names_are_config_errors(bad: object) -> None:
    for build in (keys.run_prefix, keys.queue_stream, keys.dead_letters, keys.node):
        with pytest.raises(ConfigError):
            build(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        keys.barrier("run", bad)  # type: ignore[arg-type]


def test_channel_keys_must_be_strings() -> None:
    with pytest.raises(TypeError):
        keys.channel("run", 1)  # type: ignore[arg-type]
