"""``@task(timeout_s=...)`` is enforced in-process too (#18): in the driver's thread by an
alarm that stops the task, in a group's branch thread by giving up on it at the deadline."""

from __future__ import annotations

import threading
import time

import pytest

import graflow
from graflow import RetryPolicy, task, workflow
from graflow.exceptions import GraflowRuntimeError, TaskTimeoutError

pytestmark = pytest.mark.timeout(60)  # a timeout that is not enforced hangs for 600 s


def _spin(release: threading.Event) -> None:
    deadline = time.monotonic() + 600
    while not release.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_task_past_its_timeout_fails_in_the_driver_thread() -> None:
    release = threading.Event()
    stopped = []

    with workflow("slow") as wf:

        @task(timeout_s=0.3)
        def slow() -> str:
            try:
                _spin(release)
            finally:
                stopped.append(True)  # the alarm stopped the body itself
            return "finished"

    with pytest.raises(GraflowRuntimeError) as caught:
        graflow.run(wf, processes=0)
    error = caught.value
    assert isinstance(error, TaskTimeoutError) or isinstance(error.cause, TaskTimeoutError)
    assert "timed out after 0.3 s" in str(error)
    assert stopped == [True]
    release.set()


def test_a_timed_out_attempt_is_retried_by_its_policy() -> None:
    attempts: list[int] = []

    with workflow("retried") as wf:

        @task(timeout_s=0.3, retry_policy=RetryPolicy(max_retries=2, initial_interval=0.01))
        def sometimes_slow() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                _spin(threading.Event())
            return "second time lucky"

    result = graflow.run(wf, processes=0)
    assert result.value == "second time lucky"
    assert len(attempts) == 2


def test_a_group_member_past_its_timeout_fails_the_group() -> None:
    release = threading.Event()

    with workflow("fan") as wf:

        @task(timeout_s=0.3)
        def stuck() -> int:
            _spin(release)
            return 1

        @task
        def quick() -> int:
            return 2

        stuck | quick

    try:
        with pytest.raises(GraflowRuntimeError) as caught:
            graflow.run(wf, processes=0)
        members = getattr(caught.value, "member_errors", {})
        assert "stuck" in members
        assert "timed out after 0.3 s" in str(members["stuck"])
    finally:
        release.set()  # the abandoned branch thread ends


def test_a_task_within_its_timeout_is_untouched() -> None:
    with workflow("fast") as wf:

        @task(timeout_s=30)
        def fast() -> int:
            return 7

    assert graflow.run(wf, processes=0).value == 7
    assert wf.execute() == 7
