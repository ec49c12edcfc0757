"""Static checks that graflow's Redis use stays legal and cheap on a Redis Cluster.

Read from the source, without a server: no KEYS anywhere; Redis clients built only in
``graflow/redis/connect.py``; every Lua script touches only keys passed in ``KEYS[]``; no
multi-key call names keys of two runs; and every key builder in ``graflow/redis/keys.py``
puts its key in a hash tag, run-scoped ones in the run's (``graflow:{<run_id>}:...``). The
integration test ``test_every_command_of_a_run_keeps_to_one_run`` checks the same at run
time on a real cluster.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from graflow.redis import keys

SOURCE = Path(__file__).resolve().parents[2] / "graflow"
CONNECT = SOURCE / "redis" / "connect.py"
_CLIENTISH = re.compile(r"client|redis|pipe|conn", re.IGNORECASE)
_CONSTRUCTORS = {"Redis", "StrictRedis", "RedisCluster", "ConnectionPool", "from_url"}
_MULTI_KEY = {"delete", "unlink", "exists", "mget", "touch"}
_LUA_CALL = re.compile(r"redis\.p?call\(")
_KEYS_INDEX = re.compile(r"KEYS\[(?:\d+|[A-Za-z_]\w*)\]")  # KEYS[1], or KEYS[i] in a loop


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SOURCE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SOURCE.parent)}:{getattr(node, 'lineno', '?')}"


def test_the_checks_see_graflow_source() -> None:
    modules = dict(_modules())
    assert len(modules) > 50 and CONNECT in modules
    assert len(list(_lua_scripts())) >= 8


Source = list[tuple[Path, ast.Module]]


def _keys_uses(modules: Source) -> list[str]:
    found = []
    for path, tree in modules:
        for call in _calls(tree):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "keys" and not call.args:
                receiver = ast.unparse(func.value)
                if _CLIENTISH.search(receiver):
                    found.append(f"{_where(path, call)}: {receiver}.keys()")
            if _name(func) == "execute_command" and call.args:
                first = call.args[0]
                if isinstance(first, ast.Constant) and str(first.value).upper() == "KEYS":
                    found.append(f"{_where(path, call)}: execute_command('KEYS')")
    return found


def _clients_built(modules: Source) -> list[str]:
    found = []
    for path, tree in modules:
        if path == CONNECT:
            continue
        for call in _calls(tree):
            if _name(call.func) in _CONSTRUCTORS and "redis" in ast.unparse(call.func).lower():
                found.append(f"{_where(path, call)}: {ast.unparse(call.func)}(...)")
    return found


def _multi_run_calls(modules: Source) -> list[str]:
    """``delete(keys.graph(a), keys.nodes(b))``: key builders given different runs (or
    queues, groups) in one multi-key call."""
    found = []
    for path, tree in modules:
        for call in _calls(tree):
            if _name(call.func) not in _MULTI_KEY or len(call.args) < 2:
                continue
            scopes = {
                ast.unparse(arg.args[0])
                for arg in call.args
                if isinstance(arg, ast.Call)
                and isinstance(arg.func, ast.Attribute)
                and ast.unparse(arg.func.value) == "keys"
                and arg.args
            }
            if len(scopes) > 1:
                found.append(f"{_where(path, call)}: {ast.unparse(call)}")
    return found


def test_no_redis_call_uses_keys() -> None:
    found = _keys_uses(list(_modules()))
    for where, script in _lua_scripts():
        found += [v for v in _script_violations(where, script) if "inside a script" in v]
    assert found == []


def test_redis_clients_are_built_only_in_connect() -> None:
    assert _clients_built(list(_modules())) == []


def test_no_multi_key_call_names_two_runs() -> None:
    assert _multi_run_calls(list(_modules())) == []


_BAD_SOURCE = """
client.keys()
self._client.execute_command("KEYS", "*")
pipe.delete(keys.graph(run_id), keys.nodes(other_run))
client = redis.Redis(host="h")
made = redis.Redis.from_url(url)
"""
_BAD_LUA = """
local name = 'graflow:{' .. ARGV[1] .. '}:meta'
redis.call('GET', name)
redis.call('SET', KEYS[1] .. ':copy', ARGV[2])
redis.call('KEYS', 'graflow:*')
"""


def test_the_checks_catch_what_they_look_for() -> None:
    bad = [(SOURCE / "redis" / "bad.py", ast.parse(_BAD_SOURCE))]
    assert len(_keys_uses(bad)) == 2
    assert len(_multi_run_calls(bad)) == 1
    assert len(_clients_built(bad)) == 2
    violations = _script_violations("bad.lua", _BAD_LUA)
    assert len(violations) == 3, violations
    assert any("KEYS inside a script" in v for v in violations)


def _lua_scripts() -> Iterator[tuple[str, str]]:
    """Every string in graflow's source that holds a Lua script calling Redis."""
    for path, tree in _modules():
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and _LUA_CALL.search(text):
                yield _where(path, node), text


