"""The pure parts of the graflow command: redaction, log formats, meters, progress, locks,
reports and views (the command itself is tested end to end in tests/integration/test_cli.py)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from graflow.exceptions import (
    ConfigError,
    GraflowRuntimeError,
    LockHeld,
    WorkerLost,
    WorkflowTimeoutError,
    as_runtime_error,
)
from graflow.ops.lock import FileRunLock, check_lock_name, lock_dir
from graflow.ops.logs import JsonFormatter, Redactor, RunTag, TextFormatter, secrets_in
from graflow.ops.progress import ProgressLine
from graflow.ops.report import describe_error, hint_for
from graflow.ops.view import status_text
from graflow.redis import keys
from graflow.redis.status import ClusterStatus
from graflow.worker.meter import DURATION_BUCKETS_S, TaskMeter


def test_secrets_in_a_url_are_found_as_written_and_decoded() -> None:
    found = secrets_in("redis://user:p%40ss%2Fword@host:6379/0", "signing-key")
    redact = Redactor(found)
    assert redact("p@ss/word and p%40ss%2Fword and signing-key") == "*** and *** and ***"
    assert secrets_in("redis://host:6379/0", None) == []
    assert Redactor(["ab"])("ab") == "ab", "too short to redact safely"


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("graflow.x", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_log_lines_carry_the_run_and_task_ids_and_no_secret() -> None:
    tag = RunTag()
    tag.run_id = "run123"
    redact = Redactor(["hunter22"])
    text = TextFormatter(redact, tag).format(_record("password hunter22", task_id="load"))
    assert text.endswith("WARNING graflow.x [run run123 task load]: password ***")
    line = JsonFormatter(redact, tag).format(_record("password hunter22", hint="h"))
    data = json.loads(line)
    assert data["run_id"] == "run123" and data["message"] == "password ***"
    assert data["hint"] == "h" and "task_id" not in data


def test_a_task_meter_counts_buckets_and_round_trips_as_json() -> None:
    meter = TaskMeter()
    meter.start(attempt=0)
    meter.finish(ok=True, duration_s=0.003)
    meter.start(attempt=1)
    meter.finish(ok=False, duration_s=1000.0)
    assert (meter.started, meter.succeeded, meter.failed, meter.retried) == (2, 1, 1, 1)
    assert meter.buckets[0] == 1 and meter.buckets[len(DURATION_BUCKETS_S)] == 1
    again = TaskMeter.from_json(meter.to_json(rate_per_s=1.5))
    assert again == meter
    total = TaskMeter()
    total.add(meter)
    total.add(meter)
    assert total.started == 4 and sum(total.buckets) == 4
    assert TaskMeter().is_behind(meter) and not meter.is_behind(TaskMeter())
    with pytest.raises(ValueError):
        TaskMeter.from_json("not json")


def test_the_progress_line_shows_counts_rate_and_elapsed() -> None:
    line = ProgressLine(io.StringIO())
    line.update({"run_id": "abcdef0123456789", "done": 0, "queued": 5, "running": 2})
    line.update({"run_id": "abcdef0123456789", "done": 10, "failed": 1, "queued": 3})
    text = line.render()
    assert text.startswith("run abcdef01: 10 done | 3 queued | 0 in flight | 1 failed | ")
    assert "tasks/s | 0:0" in text


def test_the_progress_line_never_shows_more_running_than_workers() -> None:
    line = ProgressLine(io.StringIO(), workers=2)
    line.update({"run_id": "abcdef0123456789", "done": 3, "queued": 10, "running": 79})
    text = line.render()
    assert "| 87 queued | 2 running |" in text
    line.update({"run_id": "abcdef0123456789", "done": 3, "queued": 0, "running": 1})
    assert "| 0 queued | 1 running |" in line.render()


def test_lock_names_are_checked_and_a_held_lock_refuses_a_second_taker(tmp_path: Path) -> None:
    assert check_lock_name("nightly-sync.v2") == "nightly-sync.v2"
    for bad in ("", "../x", "a/b", ".hidden", "x" * 101):
        with pytest.raises(ConfigError, match="--lock"):
            check_lock_name(bad)
    directory = lock_dir(str(tmp_path))
    assert directory == tmp_path / "graflow"
    first = FileRunLock(directory, "job")
    with first:
        with pytest.raises(LockHeld, match=r"lock 'job' is held by another run \(pid \d+"):
            FileRunLock(directory, "job").acquire()
        FileRunLock(directory, "other").acquire()
    with FileRunLock(directory, "job"):
        pass


def test_a_failure_is_described_by_its_task_and_own_error() -> None:
    wrapped = as_runtime_error(ValueError("kaput"))
    wrapped.task_id = "load"
    assert describe_error(wrapped) == ("load", "ValueError", "ValueError: kaput")
    lost = WorkerLost("fetch", 3)
    assert describe_error(lost)[:2] == ("fetch", "WorkerLost")
    assert "died" in hint_for(lost)
    assert "--timeout-s" in hint_for(WorkflowTimeoutError(5))
    assert "-v" in hint_for(GraflowRuntimeError("x"))


def test_queue_names_are_read_back_from_stream_keys() -> None:
    assert keys.queue_from_stream(keys.queue_stream("jobs:high")) == "jobs:high"
    assert keys.queue_from_stream(keys.dead_letters("jobs")) is None
    assert keys.queue_from_stream("graflow:{q:}:tasks") is None


def test_status_of_an_empty_deployment() -> None:
    text = status_text(ClusterStatus(queues=[], nodes=[], gone_nodes=2, locks=[]))
    assert "queues: none" in text
    assert "nodes: 0 live, 2 gone; throughput 0.0 tasks/s" in text
