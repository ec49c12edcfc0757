"""Every command README.md shows, and every example in a ``--help`` epilog, runs as written.

The commands are read from README.md's ``bash`` blocks and from the parsers' epilogs when
the tests are collected, so a section added later is covered without touching this file.
Each runs in a scratch directory that looks like a user's project: ``examples/`` and a
package ``mypkg`` (``mypkg.flows:nightly`` and ``:sync``) found only because the working
directory is on the path. What a command names that exists only on the user's machine is
mapped to this test's real counterparts (REWRITES: Redis hosts to real redis-servers,
certificates to the TLS fixture's, ``/var/lib/...`` into the scratch directory, a dead
letter's id to one made here). A ``graflow supervisor`` or ``graflow ui`` command runs until
it serves, then gets SIGTERM and must exit 0; every other command must exit 0 by itself.
SKIPPED lists the few commands a test cannot run, each with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from graflow.cli import build_parser
from graflow.redis import keys
from tests.conftest import RedisServer, _free_port
from tests.redis_servers import ClusterServers, TLSServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GRAFLOW = shutil.which("graflow")
SECRET = "readme-commands-" + "0" * 32
COMMAND_TIMEOUT_S = 180.0
SERVING = re.compile(r"serving queue|graflow ui on http")  # what the serving commands log
SERVE_DEADLINE_S = 60.0

# Commands that cannot run inside a test, by how they start; each with the reason.
SKIPPED: dict[str, str] = {
    "pip install": "installs into the environment; .ci/run installs '.[dev]' before the tests",
    "python -m pytest": "is this test suite",
    "ruff ": ".ci/run runs the linter and formatter check",
    "mypy ": ".ci/run runs the type check",
    "python perf/": "benchmarks run for minutes on a loaded machine; perf/ measures, tests don't",
    "docker ": "no Docker engine in the tests; test_containers.py checks the entry point, "
    "the Dockerfile and the compose file",
}

PROJECT_FLOWS = '''
"""The user's own workflows of the README's commands, module-level tasks in two of them."""

from graflow import task, workflow


@task
def fetch(day: str = "today") -> str:
    return f"rows of {day}"


@task
def store(fetch: str) -> int:
    return len(fetch)


def nightly():
    with workflow("nightly") as wf:
        fetch >> store
    return wf


def sync():
    with workflow("sync") as wf:
        fetch >> store
    return wf
'''


@dataclass(frozen=True)
class Shown:
    """A command as a reader sees it, and where."""

    text: str
    where: str


def _strip_comment(line: str) -> str:
    # A comment starts at a '#' after whitespace ("...#nightly" in a URL is not one).
    return re.sub(r"\s+#\s.*$", "", line).strip()


def _strip_cron(line: str) -> str:
    return re.sub(r"^(\S+\s+){5}(?=graflow )", "", line) if line.startswith("*/") else line


def _commands_of(lines: list[str], where: str) -> Iterator[Shown]:
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line.strip()
        else:
            joined.append(line)
    for line in joined:
        text = _strip_cron(_strip_comment(line.strip()))
        if not text or text.startswith("#"):
            continue
        for part in text.split(" && "):
            yield Shown(part.strip(), where)


def readme_commands() -> list[Shown]:
    """Each command of README.md's bash blocks, in order."""
    text = README.read_text()
    found: list[Shown] = []
    for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        line_no = text.count("\n", 0, match.start()) + 2
        found += _commands_of(match.group(1).splitlines(), f"README.md:{line_no}")
    return found


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def epilog_commands() -> list[Shown]:
    """Each example command of every ``--help`` epilog."""
    found: list[Shown] = []
    for name, parser in _parsers(build_parser(), "graflow"):
        lines = [
            line for line in (parser.epilog or "").splitlines()
            if line.strip().startswith(("graflow ", "*/"))
        ]  # fmt: skip
        found += _commands_of(lines, f"{name} --help")
    return found


ALL_COMMANDS = readme_commands() + epilog_commands()


def _skip_reason(command: str) -> str | None:
    command = re.sub(r"^(\w+=(\$\([^)]*\)|\S+)\s+)+", "", command)  # VAR=$(...) docker
    return next((why for start, why in SKIPPED.items() if command.startswith(start)), None)


@dataclass
class Deployment:
    """The real counterparts of what the commands name."""

    project: Path
    server: RedisServer
    tls: TLSServer
    cluster: ClusterServers
    env: dict[str, str]

    def dead_letter(self) -> str:
        """A fresh dead letter in the default queue; its entry id."""
        client = self.server.client()
        try:
            entry = client.xadd(
                keys.dead_letters("default"),
                {b"reason": b"forged for the README test", b"r": b"readme-run",
                 b"b": b"not a payload", b"id": b"1-0", b"deliveries": b"1"},
            )  # fmt: skip
        finally:
            client.close()
        return entry.decode() if isinstance(entry, bytes) else str(entry)


Rewrite = Callable[[str, Deployment], str]


def _sub(pattern: str, replacement: Callable[[Deployment], str]) -> Rewrite:
    return lambda text, dep: re.sub(pattern, lambda _m: replacement(dep), text)


