"""The container image and the compose topology, without a Docker engine.

docker-compose.yml is parsed and its services run as local processes: a redis-server started
with the ``redis`` service's command stands in for that service, and every graflow service
becomes ``python -m graflow.container`` (the image's ENTRYPOINT) with the image's ENV plus
exactly the service's environment, REDIS_HOST/REDIS_PORT mapped to the local server and a
test GRAFLOW_SECRET given as the compose environment. The Dockerfile and .dockerignore are
linted structurally.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from graflow import cli
from graflow.container import default_node_id
from graflow.redis import keys
from graflow.redis.channel import RedisChannel
from graflow.redis.signing import Signer
from tests.conftest import RedisServer
from tests.integration.container_flows import MARKER_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

TEST_SECRET = "compose-test-secret-" + "0123456789abcdef" * 2
COMPOSE_ENV = {"GRAFLOW_SECRET": TEST_SECRET}  # what `GRAFLOW_SECRET=... docker compose up` sees
DEADLINE_S = 30.0
RUN_DEADLINE_S = 120.0

SECRET_NAME = re.compile(r"SECRET|PASSW(OR)?D|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I)
ENV_VARS = {
    "GRAFLOW_REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD",
    "GRAFLOW_QUEUE", "MAX_CONCURRENT_TASKS", "WORKER_ID", "GRAFLOW_MODE", "GRAFLOW_TARGET",
    "GRAFLOW_SECRET", "GRAFLOW_SECRET_FILE",
}  # fmt: skip


# -- compose file -------------------------------------------------------------------------
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset else str(current)
        if op in ("?", ":?") and unset:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML anchors and ``<<`` merges resolved)."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def raw_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or KEY=VALUE list) before interpolation."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {
        str(k): ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in env.items()
    }


def service_environment(name: str, compose_env: Mapping[str, str]) -> dict[str, str]:
    """The environment Compose gives service ``name``'s containers."""
    service = load_compose()["services"][name]
    return {k: interpolate(v, compose_env) for k, v in raw_environment(service).items()}


def duration_s(text: str) -> float:
    """A Compose duration (``20s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- Dockerfile and .dockerignore ---------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def exec_form(arguments: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) instruction, else None."""
    try:
        argv = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        return argv
    return None


def env_pairs(arguments: str) -> dict[str, str]:
    """The variables an ENV instruction sets (``K=V ...`` or legacy ``K V``)."""
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def image_environment() -> dict[str, str]:
    """Every variable the image's ENV instructions set."""
    env: dict[str, str] = {}
    for word, arguments in dockerfile_instructions():
        if word == "ENV":
            env.update(env_pairs(arguments))
    return env


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def is_in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (Docker's rules).

    Patterns apply in order, the last match wins, ``!`` re-includes, and a pattern that
    matches a parent directory matches everything below it.
    """
    included = True
    parents = [str(Path(*Path(path).parts[: n + 1])) for n in range(len(Path(path).parts))]
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _ignore_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in parents):
            included = negate
    return included


# -- processes ----------------------------------------------------------------------------
def _start_redis(directory: Path, *args: str) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(binary, directory)
    server.start(*args)
    return server


def redis_args_of_compose() -> list[str]:
    """The ``redis`` service's server arguments (its command without ``redis-server``)."""
    command = load_compose()["services"]["redis"]["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    assert argv[0] == "redis-server"
    return [str(a) for a in argv[1:]]


@pytest.fixture(scope="module")
def compose_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module, started the way the ``redis`` service is."""
    server = _start_redis(tmp_path_factory.mktemp("compose-redis"), *redis_args_of_compose())
    try:
        yield server
    finally:
        server.stop()


def container_env(service: str, server: RedisServer, **extra: str) -> dict[str, str]:
    """What a container of ``service`` sees, with the ``redis`` host mapped to ``server``."""
    env = service_environment(service, COMPOSE_ENV)
    assert env["REDIS_HOST"] == "redis" and env["REDIS_PORT"] == "6379", env
    env.update(REDIS_HOST=server.host, REDIS_PORT=str(server.port))
    return {
        "PATH": os.environ["PATH"],
        **image_environment(),
        **env,
        **extra,
    }


class Container:
    """``python -m graflow.container`` as a process, standing in for one container."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, name: str) -> None:
        self.log = log_dir / f"{name}.log"
        self.env = {"HOME": str(log_dir), **env}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "graflow.container"],
                cwd=ROOT,  # the image's WORKDIR holds the workflows (examples/)
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout_s: float = DEADLINE_S) -> int:
        """SIGTERM to the container's main process (what `docker stop` does); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def containers(*started: Container) -> Iterator[list[Container]]:
    """Kill whatever is still running at the end, SIGKILL on the whole process group."""
    running = list(started)
    try:
        yield running
    finally:
        for container in running:
            if container.process.poll() is None:
                container.kill()


def health(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m graflow.container --health`` (the image's HEALTHCHECK) with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "graflow.container", "--health"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def task_result(client: redis.Redis, producer_output: str, task_id: str) -> Any:
    """The result of ``task_id`` in the run the producer reported, read back from Redis."""
    found = re.search(r"run (\w+) succeeded", producer_output)
    assert found, producer_output
    channel = RedisChannel(found.group(1), redis_client=client, signer=Signer(TEST_SECRET.encode()))
    return channel.get(f"{task_id}.__result__")


def wait_for_nodes(client: redis.Redis, count: int, deadline_s: float = DEADLINE_S) -> set[str]:
    """The ids of ``count`` registered nodes with a live heartbeat, polled to a deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        members = {m.decode() for m in client.smembers(keys.nodes_index())}
        live = {m for m in members if client.exists(keys.node(m))}
        if len(live) >= count:
            return live
        assert time.monotonic() < deadline, f"only {len(live)} of {count} nodes registered"
        time.sleep(0.05)


