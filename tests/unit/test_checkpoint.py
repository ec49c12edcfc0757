"""Checkpoint and resume in one process: the container format, its errors, upstream's API.

A crash is a ``Crash`` (a BaseException, so nothing in graflow catches it) raised by a task
that runs in the driver thread: the run stops where it is, like a killed driver, and the
checkpoint written after the last completion is what a rerun finds. Tasks record their runs
in a file (closures are pickled by value with a checkpoint, so a list would be copied).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import RetryPolicy, parallel, task, workflow
from graflow.core.checkpoint import CheckpointManager, CheckpointMetadata, read_checkpoint
from graflow.core.checkpoint_store import FORMAT_VERSION, decode, encode, write_file
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import (
    CheckpointError,
    CheckpointVersionError,
    ConfigError,
    CorruptCheckpoint,
    ForeignCheckpoint,
    TruncatedCheckpoint,
)


class Crash(BaseException):
    """Stands for the driver dying: nothing catches it."""


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def marking(log: Path, name: str, crash: Path | None = None, value: Any = None) -> Any:
    """A task ``name`` that logs each run and crashes while the file ``crash`` exists."""

    @task(id=name, inject_context=True)
    def body(ctx: Any) -> Any:
        with log.open("a") as fh:
            fh.write(f"{ctx.task_id}\n")
        if crash is not None and crash.exists():
            raise Crash(name)
        return value if value is not None else name

    return body


# -- the container ----------------------------------------------------------------------


def test_a_container_round_trips() -> None:
    data = encode({"a": [1, 2]}, b"\x00blob")
    assert data.startswith(b"GRAFLOW-CHECKPOINT %d\n" % FORMAT_VERSION)
    container = decode(data, "x")
    assert container.state == {"a": [1, 2]}
    assert container.blob == b"\x00blob"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "run.ckpt"
    with workflow("small") as wf:
        marking(tmp_path / "log", "a") >> marking(tmp_path / "log", "b")
    graflow.run(wf, processes=0, checkpoint=str(path))
    return path


def test_a_corrupt_checkpoint_names_the_file(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="checksum") as info:
        read_checkpoint(str(saved))
    assert str(saved) in str(info.value) and info.value.path == str(saved)


@pytest.mark.parametrize("keep", [0, 10, 40, -1])
def test_a_truncated_checkpoint_names_the_file(saved: Path, keep: int) -> None:
    saved.write_bytes(saved.read_bytes()[:keep])
    with pytest.raises(TruncatedCheckpoint) as info:
        read_checkpoint(str(saved))
    assert str(saved) in str(info.value)


def test_a_checkpoint_of_another_format_version_names_both(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes().replace(b"CHECKPOINT 1\n", b"CHECKPOINT 7\n", 1))
    with pytest.raises(CheckpointVersionError, match="version 7") as info:
        read_checkpoint(str(saved))
    assert (info.value.found, info.value.supported) == (7, FORMAT_VERSION)
    assert str(saved) in str(info.value)


def test_a_file_that_is_no_checkpoint_is_foreign(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(ForeignCheckpoint, match="not a graflow checkpoint"):
        read_checkpoint(str(path))


def test_checkpoint_errors_are_config_errors_naming_the_path() -> None:
    for cls in (CorruptCheckpoint, TruncatedCheckpoint, ForeignCheckpoint):
        err = cls("/p/x.ckpt", "bad")
        assert isinstance(err, CheckpointError) and isinstance(err, ConfigError)
        assert str(err).startswith("checkpoint /p/x.ckpt:")


def test_a_damaged_pickle_never_escapes_as_a_pickle_error(saved: Path) -> None:
    container = read_checkpoint(str(saved))
    saved.write_bytes(encode(container.state, b"\x80\x05not a pickle"))  # checksum matches
    with workflow("small") as wf:
        marking(saved.parent / "log", "a") >> marking(saved.parent / "log", "b")
    with pytest.raises(CheckpointError, match="cannot be loaded") as info:
        graflow.run(wf, processes=0, checkpoint=str(saved))
    assert str(saved) in str(info.value)


def test_writes_are_atomic_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sub" / "c.ckpt"
    write_file(path, b"old")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def no_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(CheckpointError, match="No space left") as info:
        write_file(path, b"new")
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old", "a failed write leaves the last checkpoint intact"
    assert os.listdir(path.parent) == ["c.ckpt"], "no temporary file is left behind"


# -- graflow.run(checkpoint=...) --------------------------------------------------------


def test_resume_after_a_crash_runs_only_what_was_left(tmp_path: Path) -> None:
    log, crash, path = tmp_path / "log", tmp_path / "crash", str(tmp_path / "r.ckpt")

    def build() -> WorkflowContext:
        with workflow("three") as wf:
            a, b = marking(log, "a", value=1), marking(log, "b", crash)
            a >> b >> marking(log, "c")
        return wf

    crash.touch()
    with pytest.raises(Crash):
        graflow.run(build(), processes=0, checkpoint=path, checkpoint_every_s=0)
    assert ran(log) == ["a", "b"]
    state = read_checkpoint(path).state
    assert (state["status"], state["completed_tasks"], state["queue"]) == ("running", ["a"], ["b"])

    crash.unlink()
    log.unlink()
    result = graflow.run(build(), processes=0, checkpoint=path)
    assert ran(log) == ["b", "c"]
    assert result.results == {"a": 1, "b": "b", "c": "c"}
    assert result.completed == ["a", "b", "c"]
    assert read_checkpoint(path).state["status"] == "finished"

    log.unlink()
    again = graflow.run(build(), processes=0, checkpoint=path)
    assert ran(log) == [] and again.already_finished
    assert (again.value, again.results) == (result.value, result.results)

    graflow.run(build(), processes=0, checkpoint=path, fresh=True)
    assert ran(log) == ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="resume"):
        graflow.run(build(), processes=0, checkpoint=path, resume=False)


def test_cycle_and_retry_counts_survive_a_crash(tmp_path: Path) -> None:
    log, crash, path = tmp_path / "log", tmp_path / "crash", str(tmp_path / "r.ckpt")
    failed_once = tmp_path / "failed_once"

    def build() -> WorkflowContext:
        with workflow("loop") as wf:

            @task(id="flaky", max_retries=3)
            def flaky() -> str:
                if not failed_once.exists():
                    failed_once.touch()
                    raise ValueError("first attempt fails")
                return "ok"

            @task(id="loop", inject_context=True, max_cycles=6)
            def loop(ctx: Any, data: Any = None) -> int:
                with log.open("a") as fh:
                    fh.write(f"{ctx.cycle_count}\n")
                if ctx.cycle_count == 4 and crash.exists():
                    raise Crash()
                total = (data or 0) + ctx.cycle_count
                if ctx.can_iterate():
                    ctx.next_iteration(total)
                return total

            flaky >> loop
        return wf

    crash.touch()
    with pytest.raises(Crash):
        graflow.run(build(), processes=0, checkpoint=path, checkpoint_every_s=0)
    state = read_checkpoint(path).state
    assert state["retry_counts"] == {"flaky": 1}
    assert state["cycle_counts"] == {"flaky": 1, "loop": 3}, "the crashed cycle is not counted"

    crash.unlink()
    result = graflow.run(build(), processes=0, checkpoint=path)
    assert ran(log) == ["1", "2", "3", "4", "4", "5", "6"]
    assert result.value == sum(range(1, 7))


def test_a_group_resumes_its_unfinished_branches_where_they_were(tmp_path: Path) -> None:
    log, crash, path = tmp_path / "log", tmp_path / "crash", str(tmp_path / "g.ckpt")

    def build() -> WorkflowContext:
        with workflow("fan") as wf:
            branches = [
                marking(log, f"m{i}") >> marking(log, f"m{i}_post", crash if i == 1 else None)
                for i in range(3)
            ]
            group = parallel(*branches).set_group_name("G").with_execution(backend="direct")
            marking(log, "start") >> group >> marking(log, "end")
        return wf

    crash.touch()
    with pytest.raises(Crash):
        graflow.run(build(), processes=0, start="start", checkpoint=path, checkpoint_every_s=0)
    before = ran(log)
    groups = read_checkpoint(path).state["groups"]
    assert groups["id"] == "G"
    assert [b["member"] for b in groups["branches"]] == ["m1", "m2"]
    assert groups["branches"][0]["queue"] == ["m1_post"], "the crashed task runs again"

    crash.unlink()
    log.unlink()
    graflow.run(build(), processes=0, start="start", checkpoint=path)
    assert sorted(ran(log)) == sorted(["m1_post", "m2_post", "end"])
    assert "m2_post" not in before


def test_a_retry_waiting_out_its_backoff_runs_at_once_after_resume(tmp_path: Path) -> None:
    log, crash, path = tmp_path / "log", tmp_path / "crash", str(tmp_path / "t.ckpt")
    failed_once = tmp_path / "failed_once"

    def build() -> WorkflowContext:
        with workflow("backoff") as wf:

            @task(id="slow_retry", retry_policy=RetryPolicy(max_retries=2, initial_interval=3600))
            def slow_retry() -> str:
                if not failed_once.exists():
                    failed_once.touch()
                    raise ValueError("retry me in an hour")
                return "ok"

            group = parallel(slow_retry, marking(log, "boom", crash)).with_execution(
                backend="direct"
            )
            marking(log, "start") >> group.set_group_name("G")
        return wf

    crash.touch()
    with pytest.raises(Crash):
        graflow.run(build(), processes=0, start="start", checkpoint=path, checkpoint_every_s=0)
    branches = read_checkpoint(path).state["groups"]["branches"]
    assert {b["member"]: b["queue"] for b in branches} == {
        "slow_retry": ["slow_retry"],
        "boom": ["boom"],
    }
    crash.unlink()
    result = graflow.run(build(), processes=0, start="start", checkpoint=path)  # no hour's wait
    assert result.results["slow_retry"] == "ok"


def test_a_checkpoint_of_another_workflow_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "w.ckpt")
    with workflow("one") as one:
        marking(tmp_path / "log", "a")
    graflow.run(one, processes=0, checkpoint=path)
    with workflow("two") as two:
        marking(tmp_path / "log", "x")
    with pytest.raises(ForeignCheckpoint, match="another workflow"):
        graflow.run(two, processes=0, checkpoint=path)


def test_an_unpicklable_channel_value_is_named(tmp_path: Path) -> None:
    with workflow("lock") as wf:

        @task(inject_context=True)
        def holds_a_lock(ctx: Any) -> None:
            import threading  # noqa: PLC0415 - the value that defeats pickling

            ctx.get_channel().set("the_lock", threading.Lock())

    with pytest.raises(CheckpointError, match="the_lock"):
        graflow.run(wf, processes=0, checkpoint=str(tmp_path / "l.ckpt"))


def test_checkpoint_options_need_a_checkpoint() -> None:
    with workflow("x") as wf:
        marking(Path(os.devnull), "a")
    with pytest.raises(ConfigError, match="checkpoint=PATH"):
        graflow.run(wf, processes=0, checkpoint_every_s=1)
    with pytest.raises(ConfigError, match="checkpoint_every_s"):
        graflow.run(wf, processes=0, checkpoint="/tmp/x", checkpoint_every_s=-1)


# -- upstream's API ---------------------------------------------------------------------


def test_a_deferred_checkpoint_writes_three_files_after_the_successors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "log"
    with workflow("upstream") as wf:

        @task(id="a", inject_context=True)
        def a(ctx: Any) -> int:
            with log.open("a") as fh:
                fh.write("a\n")
            ctx.get_channel().set("seen", 1)
            assert ctx.checkpoint({"stage": "a"}) is None
            return 1

        a >> marking(log, "b") >> marking(log, "c")
        _, context = wf.execute("a", ret_context=True)

    pkl = context.last_checkpoint_path
    assert pkl is not None and pkl.startswith(f"checkpoints/{context.session_id}/session_")
    assert context.checkpoint_requested is False
    base = pkl.removesuffix(".pkl")
    state = json.loads(Path(base + ".state.json").read_text())
    meta = json.loads(Path(base + ".meta.json").read_text())
    assert state["schema_version"] == "1.0"
    assert state["completed_tasks"] == ["a"]
    assert [p["task_id"] for p in state["pending_tasks"]] == ["b"], "successor queued first"
    assert state["resuming_task_id"] is None
    assert meta["user_metadata"]["stage"] == "a"
    assert meta["user_metadata"]["mode"] == "deferred"

    log.unlink()
    restored, metadata = CheckpointManager.resume_from_checkpoint(pkl)
    assert isinstance(metadata, CheckpointMetadata) and metadata.steps == 1
    assert restored.completed_tasks == ["a"] and restored.channel.get("seen") == 1
    assert restored.queue.to_list() == ["b"]
    assert WorkflowEngine().execute(restored) == "c"
    assert ran(log) == ["b", "c"]


def test_an_immediate_checkpoint_resumes_by_running_its_task_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "log"
    returned: list[Any] = []
    with workflow("immediate") as wf:

        @task(id="a", inject_context=True)
        def a(ctx: Any) -> int:
            with log.open("a") as fh:
                fh.write("a\n")
            if not (tmp_path / "done").exists():
                (tmp_path / "done").touch()
                returned.append(ctx.checkpoint(path=str(tmp_path / "cp.pkl"), deferred=False))
            return 1

        a >> marking(log, "b")
        wf.execute("a")

    pkl, meta = returned[0]
    assert pkl == str(tmp_path / "cp.pkl") and os.path.exists(pkl)
    assert meta.user_metadata["mode"] == "immediate"
    state = json.loads((tmp_path / "cp.state.json").read_text())
    assert state["resuming_task_id"] == "a" and state["completed_tasks"] == []
    log.unlink()
    restored, _ = CheckpointManager.resume_from_checkpoint(str(tmp_path / "cp"))
    WorkflowEngine().execute(restored)
    assert ran(log) == ["a", "b"]


def test_create_checkpoint_outside_a_run(tmp_path: Path) -> None:
    with workflow("plain") as wf:
        marking(tmp_path / "log", "a") >> marking(tmp_path / "log", "b")
    context = ExecutionContext.create(wf.graph, "a")
    pkl, meta = CheckpointManager.create_checkpoint(
        context, path=str(tmp_path / "x.pkl"), metadata={"k": 1}
    )
    assert pkl == str(tmp_path / "x.pkl")
    assert meta.checkpoint_id.startswith(f"{context.session_id}_0_")
    assert CheckpointMetadata.from_dict(meta.to_dict()) == meta
    assert context.get_checkpoint_state()["queue"] == ["a"]
    with pytest.raises(NotImplementedError):
        CheckpointManager.create_checkpoint(context, path="s3://bucket/x")
    run_path = tmp_path / "run.ckpt"
    graflow.run(wf, processes=0, checkpoint=str(run_path))
    with pytest.raises(ForeignCheckpoint, match=r"graflow\.run"):
        CheckpointManager.resume_from_checkpoint(str(run_path))