# What exists only on a reader's machine, and what stands in for it here.
REWRITES: list[Rewrite] = [
    _sub(r"rediss://graflow:PASSWORD@redis:6380/0", lambda d: d.tls.url()),
    _sub(r"--redis-ca-cert (/etc/graflow/)?ca\.pem",
         lambda d: f"--redis-ca-cert {d.tls.certs['ca.crt']}"),
    _sub(r"--redis-cert client\.pem", lambda d: f"--redis-cert {d.tls.certs['client.crt']}"),
    _sub(r"--redis-key client\.key", lambda d: f"--redis-key {d.tls.certs['client.key']}"),
    _sub(r"redis\+cluster://r1:7000,r2:7000,r3:7000", lambda d: d.cluster.url),
    _sub(r"redis://(h|redis-host|localhost|redis):6379/0", lambda d: d.server.url),
    _sub(r"(?<![\w/])/var/lib/", lambda d: f"{d.project}/var/lib/"),
    _sub(r"\b1[0-9]{12}-0\b", lambda d: d.dead_letter()),
    _sub(r"--metrics-port 9464", lambda _d: f"--metrics-port {_free_port()}"),
    _sub(r"graflow ui\b", lambda _d: f"graflow ui --port {_free_port()}"),
    _sub(r" \[[^\]]*\]", lambda _d: ""),  # [--optional parts] of a synopsis
]  # fmt: skip


def rewrite(command: str, deployment: Deployment) -> str:
    """``command`` with this test's real hosts, files and ids."""
    for step in REWRITES:
        command = step(command, deployment)
    if "| jq " in command and shutil.which("jq") is None:
        command = re.sub(r"\| jq \S+", "| python -m json.tool", command)
    return command


def _start_node(url: str, project: Path, env: dict[str, str], *tls: str) -> subprocess.Popen[str]:
    assert GRAFLOW is not None
    return subprocess.Popen(
        [GRAFLOW, "supervisor", "--redis", url, "--processes", "2", "--lease-s", "2", *tls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=project,
        env=env, start_new_session=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, tls_redis: TLSServer, redis_cluster: ClusterServers
) -> Iterator[Deployment]:
    """A project directory, a Redis of its own (the commands use the default queue), nodes
    serving it and the TLS server, from the project directory."""
    if GRAFLOW is None:
        pytest.fail("the graflow command is not installed (pip install -e .)")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    base = tmp_path_factory.mktemp("readme")
    project = base / "project"
    (project / "mypkg").mkdir(parents=True)
    (project / "mypkg" / "__init__.py").write_text("")
    (project / "mypkg" / "flows.py").write_text(textwrap.dedent(PROJECT_FLOWS))
    (project / "examples").symlink_to(ROOT / "examples")
    for directory in ("var/lib/jobs", "var/lib/node_exporter/textfile"):
        (project / directory).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFLOW_", "REDIS_"))}
    env.update(GRAFLOW_SECRET=SECRET, XDG_RUNTIME_DIR=str(base / "runtime"))
    server = RedisServer(binary, base)
    server.start()
    certs = tls_redis.certs
    tls_args = ("--redis-ca-cert", str(certs["ca.crt"]), "--redis-cert", str(certs["client.crt"]),
                "--redis-key", str(certs["client.key"]))  # fmt: skip
    nodes = [
        _start_node(server.url, project, env),
        _start_node(tls_redis.url(), project, env, *tls_args),
    ]
    try:
        yield Deployment(project, server, tls_redis, redis_cluster, env)
    finally:
        for node in nodes:
            _stop(node)
        server.stop()


def _env_for(command: str, dep: Deployment) -> dict[str, str]:
    """The environment of one command. The TLS fixture asks every client for a certificate:
    a command that names only the CA gets the client's from the environment, as documented
    (GRAFLOW_REDIS_CERT, GRAFLOW_REDIS_KEY)."""
    env = dict(dep.env)
    if "rediss://" in command and "--redis-cert" not in command:
        env["GRAFLOW_REDIS_CERT"] = str(dep.tls.certs["client.crt"])
        env["GRAFLOW_REDIS_KEY"] = str(dep.tls.certs["client.key"])
    return env


def _serve_then_stop(command: str, dep: Deployment) -> tuple[int, str]:
    """Start a long-running command, wait until it serves, SIGTERM it; (exit code, stderr)."""
    log = dep.project / f"serve-{uuid.uuid4().hex[:8]}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec env {command}"], stdout=subprocess.DEVNULL, stderr=err,
            text=True, cwd=dep.project, env=_env_for(command, dep), start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + SERVE_DEADLINE_S
        while not SERVING.search(log.read_text()) and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        serving = proc.poll() is None
        _stop(proc)
    text = log.read_text()
    return (proc.returncode if serving else -1), text


def _id(shown: Shown) -> str:
    return f"{shown.where}: {shown.text}"


@pytest.mark.parametrize("shown", ALL_COMMANDS, ids=_id)
def test_the_command_runs_as_written(shown: Shown, deployment: Deployment) -> None:
    reason = _skip_reason(shown.text)
    if reason is not None:
        pytest.skip(reason)
    command = rewrite(shown.text, deployment)
    if re.search(r"(^|\s)graflow (supervisor|ui)\b", command):
        code, stderr = _serve_then_stop(command, deployment)
        assert code == 0, f"{shown.where}: {command}\n{stderr[-3000:]}"
        return
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, cwd=deployment.project, env=_env_for(command, deployment),
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{shown.where}: {command}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, done.stderr


def test_commands_are_found_and_the_skip_list_stays_small() -> None:
    texts = [shown.text for shown in ALL_COMMANDS]
    assert any(t.startswith("graflow run examples/word_count.py") for t in texts)
    assert any(t.startswith("graflow dlq list") for t in texts)
    assert sum(t.startswith("graflow ") for t in texts) >= 20
    skipped = [t for t in texts if _skip_reason(t) is not None]
    assert not any(t.startswith("graflow ") for t in skipped)
    for start in SKIPPED:  # no stale entry: each skips a command that is still shown
        assert any(_skip_reason(t) == SKIPPED[start] for t in texts), start