# -- 1. the compose topology --------------------------------------------------------------
def test_compose_file_declares_the_topology() -> None:
    compose = load_compose()
    services = compose["services"]
    assert set(services) >= {"redis", "worker", "producer"}

    redis_service = services["redis"]
    assert str(redis_service["image"]).startswith("redis:7")
    assert redis_args_of_compose()[:2] == ["--appendonly", "yes"]
    volume = redis_service["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "the redis volume is a named volume"

    worker, producer = services["worker"], services["producer"]
    for service in (worker, producer):
        assert service["build"] == "."
        assert "redis" in service["depends_on"]
        assert set(raw_environment(service)) <= ENV_VARS, "configured only by the documented env"
    replicas = worker.get("deploy", {}).get("replicas", worker.get("scale"))
    assert replicas == 3
    assert "WORKER_ID" not in raw_environment(worker), "replicas must not share one node id"
    assert service_environment("worker", COMPOSE_ENV)["GRAFLOW_MODE"] == "worker"
    producer_env = service_environment("producer", COMPOSE_ENV)
    assert producer_env["GRAFLOW_MODE"] == "producer"
    assert producer_env["GRAFLOW_TARGET"]

    # SIGTERM drains within the supervisor's grace period; Docker must not SIGKILL before.
    grace_s = cli.build_parser().parse_args(["supervisor"]).grace_s
    assert duration_s(worker["stop_grace_period"]) > grace_s


def test_compose_file_takes_the_secret_from_the_environment_only() -> None:
    for name, service in load_compose()["services"].items():
        for key, value in raw_environment(service).items():
            if SECRET_NAME.search(key):
                required = r"\$\{" + re.escape(key) + r"(:\?[^}]*)?\}"
                assert re.fullmatch(required, value), (
                    f"{name}.{key} must come from the compose environment, not the file"
                )
    assert raw_environment(load_compose()["services"]["worker"])["GRAFLOW_SECRET"].startswith(
        "${GRAFLOW_SECRET:?"
    )
    with pytest.raises(ValueError, match="GRAFLOW_SECRET"):
        service_environment("worker", {})  # `docker compose up` refuses to start without it


def test_compose_topology_runs_the_workflow_across_three_workers(
    compose_redis: RedisServer, tmp_path: Path
) -> None:
    replicas = load_compose()["services"]["worker"]["deploy"]["replicas"]
    with contextlib.closing(compose_redis.client()) as client, containers() as running:
        running += [
            Container(container_env("worker", compose_redis), tmp_path, f"worker-{i}")
            for i in range(replicas)
        ]
        node_ids = wait_for_nodes(client, replicas)
        assert len(node_ids) == replicas
        hostname = socket.gethostname()
        assert all(n.startswith(f"{hostname}-") for n in node_ids), node_ids

        producer = Container(container_env("producer", compose_redis), tmp_path, "producer")
        running.append(producer)
        code = producer.process.wait(timeout=RUN_DEADLINE_S)
        out = producer.output()
        assert code == 0, out
        top = task_result(client, out, "top_words")
        assert (top["docs"], top["tokens"], top["distinct"]) == (5000, 2_000_000, 4000), top
        assert len(top["top"]) == 10, top

        # Workers report the entries they finished with each heartbeat (every lease/3).
        deadline = time.monotonic() + DEADLINE_S
        while True:
            done = {n: _entries_done(client, n) for n in node_ids}
            if sum(1 for count in done.values() if count) >= 2:
                break
            assert time.monotonic() < deadline, f"tasks ran on one node only: {done}"
            time.sleep(0.2)

        for worker in running[:replicas]:
            assert worker.terminate() == 0, worker.output()


def _entries_done(client: redis.Redis, node_id: str) -> int:
    fields = client.hgetall(keys.node(node_id))
    return sum(int(v) for k, v in fields.items() if k.endswith(b":done"))


# -- 2. the Dockerfile --------------------------------------------------------------------
def test_dockerfile_builds_a_slim_non_root_image_from_the_source_tree() -> None:
    instructions = dockerfile_instructions()
    words = [word for word, _ in instructions]
    assert instructions[0][0] == "FROM"
    base = instructions[0][1].split()[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert any(
        w == "RUN" and re.search(r"\bpip install (--constraint \S+ )?\.(\s|$|&)", a)
        for w, a in instructions
    )

    assert words.count("ENTRYPOINT") == 1
    entry_at = words.index("ENTRYPOINT")
    users = [a for w, a in instructions[:entry_at] if w == "USER"]
    assert users, "no USER before the ENTRYPOINT: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_entrypoint_cmd_and_healthcheck_are_exec_form() -> None:
    instructions = dict(dockerfile_instructions())
    entrypoint = exec_form(instructions["ENTRYPOINT"])
    assert entrypoint == ["python", "-m", "graflow.container"]
    if "CMD" in instructions:
        assert exec_form(instructions["CMD"]) is not None
    options, _, command = instructions["HEALTHCHECK"].partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    assert exec_form(command) == [*entrypoint, "--health"]


def test_dockerfile_bakes_in_no_secret() -> None:
    for word, arguments in dockerfile_instructions():
        if word == "ENV":
            for name, value in env_pairs(arguments).items():
                assert not (SECRET_NAME.search(name) and value), f"ENV {name} has a value"
        if word == "ARG":
            name = arguments.split("=", 1)[0]
            assert not SECRET_NAME.search(name), f"ARG {name}: build args stay in the history"
        if word in ("COPY", "ADD"):
            sources = [t for t in shlex.split(arguments) if not t.startswith("--")][:-1]
            for source in sources:
                assert not re.search(r"secret|\.env|\.pem$|\.key$|id_rsa|\.git$", source), source
                assert is_in_build_context(source), f"{source} is excluded by .dockerignore"


def test_dockerignore_keeps_git_caches_and_secrets_out_of_the_build_context() -> None:
    patterns = DOCKERIGNORE.read_text().splitlines()
    assert ".git" in patterns
    for path in (
        ".git/config", ".env", ".env.local", "examples/.env", "prod.secret",
        "graflow/redis/prod.secret", "id.pem", ".pytest_cache/v/x", "graflow/__pycache__/a.pyc",
        "tests/conftest.py", ".mypy_cache/x", "graflow.egg-info/PKG-INFO",
    ):  # fmt: skip
        assert not is_in_build_context(path), path
    for path in ("pyproject.toml", "README.md", "graflow/container.py", "examples/word_count.py"):
        assert is_in_build_context(path), path


# -- 3. the health check ------------------------------------------------------------------
def test_health_check_exit_codes_against_a_live_and_a_stopped_redis(tmp_path: Path) -> None:
    server = _start_redis(_mkdir(tmp_path / "redis"))
    try:
        worker_env = container_env("worker", server)
        producer_env = container_env("producer", server)
        with containers(Container(worker_env, tmp_path, "worker")) as (worker,):
            client = server.client()
            (node_id,) = wait_for_nodes(client, 1)

            ok = health(worker_env)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert ok.stdout.startswith("healthy"), ok.stdout
            assert health(producer_env).returncode == 0
            assert health({**worker_env, "WORKER_ID": node_id}).returncode == 0

            unknown = health({**worker_env, "WORKER_ID": "no-such-node"})
            assert unknown.returncode == 1, unknown.stdout
            stale_id = default_node_id("stale-host")
            client.hset(keys.node(stale_id), f"{stale_id}:0:seen", str(time.time() - 600))
            assert health({**worker_env, "WORKER_ID": stale_id}).returncode == 1
            client.close()

            assert worker.terminate() == 0, worker.output()

        server.stop()
        for env in (worker_env, producer_env):
            down = health(env)
            assert down.returncode == 1, down.stdout + down.stderr
            assert down.stdout.startswith("unhealthy: Redis does not answer"), down.stdout
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"GRAFLOW_TARGET": ""}, 2, "GRAFLOW_TARGET is required"),
        ({"REDIS_HOST": ""}, 2, "set GRAFLOW_REDIS_URL or REDIS_HOST"),
        ({"GRAFLOW_MODE": "scheduler"}, 2, "GRAFLOW_MODE must be 'worker' or 'producer'"),
        ({"REDIS_PORT": "6379x"}, 2, "REDIS_PORT='6379x' is not a whole number"),
        ({"REDIS_PORT": "1"}, 4, "unreachable"),  # nothing listens on port 1
    ],
)
def test_a_misconfigured_producer_container_exits_with_the_cli_codes(
    compose_redis: RedisServer, tmp_path: Path, change: dict[str, str], code: int, message: str
) -> None:
    env = {**container_env("producer", compose_redis), **change}
    producer = Container(env, tmp_path, "producer")
    with containers(producer):
        assert producer.process.wait(timeout=DEADLINE_S) == code, producer.output()
    assert message in producer.output()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- 4. SIGTERM drains --------------------------------------------------------------------
