"""Reference §14: the exception tree, its string forms, and pickling."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from graflow import exceptions
from graflow.exceptions import (
    ConfigError,
    CycleLimitExceededError,
    DuplicateTaskError,
    GraflowError,
    GraflowRuntimeError,
    GraflowWorkflowCanceledError,
    GraphCompilationError,
    ParallelGroupError,
    RetryLimitExceededError,
    TaskError,
    UnknownHandlerError,
    UnknownTaskError,
    as_runtime_error,
)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (GraflowError, Exception),
        (GraflowRuntimeError, GraflowError),
        (CycleLimitExceededError, GraflowRuntimeError),
        (RetryLimitExceededError, GraflowRuntimeError),
        (TaskError, GraflowRuntimeError),
        (ParallelGroupError, GraflowRuntimeError),
        (GraflowWorkflowCanceledError, GraflowRuntimeError),
        (GraphCompilationError, GraflowError),
        (DuplicateTaskError, GraphCompilationError),
        (ConfigError, GraflowError),
    ],
)
def test_tree(cls: type[BaseException], parent: type[BaseException]) -> None:
    assert issubclass(cls, parent)


def test_branches_do_not_cross() -> None:
    assert not issubclass(GraphCompilationError, GraflowRuntimeError)
    assert not issubclass(ConfigError, GraflowRuntimeError)
    assert not issubclass(GraflowRuntimeError, GraphCompilationError)


def test_graflow_error_message_and_cause() -> None:
    cause = ValueError("bad")
    err = GraflowError("it failed", cause)
    assert err.cause is cause
    assert str(err) == "it failed (caused by bad)"
    assert str(GraflowError("plain")) == "plain"
    assert GraflowError("plain").cause is None
    assert str(GraflowRuntimeError("x", cause=KeyError("k"))) == "x (caused by 'k')"


def test_cycle_limit_form() -> None:
    err = CycleLimitExceededError("x", 3, 3)
    assert str(err) == "CycleLimitExceededError(task_id=x, cycle_count=3, max_cycles=3)"
    assert (err.task_id, err.cycle_count, err.max_cycles) == ("x", 3, 3)


def test_retry_limit_form() -> None:
    last = RuntimeError("flaky")
    err = RetryLimitExceededError("x", 2, 1, last)
    assert str(err) == "RetryLimitExceededError(task_id=x, retry_count=2, max_retries=1)"
    assert err.cause is last
    assert err.last_error is last
    assert (err.task_id, err.retry_count, err.max_retries) == ("x", 2, 1)
    assert RetryLimitExceededError("y", 1, 0).last_error is None


def test_task_error() -> None:
    cause = OSError("disk")
    err = TaskError("t", "could not write", cause)
    assert err.task_id == "t"
    assert err.cause is cause
    assert "could not write" in str(err)
    assert "'t'" in str(err)


def test_parallel_group_error_attributes() -> None:
    err = ParallelGroupError("Parallel group g failed: 1 task(s) failed", "g", [("a", "x")], ["b"])
    assert str(err) == "Parallel group g failed: 1 task(s) failed"
    assert err.group_id == "g"
    assert err.failed_tasks == [("a", "x")]
    assert err.successful_tasks == ["b"]


def test_cancel_forms() -> None:
    with_task = GraflowWorkflowCanceledError("nope", task_id="t1")
    assert str(with_task) == "Workflow canceled by task 't1': nope"
    assert with_task.task_id == "t1"
    without = GraflowWorkflowCanceledError("nope")
    assert str(without) == "Workflow canceled: nope"
    assert without.task_id is None


def test_duplicate_task_form() -> None:
    assert str(DuplicateTaskError("x")) == "Duplicate task ID: x"
    assert DuplicateTaskError("x").task_id == "x"


def test_as_runtime_error() -> None:
    runtime = CycleLimitExceededError("x", 1, 1)
    assert as_runtime_error(runtime) is runtime
    original = ValueError("bad")
    wrapped = as_runtime_error(original)
    assert type(wrapped) is GraflowRuntimeError
    assert wrapped.cause is original
    assert str(wrapped) == "An error occurred: bad (caused by bad)"
    config = ConfigError("cfg")
    assert as_runtime_error(config).cause is config


def test_unknown_task_and_handler_errors() -> None:
    task_err = UnknownTaskError("ghost", ["a", "b"])
    assert isinstance(task_err, KeyError)
    assert isinstance(task_err, GraphCompilationError)
    assert isinstance(task_err, GraflowRuntimeError)
    assert str(task_err) == "Node 'ghost' not found in graph. Available nodes: a, b"
    handler_err = UnknownHandlerError("x", ["direct"])
    assert isinstance(handler_err, ValueError)
    assert isinstance(handler_err, ConfigError)
    assert str(handler_err) == "Unknown handler type: x. Supported: direct"


def _samples() -> list[BaseException]:
    return [
        GraflowError("m", ValueError("v")),
        GraflowRuntimeError("r"),
        GraflowRuntimeError("An error occurred: bad", cause=ValueError("bad")),
        CycleLimitExceededError("t", 3, 3),
        RetryLimitExceededError("x", 2, 1, RuntimeError("last")),
        TaskError("t", "msg", ValueError("c")),
        ParallelGroupError("pg", "g", [("a", "e")], ["b"]),
        GraflowWorkflowCanceledError("nope", "t1"),
        GraflowWorkflowCanceledError("nope"),
        GraphCompilationError("gc"),
        DuplicateTaskError("x"),
        ConfigError("cfg"),
        UnknownTaskError("n", ["a"]),
        UnknownHandlerError("x", ["direct"]),
    ]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("err", _samples(), ids=lambda e: type(e).__name__)
def test_pickling_round_trip(err: BaseException, dumps: object) -> None:
    clone = pickle.loads(dumps(err))  # type: ignore[operator]
    assert type(clone) is type(err)
    assert str(clone) == str(err)
    assert clone.args == err.args
    for name, value in vars(err).items():
        restored = getattr(clone, name)
        if isinstance(value, BaseException):
            assert type(restored) is type(value)
            assert str(restored) == str(value)
        else:
            assert restored == value


def test_every_public_exception_is_documented() -> None:
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        assert obj.__doc__, name
