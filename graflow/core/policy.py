"""Parallel-group execution policies: when does a group with failed members fail?"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from graflow.core.handler import TaskResult
from graflow.exceptions import ParallelGroupError, UnknownPolicyError

__all__ = [
    "POLICY_REGISTRY",
    "AtLeastNGroupPolicy",
    "BestEffortGroupPolicy",
    "CriticalGroupPolicy",
    "GroupExecutionPolicy",
    "StrictGroupPolicy",
    "canonicalize_group_policy",
    "resolve_group_policy",
]

logger = logging.getLogger(__name__)


class GroupExecutionPolicy:
    """Decides a parallel group's outcome from its members' results.

    ``on_group_finished`` is called once, after every member's branch ended, with the
    member executables (``task.task_id`` names each) and a ``TaskResult`` per member id;
    raising ``ParallelGroupError`` fails the group node, returning lets its successors run.
    """

    def get_name(self) -> str:
        """The policy's name (class name unless overridden)."""
        return type(self).__name__

    def on_group_finished(
        self,
        group_id: str,
        tasks: Sequence[Any],
        results: dict[str, TaskResult],
        context: Any,
    ) -> None:
        """Raise ParallelGroupError to fail the group."""
        raise NotImplementedError

    def _validate_group_results(
        self, group_id: str, tasks: Sequence[Any], results: dict[str, TaskResult]
    ) -> None:
        if set(member_ids(tasks)) != set(results):
            raise ParallelGroupError(
                f"Parallel group {group_id} result mismatch: expected {sorted(member_ids(tasks))}, "
                f"got {sorted(results)}",
                group_id=group_id,
                failed_tasks=[],
                successful_tasks=[t for t, r in results.items() if r.success],
            )

    def _partition_group_results(
        self, results: dict[str, TaskResult]
    ) -> tuple[list[str], list[tuple[str, str | None]]]:
        ok = [tid for tid, r in results.items() if r.success]
        failed = [(tid, r.error_message) for tid, r in results.items() if not r.success]
        return ok, failed


class StrictGroupPolicy(GroupExecutionPolicy):
    """Any failed member fails the group (the default)."""

    def get_name(self) -> str:
        return "strict"

    def on_group_finished(
        self, group_id: str, tasks: Sequence[Any], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        ok, failed = self._partition_group_results(results)
        if failed:
            raise ParallelGroupError(
                f"Parallel group {group_id} failed: {len(failed)} task(s) failed",
                group_id=group_id,
                failed_tasks=failed,
                successful_tasks=ok,
            )


class BestEffortGroupPolicy(GroupExecutionPolicy):
    """The group never fails; failures are logged and successors run."""

    def get_name(self) -> str:
        return "best_effort"

    def on_group_finished(
        self, group_id: str, tasks: Sequence[Any], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        _, failed = self._partition_group_results(results)
        if failed:
            logger.warning(
                "parallel group %s: %d member(s) failed, continuing (best_effort): %s",
                group_id,
                len(failed),
                [tid for tid, _ in failed],
            )


class CriticalGroupPolicy(GroupExecutionPolicy):
    """The group fails only if one of the listed critical members failed."""

    def __init__(self, critical_task_ids: Iterable[str]) -> None:
        self.critical_task_ids = list(critical_task_ids)
        if not self.critical_task_ids:
            raise ValueError("CriticalGroupPolicy needs at least one critical task id")

    def get_name(self) -> str:
        return "critical"

    def on_group_finished(
        self, group_id: str, tasks: Sequence[Any], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        ids = set(member_ids(tasks))
        unknown = [t for t in self.critical_task_ids if t not in ids]
        if unknown:
            raise ValueError(f"Critical task ids not in group {group_id}: {unknown}")
        ok, failed = self._partition_group_results(results)
        critical_failed = [tid for tid, _ in failed if tid in self.critical_task_ids]
        if critical_failed:
            raise ParallelGroupError(
                f"Critical tasks failed: {critical_failed}",
                group_id=group_id,
                failed_tasks=failed,
                successful_tasks=ok,
            )


class AtLeastNGroupPolicy(GroupExecutionPolicy):
    """The group fails if fewer than ``min_success`` members succeeded."""

    def __init__(self, min_success: int) -> None:
        if min_success < 0:
            raise ValueError(f"min_success must be >= 0, got {min_success}")
        self.min_success = min_success

    def get_name(self) -> str:
        return f"at_least_{self.min_success}"

    def on_group_finished(
        self, group_id: str, tasks: Sequence[Any], results: dict[str, TaskResult], context: Any
    ) -> None:
        self._validate_group_results(group_id, tasks, results)
        if self.min_success > len(tasks):
            raise ValueError(
                f"min_success={self.min_success} exceeds the {len(tasks)} members of {group_id}"
            )
        ok, failed = self._partition_group_results(results)
        if len(ok) < self.min_success:
            raise ParallelGroupError(
                f"Only {len(ok)}/{self.min_success} tasks succeeded in group {group_id}",
                group_id=group_id,
                failed_tasks=failed,
                successful_tasks=ok,
            )


def member_ids(tasks: Sequence[Any]) -> list[str]:
    """The ids of a group's members, given as executables (or, from older callers, ids)."""
    return [t if isinstance(t, str) else t.task_id for t in tasks]


POLICY_REGISTRY: dict[str, type[GroupExecutionPolicy]] = {
    "strict": StrictGroupPolicy,
    "best_effort": BestEffortGroupPolicy,
    "critical": CriticalGroupPolicy,
    "at_least_n": AtLeastNGroupPolicy,
}


def canonicalize_group_policy(policy: Any) -> Any:
    """The stored form of a policy: a name, or a dict with its type and arguments."""
    if isinstance(policy, str):
        name = policy.lower()
        if name not in ("strict", "best_effort"):
            raise UnknownPolicyError(
                f"Unknown group policy {policy!r}; use 'strict', 'best_effort' or a "
                "GroupExecutionPolicy instance (CriticalGroupPolicy, AtLeastNGroupPolicy)"
            )
        return name
    if type(policy) is StrictGroupPolicy:
        return "strict"
    if type(policy) is BestEffortGroupPolicy:
        return "best_effort"
    if type(policy) is CriticalGroupPolicy:
        return {"type": "critical", "critical_task_ids": list(policy.critical_task_ids)}
    if type(policy) is AtLeastNGroupPolicy:
        return {"type": "at_least_n", "min_success": policy.min_success}
    if isinstance(policy, GroupExecutionPolicy):
        return {"type": "__custom__", "policy": policy}
    if isinstance(policy, dict) and "type" in policy:
        return policy
    raise UnknownPolicyError(f"Invalid group policy: {policy!r}")


def resolve_group_policy(policy: Any) -> GroupExecutionPolicy:
    """A policy object from any accepted form (name, canonical dict or instance)."""
    if policy is None:
        return StrictGroupPolicy()
    if isinstance(policy, GroupExecutionPolicy):
        return policy
    if isinstance(policy, str):
        name = canonicalize_group_policy(policy)
        return StrictGroupPolicy() if name == "strict" else BestEffortGroupPolicy()
    if isinstance(policy, dict):
        kind = policy.get("type")
        if kind == "critical":
            return CriticalGroupPolicy(policy["critical_task_ids"])
        if kind == "at_least_n":
            return AtLeastNGroupPolicy(int(policy["min_success"]))
        if kind == "__custom__" and isinstance(policy.get("policy"), GroupExecutionPolicy):
            return policy["policy"]  # type: ignore[no-any-return]
    raise UnknownPolicyError(f"Invalid group policy: {policy!r}")
