"""Group policies: what a parallel group does when some of its members fail.

A backup is copied to four mirrors in a parallel group, then ``summarize`` reports where it
landed. Two mirrors are down. The group's policy decides whether that fails the group (the
run raises ``ParallelGroupError``) or lets ``summarize`` run:

* ``"strict"`` (the default): any failed member fails the group;
* ``"best_effort"``: the group never fails;
* ``AtLeastNGroupPolicy(n)``: fails when fewer than ``n`` members succeeded;
* ``CriticalGroupPolicy([...])``: fails only when a listed member failed;
* a ``GroupExecutionPolicy`` subclass of our own: ``TransientOnlyPolicy`` tolerates network
  errors (a later sync will fix them) but fails on anything else.

Run: python examples/group_policies.py
"""

from __future__ import annotations

from typing import Any

from graflow import TaskExecutionContext, parallel, task, workflow
from graflow.core.handler import TaskResult
from graflow.core.handlers.group_policy import (
    AtLeastNGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
)
from graflow.core.task import TaskWrapper
from graflow.exceptions import ParallelGroupError

REGIONS = ["eu", "us", "ap", "sa"]
MIRRORS_DOWN: dict[str, tuple[type[Exception], str]] = {
    "ap": (ConnectionError, "connection refused by mirror-ap"),
    "sa": (TimeoutError, "mirror-sa did not answer within 5 s"),
}


def _original_error(result: TaskResult) -> BaseException | None:
    """The exception a failed member raised (the engine wraps it; the original is its cause)."""
    error = result.error
    return getattr(error, "cause", None) or error


class TransientOnlyPolicy(GroupExecutionPolicy):
    """Tolerates members that failed with a network error; any other failure fails the group."""

    TRANSIENT = (ConnectionError, TimeoutError)

    def on_group_finished(
        self, group_id: str, tasks: list[str], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        succeeded, failed = self._partition_group_results(results)
        permanent = [
            (task_id, message)
            for task_id, message in failed
            if not isinstance(_original_error(results[task_id]), self.TRANSIENT)
        ]
        if permanent:
            raise ParallelGroupError(
                f"Group {group_id}: {len(permanent)} member(s) failed permanently",
                group_id=group_id,
                failed_tasks=failed,
                successful_tasks=succeeded,
            )


def backup_run(policy: Any, down: dict[str, tuple[type[Exception], str]]) -> dict[str, Any]:
    """Copy the backup to every mirror under ``policy``; ``down`` lists the failing mirrors."""
    with workflow("backup") as wf:

        def mirror_task(region: str) -> TaskWrapper:
            @task(id=f"mirror_{region}", inject_context=True)
            def copy_backup(ctx: TaskExecutionContext) -> str:
                if region in down:
                    error_type, message = down[region]
                    raise error_type(message)
                ctx.get_channel().append("replicated", region)
                return region

            return copy_backup

        @task
        def summarize(replicated: list[str]) -> list[str]:
            return sorted(replicated)

        mirrors = parallel(*(mirror_task(region) for region in REGIONS))
        mirrors.set_group_name("mirrors").with_execution(policy=policy)
        mirrors >> summarize
        try:
            copies = wf.execute()
        except ParallelGroupError as exc:
            return {
                "ok": False,
                "message": exc.message,
                "group_id": exc.group_id,
                "successful_tasks": sorted(exc.successful_tasks),
                "failed_tasks": sorted(exc.failed_tasks),
            }
    return {"ok": True, "copies": copies}


def main() -> dict[str, dict[str, Any]]:
    """Run the backup under each policy; return each outcome by policy label."""
    permission_denied: dict[str, tuple[type[Exception], str]] = {
        **MIRRORS_DOWN,
        "sa": (PermissionError, "mirror-sa: write denied"),
    }
    scenarios: list[tuple[str, Any, dict[str, tuple[type[Exception], str]]]] = [
        ("strict", "strict", MIRRORS_DOWN),
        ("best_effort", "best_effort", MIRRORS_DOWN),
        ("at_least_2", AtLeastNGroupPolicy(2), MIRRORS_DOWN),
        ("at_least_3", AtLeastNGroupPolicy(3), MIRRORS_DOWN),
        ("critical_eu", CriticalGroupPolicy(["mirror_eu"]), MIRRORS_DOWN),
        ("critical_ap", CriticalGroupPolicy(["mirror_ap"]), MIRRORS_DOWN),
        ("transient_only", TransientOnlyPolicy(), MIRRORS_DOWN),
        ("transient_only+denied", TransientOnlyPolicy(), permission_denied),
    ]
    outcomes: dict[str, dict[str, Any]] = {}
    for label, policy, down in scenarios:
        outcome = backup_run(policy, down)
        outcomes[label] = outcome
        if outcome["ok"]:
            copies = outcome["copies"]
            print(f"{label:<22} ok      copies on {', '.join(copies)} ({len(copies)}/4)")
        else:
            print(f"{label:<22} FAILED  {outcome['message']}")
    return outcomes


if __name__ == "__main__":
    results = main()
    strict = results["strict"]
    print("ParallelGroupError under strict:")
    print(f"  group_id         = {strict['group_id']!r}")
    print(f"  successful_tasks = {strict['successful_tasks']}")
    print("  failed_tasks     =")
    for task_id, message in strict["failed_tasks"]:
        print(f"    {task_id}: {message}")
