"""How much of an upstream Graflow checkout runs unchanged on this package.

    python perf/compat_report.py --upstream /path/to/graflow-checkout \
        [--oracle-python /venv/bin/python] [--examples-only | --tests-only]

It copies the checkout's tests (``tests/core``, ``scenario``, ``channels``, ``integration``,
``tutorial``) into a scratch directory, replaces their Redis fixtures by one that talks to a
``redis-server`` this script starts on a free loopback port (hard-coded ``6379`` in the copies
is pointed there too), and runs them with pytest against this package. Its core examples run
the same way, each from a scratch copy of the examples folder.

The oracle is the checkout's own package: given ``--oracle-python`` (an interpreter with the
checkout's dependencies installed, e.g. a venv where ``pip install -e DIR`` was run; its
git HEAD needs ``redis<7`` there), the same tests and examples run against it too. A test
counts in the denominator when the oracle passes it; ours passes it when it is among those
and passes here (a collection error fails every test of its file). An example matches when
it exits as the oracle's does and prints the same after numbers, ids and timings are masked,
in any line order (parallel branches print in any order).
Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

OURS = Path(__file__).resolve().parents[1]
TEST_FOLDERS = ("core", "scenario", "channels", "integration", "tutorial")
EXAMPLE_FOLDERS = (
    "01_basics",
    "02_workflows",
    "03_data_flow",
    "04_execution",
    "05_distributed",
    "06_advanced",
    "07_dynamic_tasks",
    "08_real_world",
    "10_group_exec_policy",
    "13_checkpoints",
)
# Examples that need a Docker daemon (upstream's own container handler): not core.
SKIPPED_EXAMPLES = {"docker_handler.py", "multi_image_docker.py"}
# Examples whose output differs on purpose (README, "Deliberate deviations"): exit code only.
DEVIATING_EXAMPLES = {
    "03_data_flow/channel_concurrency.py": "README deviation 1: parallel branches lose no writes",
}
# Examples whose output depends on chance: only their exit code is compared.
CHANCE_EXAMPLES = {
    "07_dynamic_tasks/runtime_dynamic_tasks.py": "its retry demo fails on unseeded random()",
    "08_real_world/ml_training.py": "losses and accuracies come from unseeded random()",
}
EXAMPLE_TIMEOUT_S = 180.0
TEST_TIMEOUT_S = 120

CONFTEST = '''"""Fixtures for the copied tests: one real redis-server (compat_report.py)."""

import os

import pytest
import redis

from graflow.core.workflow import clear_workflow_context

PORT = int(os.environ["COMPAT_REDIS_PORT"])


@pytest.fixture(scope="session")
def redis_server():
    client = redis.Redis(host="localhost", port=PORT, db=0, decode_responses=True)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def clean_redis(redis_server):
    redis_server.flushdb()
    yield redis_server
    redis_server.flushdb()


@pytest.fixture(autouse=True)
def reset_global_workflow_context():
    clear_workflow_context()
    yield
    clear_workflow_context()
'''

PYTEST_INI = """[pytest]
markers =
    integration: tests that need a service
