"""Messages and defaults a newcomer meets first (#18): each names the fix."""

from __future__ import annotations

import argparse
import io
import logging
import os

import pytest

from graflow import task, workflow
from graflow.cli import build_parser
from graflow.config import Settings
from graflow.exceptions import CycleLimitExceededError, GraphCompilationError
from graflow.ops.logs import Redactor, RunTag, TextFormatter
from graflow.ops.node import _node_settings
from graflow.ops.report import describe_error, hint_for


def test_multiple_start_nodes_are_listed_with_how_to_choose() -> None:
    with workflow("two_roots") as wf:

        @task
        def left() -> int:
            return 1

        @task
        def right() -> int:
            return 2

    with pytest.raises(GraphCompilationError) as caught:
        wf.execute()
    message = str(caught.value)
    assert "Multiple start nodes found, please specify one: left, right" in message
    assert "--start" in message


def test_the_cycle_limit_reads_as_a_sentence_with_the_fix() -> None:
    error = CycleLimitExceededError("refine", 10, 10)
    _, kind, message = describe_error(error)
    assert kind == "CycleLimitExceededError"
    assert message == "task 'refine' asked for another iteration after its 10 of max_cycles=10"
    assert "max_cycles" in hint_for(error)


def test_verbose_hints_do_not_ask_for_verbose() -> None:
    error = ValueError("x")
    assert "rerun with -v" in hint_for(error)
    assert "rerun with -v" not in hint_for(error, verbose=True)


def test_metrics_listen_on_loopback_unless_told() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "x.py", "--metrics-port", "0"])
    sup = parser.parse_args(["supervisor", "--metrics-port", "0"])
    assert run.metrics_addr == "127.0.0.1"
    assert sup.metrics_addr == "127.0.0.1"
    told = parser.parse_args(["supervisor", "--metrics-addr", "0.0.0.0"])
    assert told.metrics_addr == "0.0.0.0"


def test_a_supervisor_uses_every_core_like_run_unless_told() -> None:
    args = build_parser().parse_args(["supervisor", "--redis", "redis://127.0.0.1:1/0"])
    assert isinstance(args, argparse.Namespace)
    assert _node_settings(args, Settings()).processes == (os.cpu_count() or 1)
    assert _node_settings(args, Settings(processes=3)).processes == 3  # MAX_CONCURRENT_TASKS
    args.processes = 2
    assert _node_settings(args, Settings(processes=3)).processes == 2


def test_a_line_a_task_logs_names_its_run_and_task() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(Redactor([]), RunTag()))
    log = logging.getLogger("tests.first_hour.task_logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with workflow("logs") as wf:

            @task
            def fetch() -> int:
                log.info("fetched %d rows", 3)
                return 3

        _, context = wf.execute(ret_context=True)
    finally:
        log.removeHandler(handler)
    line = stream.getvalue().strip()
    assert f"[run {context.session_id} task fetch]: fetched 3 rows" in line