def _split_args(text: str) -> list[str]:
    """The comma-separated arguments of a Lua call, ``text`` starting after its '('."""
    args, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += char
    args.append(current.strip())
    return args


def _lua_commands(script: str) -> Iterator[tuple[str, list[str]]]:
    """(COMMAND, its other arguments) of each ``redis.call`` in ``script``."""
    for match in _LUA_CALL.finditer(script):
        args = _split_args(script[match.end() :])
        yield args[0].strip("'\"").upper(), args[1:]


def _key_variables(script: str) -> set[str]:
    """Lua locals assigned straight from ``KEYS[n]`` (``local key = KEYS[1]``)."""
    return set(re.findall(r"local\s+(\w+)\s*=\s*KEYS\[\d+\]\s*$", script, re.MULTILINE))


def _script_violations(where: str, script: str) -> list[str]:
    """Commands of ``script`` on keys not passed in KEYS[] (or KEYS, SCAN themselves)."""
    variables = _key_variables(script)
    found = []
    for command, args in _lua_commands(script):
        if command in ("KEYS", "SCAN"):
            found.append(f"{where}: {command} inside a script")
        elif command == "PUBLISH":  # a pub/sub channel, not a key: any node may publish
            continue
        elif not args or not (_KEYS_INDEX.fullmatch(args[0]) or args[0] in variables):
            found.append(f"{where}: {command} on {args[:1]!r}, not a key passed in KEYS[]")
    return found


@pytest.mark.parametrize("where, script", list(_lua_scripts()), ids=lambda v: str(v)[:40])
def test_every_script_touches_only_keys_passed_in_keys(where: str, script: str) -> None:
    assert _script_violations(where, script) == []


_SAMPLES = {
    "run_id": "run-1",
    "queue": "queue-1",
    "key": "k",
    "group_id": "g",
    "name": "n",
    "node_id": "node-1",
}


def _builders() -> list[tuple[str, inspect.Signature]]:
    """The public functions of keys.py that build key names (not patterns or parsers)."""
    found = []
    for name in keys.__all__:
        value = getattr(keys, name)
        if callable(value) and not name.endswith("_pattern") and name != "queue_from_stream":
            found.append((name, inspect.signature(value)))
    return found


def _tag(key: str) -> str:
    assert key.startswith(keys.PREFIX + ":{"), key
    return key[len(keys.PREFIX) + 2 : key.index("}")]


@pytest.mark.parametrize("name, signature", _builders(), ids=lambda v: str(v))
def test_every_key_builder_uses_a_hash_tag(name: str, signature: inspect.Signature) -> None:
    builder = getattr(keys, name)
    key = builder(**{p: _SAMPLES[p] for p in signature.parameters})
    tag = _tag(key)
    assert tag, f"keys.{name} builds {key!r}, whose hash tag is empty"
    if "run_id" in signature.parameters:
        assert tag == "run-1", f"keys.{name} must carry the run's tag: {key!r}"
        assert key_slot(key.encode()) == key_slot(keys.run_prefix("run-1").encode())
        other = builder(**{**{p: _SAMPLES[p] for p in signature.parameters}, "run_id": "run-2"})
        assert _tag(other) == "run-2"
    elif "queue" in signature.parameters:
        assert tag == "q:queue-1", f"keys.{name} must carry the queue's tag: {key!r}"


def test_the_builders_cover_every_key_family() -> None:
    names = {name for name, _ in _builders()}
    run_scoped = {n for n, s in _builders() if "run_id" in s.parameters}
    assert {"graph", "handlers", "nodes", "done", "meta", "channel", "lock"} <= run_scoped
    assert {"barrier_members", "barrier_expected", "barrier_results"} <= run_scoped
    assert {"queue_stream", "dead_letters", "node", "nodes_index", "run_lock"} <= names