def test_sigterm_to_a_worker_container_drains_and_exits_0(
    compose_redis: RedisServer, tmp_path: Path
) -> None:
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    markers = _mkdir(tmp_path / "markers")
    worker_env = container_env(
        "worker",
        compose_redis,
        GRAFLOW_QUEUE=queue,
        MAX_CONCURRENT_TASKS="1",
        **{MARKER_DIR_ENV: str(markers)},
    )
    producer_env = container_env(
        "producer",
        compose_redis,
        GRAFLOW_QUEUE=queue,
        GRAFLOW_TARGET="tests.integration.container_flows:drain_workflow",
    )
    with containers() as running:
        first = Container(worker_env, tmp_path, "worker-1")
        producer = Container(producer_env, tmp_path, "producer")
        running += [first, producer]
        _wait_for_file(markers / "slow-started", first)

        # `docker stop`: SIGTERM mid-task. The node stops claiming, lets the task in hand
        # finish, posts its completion and exits 0.
        assert first.terminate() == 0, first.output()
        assert (markers / "slow-done").exists(), "the node exited before its task finished"
        assert producer.process.poll() is None, producer.output()

        second = Container(worker_env, tmp_path, "worker-2")
        running.append(second)
        assert producer.process.wait(timeout=RUN_DEADLINE_S) == 0, producer.output()
        client = compose_redis.client()
        outcome = task_result(client, producer.output(), "report")
        client.close()
        assert outcome["slow_node"] == first.pid, outcome  # ran on the drained node
        assert outcome["slow_runs"] == 1, outcome  # once: finished, not handed back and rerun
        assert outcome["report_node"] == second.pid, outcome  # the drained node took nothing
        assert second.terminate() == 0, second.output()


def _wait_for_file(path: Path, container: Container) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert container.process.poll() is None, container.output()
        assert time.monotonic() < deadline, f"{path.name} never appeared\n{container.output()}"
        time.sleep(0.02)