"""


@dataclass
class RedisServer:
    """A redis-server on a free loopback port in a scratch directory."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def stop(self) -> None:
        """Terminate it and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class Target:
    """One package under test: an interpreter and the package directory it imports."""

    label: str
    python: str
    package: Path  # the directory holding the ``graflow`` package


@dataclass
class TestOutcomes:
    """Per test id, passed or not; collection errors per file."""

    passed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    broken_files: set[str] = field(default_factory=set)


def _env(target: Target, scratch: Path, port: int) -> dict[str, str]:
    site = scratch / f"site-{target.label}"
    site.mkdir(exist_ok=True)
    link = site / "graflow"
    if not link.exists():
        link.symlink_to(target.package / "graflow", target_is_directory=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)
    env["COMPAT_REDIS_PORT"] = str(port)
    env["REDIS_PORT"] = str(port)
    env["REDIS_HOST"] = "localhost"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def copy_tests(upstream: Path, into: Path, port: int) -> list[str]:
    """Copy the test folders, our conftest instead of theirs, 6379 pointed at our server."""
    tests = into / "tests"
    tests.mkdir(parents=True)
    (tests / "__init__.py").write_text("")
    (tests / "conftest.py").write_text(CONFTEST)
    (into / "pytest.ini").write_text(PYTEST_INI)
    folders = []
    for name in TEST_FOLDERS:
        source = upstream / "tests" / name
        if not source.is_dir():
            continue
        shutil.copytree(source, tests / name, ignore=shutil.ignore_patterns("conftest.py"))
        for path in (tests / name).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "6379" in text:
                path.write_text(text.replace("6379", str(port)), encoding="utf-8")
        folders.append(f"tests/{name}")
    return folders


def _has_module(python: str, module: str) -> bool:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return probe.returncode == 0


def _case_id(case: ET.Element) -> str:
    return f"{case.get('classname', '')}::{case.get('name', '')}"


def run_tests(target: Target, workdir: Path, folders: list[str], port: int) -> TestOutcomes:
    """Run pytest over the copied folders; the outcome of every test case."""
    report = workdir / f"junit-{target.label}.xml"
    command = [target.python, "-m", "pytest", *folders, "-q", "-p", "no:cacheprovider"]
    command.append("--continue-on-collection-errors")
    command += ["-o", "junit_family=xunit1", f"--junitxml={report}"]
    if _has_module(target.python, "pytest_timeout"):
        command.append(f"--timeout={TEST_TIMEOUT_S}")
    log = workdir / f"pytest-{target.label}.log"
    with log.open("w") as out:
        subprocess.run(
            command,
            cwd=workdir,
            env=_env(target, workdir, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    outcomes = TestOutcomes()
    if not report.exists():
        return outcomes
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if not case.get("name") or "collection" in str(case.find("error")):
            outcomes.broken_files.add(case.get("classname", ""))
        if kinds & {"failure", "error"}:
            outcomes.failed.add(_case_id(case))
        elif "skipped" in kinds:
            outcomes.skipped.add(_case_id(case))
        else:
            outcomes.passed.add(_case_id(case))
    return outcomes


MASKS = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{6,}\b"), "<hex>"),
    (re.compile(r"_[0-9a-f]{8}\b"), "_<hex>"),  # iteration ids: base_cycle_1_<hex>
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?"), "<time>"),
    (re.compile(r"\d+\.\d+"), "<num>"),
    (re.compile(r"~\d+"), "~<num>"),  # approximate figures (throughput, ...)
    (re.compile(r"\d+ (items|tasks)/s"), "<rate>"),  # throughputs
    (re.compile(r"\b\d{5,}\b"), "<big>"),
    (re.compile(r"/tmp/\S+"), "<tmp>"),
]


def normalise(text: str) -> list[str]:
    """Output lines with ids, timings and scratch paths masked; blank lines dropped."""
    lines = []
    for raw in text.splitlines():
        line = raw.rstrip()
        for pattern, mask in MASKS:
            line = pattern.sub(mask, line)
        if line.strip():
            lines.append(line)
    return lines


@dataclass
class ExampleRun:
    """What one example did under one target."""

    exit_code: int
    lines: list[str]
    stderr_tail: str


def list_examples(upstream: Path) -> list[str]:
    """The core examples, as paths relative to ``examples/``."""
    found = []
    for folder in EXAMPLE_FOLDERS:
        for path in sorted((upstream / "examples" / folder).glob("*.py")):
            if path.name not in SKIPPED_EXAMPLES and not path.name.startswith("_"):
                found.append(f"{folder}/{path.name}")
    return found


def run_example(target: Target, upstream: Path, scratch: Path, name: str, port: int) -> ExampleRun:
    """Run one example from a fresh copy of the examples folder (checkpoints land there)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"ex-{target.label}-", dir=scratch))
    shutil.copytree(upstream / "examples", workdir / "examples")
    subprocess.run(["redis-cli", "-p", str(port), "flushall"], capture_output=True, check=False)
    try:
        proc = subprocess.run(
            [target.python, f"examples/{name}"],
            cwd=workdir,
            env=_env(target, scratch, port),
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        output = timeout.stdout.decode() if isinstance(timeout.stdout, bytes) else ""
        return ExampleRun(-1, normalise(output or ""), "timed out")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return ExampleRun(proc.returncode, normalise(proc.stdout), proc.stderr[-600:])


def compare_examples(
    upstream: Path,
    scratch: Path,
    port: int,
    ours: Target,
    oracle: Target | None,
    only: list[str] | None = None,
    show_diff: bool = False,
) -> tuple[int, int]:
    """Run every core example; print one line each; (matching, total)."""
    names = [n for n in list_examples(upstream) if not only or any(o in n for o in only)]
    good = 0
    for name in names:
        mine = run_example(ours, upstream, scratch, name, port)
        verdict = "exit 0" if mine.exit_code == 0 else f"EXIT {mine.exit_code}"
        ok = mine.exit_code == 0
        if oracle is not None:
            theirs = run_example(oracle, upstream, scratch, name, port)
            ok = mine.exit_code == theirs.exit_code  # e.g. both fail to reach a web API
            same = sorted(mine.lines) == sorted(theirs.lines)
            interleaved = not same and _characters(mine.lines) == _characters(theirs.lines)
            chance = CHANCE_EXAMPLES.get(name) or DEVIATING_EXAMPLES.get(name)
            ok = ok and (same or interleaved or chance is not None)
            if same:
                verdict += ", same output"
            elif interleaved:
                verdict += ", same output (parallel prints interleaved differently)"
            elif chance is not None:
                verdict += f", output differs as expected ({chance})"
            else:
                verdict += ", OUTPUT DIFFERS"
            verdict += f" (upstream exit {theirs.exit_code})"
            if not same and show_diff:
                _show_diff(theirs.lines, mine.lines)
        if mine.exit_code != 0:
            verdict += f"\n      {mine.stderr_tail.strip().splitlines()[-1:]}"
        good += ok
        print(f"  {'ok ' if ok else 'BAD'} {name}: {verdict}")
    return good, len(names)


def _characters(lines: list[str]) -> list[str]:
    """The printed characters, whitespace dropped, sorted.

    Threads printing at once split and merge each other's lines (``print`` writes the text
    and the newline separately), so two runs of the same parallel branches print the same
    characters in different lines.
    """
    return sorted("".join(lines).replace(" ", ""))


def _show_diff(theirs: list[str], mine: list[str]) -> None:
    for line in difflib.unified_diff(theirs, mine, "upstream", "ours", lineterm="", n=1):
        print(f"        {line}")


def compare_tests(
    upstream: Path, scratch: Path, port: int, ours: Target, oracle: Target | None
) -> tuple[int, int]:
    """Run the test folders under both; print the counts; (ours passed, denominator)."""
    mine_dir = scratch / "tests-ours"
    folders = copy_tests(upstream, mine_dir, port)
    mine = run_tests(ours, mine_dir, folders, port)
    print(
        f"  ours: {len(mine.passed)} passed, {len(mine.failed)} failed or errored, "
        f"{len(mine.skipped)} skipped; collection errors in {sorted(mine.broken_files)}"
    )
    if oracle is None:
        total = len(mine.passed) + len(mine.failed)
        return len(mine.passed), total
    theirs_dir = scratch / "tests-oracle"
    copy_tests(upstream, theirs_dir, port)
    theirs = run_tests(oracle, theirs_dir, folders, port)
    print(
        f"  upstream: {len(theirs.passed)} passed, {len(theirs.failed)} failed or errored, "
        f"{len(theirs.skipped)} skipped"
    )
    passed = theirs.passed & mine.passed
    for test_id in sorted(theirs.passed - mine.passed):
        print(f"    not passing here: {test_id}")
    return len(passed), len(theirs.passed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="an upstream checkout")
    parser.add_argument("--oracle-python", help="interpreter with the checkout's dependencies")
    parser.add_argument("--python", default=sys.executable, help="interpreter for ours")
    parser.add_argument("--examples-only", action="store_true")
    parser.add_argument("--tests-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--example", action="append", help="run only examples whose path contains this"
    )
    parser.add_argument(
        "--show-diff", action="store_true", help="print how differing outputs differ"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    upstream = args.upstream.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="graflow-compat-"))
    server = RedisServer(scratch)
    server.start()
    ours = Target("ours", args.python, OURS)
    oracle = Target("oracle", args.oracle_python, upstream) if args.oracle_python else None
    try:
        if not args.tests_only:
            print("Examples:")
            good, total = compare_examples(
                upstream, scratch, server.port, ours, oracle, args.example, args.show_diff
            )
            print(f"examples: {good}/{total} " + ("match upstream" if oracle else "exit 0"))
        if not args.examples_only:
            print("Tests:")
            passed, total = compare_tests(upstream, scratch, server.port, ours, oracle)
            share = 100.0 * passed / total if total else 0.0
            against = "of those upstream passes" if oracle else "of those collected"
            print(f"tests: {passed}/{total} pass ({share:.1f}% {against})")
    finally:
        server.stop()
        if args.keep:
            print(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
