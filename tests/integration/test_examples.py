"""The examples run as scripts and as imported modules, and produce the values they promise.

Each example is run once as ``python examples/<name>.py`` from the repository root (its
printed output is checked for concrete values), and its ``main()`` is imported and called
(its return value is checked).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NAMES = [
    "agent_loop",
    "channels",
    "fan_out_fan_in",
    "group_policies",
    "iteration",
    "pipeline",
    "retries",
    "word_count",
]

WORD_COUNT_TOP = [
    ("zene", 106390),
    ("zituki", 51391),
    ("deve", 33703),
    ("rovagi", 24600),
    ("pikito", 19534),
    ("kole", 16264),
    ("mupu", 13740),
    ("pule", 11912),
    ("kizugi", 10483),
    ("pive", 9498),
]


def run_script(name: str, *args: str, timeout_s: float = 120.0) -> list[str]:
    """Run ``examples/<name>.py``; its stdout lines with runs of whitespace collapsed."""
    proc = subprocess.run(
        [sys.executable, f"examples/{name}.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, f"{name}.py exited {proc.returncode}:\n{proc.stderr}"
    return [" ".join(line.split()) for line in proc.stdout.splitlines()]


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as ``examples.<name>`` (importable by worker processes)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"examples.{name}")


def test_every_example_is_tested_and_listed_in_the_readme() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == NAMES
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"python examples/{name}.py" in readme


# -- pipeline ---------------------------------------------------------------------------


def test_pipeline_script() -> None:
    lines = run_script("pipeline")
    assert lines[:3] == [
        "extract: 8 rows read",
        "transform: 6 orders kept, 2 cancelled dropped",
        "load: 3 rows written to table 'revenue_by_region'",
    ]
    assert lines[4:7] == ["east 227.70", "south 197.50", "north 188.80"]
    assert lines[-1] == "Total revenue: 614.00 from 6 orders"


def test_pipeline_main() -> None:
    summary = load("pipeline").main()
    assert summary == {
        "revenue": {"east": 227.7, "south": 197.5, "north": 188.8},
        "total": 614.0,
        "orders": 6,
        "rejected": 2,
    }
    assert list(summary["revenue"]) == ["east", "south", "north"]


# -- fan-out / fan-in -------------------------------------------------------------------


def test_fan_out_fan_in_script() -> None:
    lines = run_script("fan_out_fan_in")
    assert lines[0] == "fetch: 400 requests loaded"
    # The members run concurrently, in any order, between fetch and report.
    assert sorted(lines[1:4]) == [
        "errors: 14 server errors, 12 not found",
        "latency: 400 samples",
        "traffic: 5 paths counted",
    ]
    assert lines[4] == "report: combining 3 partial results"
    assert lines[5:] == [
        "Requests: 400 top path: /",
        "Traffic: / 149, /api/items 107, /search 84, /cart 45, /checkout 15",
        "Errors: 14 server errors (rate 3.50%), 12 not found",
        "Latency: p50 24.5 ms, p95 64.8 ms",
    ]


def test_fan_out_fan_in_main() -> None:
    report = load("fan_out_fan_in").main()
    assert report == {
        "requests": 400,
        "top_path": "/",
        "traffic": {"/": 149, "/api/items": 107, "/search": 84, "/cart": 45, "/checkout": 15},
        "server_errors": 14,
        "not_found": 12,
        "error_rate": 0.035,
        "p50_ms": 24.5,
        "p95_ms": 64.8,
    }


# -- agent loop -------------------------------------------------------------------------


def test_agent_loop_script() -> None:
    lines = run_script("agent_loop")
    turns = [line for line in lines if line.startswith(("agent[", "tool:"))]
    # Control passes agent -> tool -> agent ... and the agent has the last word.
    speakers = [line.split(":")[0].split("[")[0] for line in turns]
    assert speakers == ["agent", "tool"] * 5 + ["agent"]
    assert turns[0] == "agent[1]: call lookup_price(item='flight')"
    assert turns[7] == "tool: {'item': 'flight', 'eur': 386.4}"
    assert turns[-1] == "agent[6]: answer 779.85 EUR"
    assert "Answer: 779.85 EUR after 5 tool calls and 6 agent turns" in lines
    assert "hotel 333.45 EUR" in lines


def test_agent_loop_main() -> None:
    answer = load("agent_loop").main()
    assert answer == {
        "answer_eur": 779.85,
        "tool_calls": 5,
        "agent_turns": 6,
        "breakdown": {"flight": 386.4, "hotel": 333.45, "rail pass": 60.0},
    }


# -- iteration --------------------------------------------------------------------------

PAGERANK = {
    "home": 0.2946,
    "docs": 0.2753,
    "api": 0.142,
    "blog": 0.1085,
    "pricing": 0.1085,
    "signup": 0.0711,
}


def test_iteration_script() -> None:
    lines = run_script("iteration")
    runs = [line for line in lines if line.startswith("run ")]
    assert runs[0] == "run 1: delta 6.61e-01"
    assert runs[-1] == "run 31: delta 6.87e-07"
    assert "publish: converged after 31 runs" in lines
    start = lines.index("PageRank:") + 1
    assert lines[start : start + 6] == [
        "home 0.2946",
        "docs 0.2753",
        "api 0.1420",
        "blog 0.1085",
        "pricing 0.1085",
        "signup 0.0711",
    ]
    assert lines[-1] == "Sum of ranks: 1.0000"


def test_iteration_main_converges_within_budget() -> None:
    outcome = load("iteration").main()
    assert outcome == {"ranks": PAGERANK, "runs": 31, "converged": True}
    assert next(iter(outcome["ranks"])) == "home"


def test_iteration_main_stops_at_max_cycles() -> None:
    outcome = load("iteration").main(max_cycles=5)
    assert outcome["runs"] == 5
    assert outcome["converged"] is False
    assert outcome["ranks"]["home"] == 0.287


# -- retries ----------------------------------------------------------------------------


def test_retries_script() -> None:
    lines = run_script("retries")
    assert lines[0] == "Planned waits before each retry: 0.01s, 0.02s, 0.04s"
    assert lines[1:5] == [
        "fetch_rates: attempt 1 (retry 0) -> timeout",
        "fetch_rates: attempt 2 (retry 1) -> timeout",
        "fetch_rates: attempt 3 (retry 2) -> ok",
        "price_basket: 3 currencies priced",
    ]
    assert [line for line in lines if line.startswith("publish_report:")] == [
        f"publish_report: attempt {n} -> permission denied" for n in (1, 2, 3)
    ]
    assert "fetch_rates succeeded after 3 attempts" in lines
    assert "Basket of 250 EUR: 270.0 USD, 215.0 GBP, 40475.0 JPY" in lines
    assert lines[-1] == (
        "publish_report gave up: RetryLimitExceededError retry_count=3 max_retries=2 "
        "cause=PermissionError('report bucket is read-only')"
    )


def test_retries_main() -> None:
    outcome = load("retries").main()
    assert outcome["flaky"] == {
        "attempts": 3,
        "prices": {"USD": 270.0, "GBP": 215.0, "JPY": 40475.0},
    }
    assert outcome["broken"] == {
        "error": "RetryLimitExceededError",
        "task_id": "publish_report",
        "retry_count": 3,
        "max_retries": 2,
        "cause": "PermissionError('report bucket is read-only')",
    }


# -- group policies ---------------------------------------------------------------------

POLICY_LINES = [
    "strict FAILED Parallel group mirrors failed: 2 task(s) failed",
    "best_effort ok copies on eu, us (2/4)",
    "at_least_2 ok copies on eu, us (2/4)",
    "at_least_3 FAILED Only 2/3 tasks succeeded in group mirrors",
    "critical_eu ok copies on eu, us (2/4)",
    "critical_ap FAILED Critical tasks failed: ['mirror_ap']",
    "transient_only ok copies on eu, us (2/4)",
    "transient_only+denied FAILED Group mirrors: 1 member(s) failed permanently",
]


def test_group_policies_script() -> None:
    lines = run_script("group_policies")
    assert lines[:8] == POLICY_LINES
    assert lines[8:12] == [
        "ParallelGroupError under strict:",
        "group_id = 'mirrors'",
        "successful_tasks = ['mirror_eu', 'mirror_us']",
        "failed_tasks =",
    ]
    assert lines[12].startswith("mirror_ap: ")
    assert "connection refused by mirror-ap" in lines[12]
    assert lines[13].startswith("mirror_sa: ")
    assert "mirror-sa did not answer within 5 s" in lines[13]


def test_group_policies_main() -> None:
    outcomes = load("group_policies").main()
    passed = {label for label, outcome in outcomes.items() if outcome["ok"]}
    assert passed == {"best_effort", "at_least_2", "critical_eu", "transient_only"}
    for label in passed:
        assert outcomes[label]["copies"] == ["eu", "us"]
    strict = outcomes["strict"]
    assert strict["group_id"] == "mirrors"
    assert strict["successful_tasks"] == ["mirror_eu", "mirror_us"]
    assert [task_id for task_id, _ in strict["failed_tasks"]] == ["mirror_ap", "mirror_sa"]
    assert "connection refused by mirror-ap" in strict["failed_tasks"][0][1]
    assert outcomes["at_least_3"]["message"] == "Only 2/3 tasks succeeded in group mirrors"
    denied = outcomes["transient_only+denied"]
    assert [task_id for task_id, _ in denied["failed_tasks"]] == ["mirror_ap", "mirror_sa"]


# -- channels ---------------------------------------------------------------------------


def test_channels_script() -> None:
    lines = run_script("channels")
    assert lines[0] == "setup: api_token='tok-5f2a' (ttl 0.3 s)"
    assert "atomic_add: requests = 2000 (expected 2000)" in lines
    assert "lock: reserved = 80, stock left = 0" in lines
    assert (
        "typed: 4 readings stored, invalid one rejected: Value does not conform to Reading" in lines
    )
    assert "reading:3 = {'sensor': 's3', 'celsius': 23.5, 'ok': True}" in lines
    assert "append: audit_log has 6 entries, first 'audit log opened'" in lines
    assert "worker_3 done" in lines
    assert lines[-1] == "ttl: api_token = 'tok-5f2a' before, '<expired>' after 0.3 s"


def test_channels_main() -> None:
    out = load("channels").main()
    assert out["requests"] == 4 * 500
    assert out["reserved"] == 80
    assert out["stock_left"] == 0
    assert out["readings"] == {
        f"reading:{i}": {"sensor": f"s{i}", "celsius": 20.5 + i, "ok": True} for i in range(4)
    }
    assert out["rejected"] == "Value does not conform to Reading"
    log = out["audit_log"]
    assert log[0] == "audit log opened"
    assert sorted(log[1:]) == ["setup: stock loaded"] + [f"worker_{i} done" for i in range(4)]
    assert out["token_before_expiry"] == "tok-5f2a"
    assert out["token_after_expiry"] == "<expired>"


# -- word count -------------------------------------------------------------------------


def test_word_count_script() -> None:
    lines = run_script("word_count", timeout_s=300.0)
    assert lines[0] == (
        "Counted 783847 words (2000000 tokens, 4000 distinct) in 5000 documents, 16 chunks"
    )
    assert lines[1] == "Top 10 words:"
    assert lines[2:12] == [
        f"{rank}. {word} {count}" for rank, (word, count) in enumerate(WORD_COUNT_TOP, 1)
    ]
    assert lines[12].startswith("Run: ")


@pytest.mark.parametrize("chunks", [1, 3, 8])
def test_word_count_main_does_not_depend_on_chunking(chunks: int) -> None:
    word_count = load("word_count")
    out: dict[str, Any] = word_count.main(chunks=chunks, docs=240)
    assert out["chunks"] == chunks
    assert out["docs"] == 240
    assert out["tokens"] == 240 * word_count.WORDS_PER_DOC
    # The same corpus however it is split: identical totals and ranking.
    whole = word_count.count_documents(0, 240)
    expected = sorted(whole["counts"].items(), key=lambda item: (-item[1], item[0]))[:10]
    assert out["top"] == expected
    assert out["counted"] == sum(whole["counts"].values())
    assert out["distinct"] == len(whole["counts"])


def test_word_count_main_matches_in_process_run() -> None:
    word_count = load("word_count")
    out = word_count.main(processes=2, chunks=4, docs=200)
    in_process = word_count.build(4, 200).execute()
    assert out["top"] == in_process["top"]
    assert out["counted"] == in_process["counted"]
