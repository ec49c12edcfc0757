"""Parallel-group policies, at their upstream import path."""

from graflow.core.policy import (
    POLICY_REGISTRY,
    AtLeastNGroupPolicy,
    BestEffortGroupPolicy,
    CriticalGroupPolicy,
    GroupExecutionPolicy,
    StrictGroupPolicy,
    canonicalize_group_policy,
    resolve_group_policy,
)

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
