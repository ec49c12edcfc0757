"""Retry policies and the per-run retry bookkeeping."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from graflow.exceptions import ConfigError, RetryLimitExceededError

__all__ = ["RetryController", "RetryPolicy"]


@dataclass
class RetryPolicy:
    """How often a failed task is tried again, and how long to wait before each try.

    ``max_retries`` is the number of extra attempts. The wait before retry ``n`` (0-based)
    is ``initial_interval * backoff_factor ** n``, capped at ``max_interval``; with
    ``jitter`` it is multiplied by a uniform factor in [0.5, 1.5] before the cap.
    """

    max_retries: int = 0
    initial_interval: float = 1.0
    backoff_factor: float = 2.0
    max_interval: float = 60.0
    jitter: bool = False

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ConfigError("RetryPolicy intervals must be >= 0")
        if self.backoff_factor < 1:
            raise ConfigError(f"RetryPolicy.backoff_factor must be >= 1, got {self.backoff_factor}")

    def get_delay(self, retry_count: int) -> float:
        """Seconds to wait before retry number ``retry_count`` (0-based)."""
        delay = self.initial_interval * self.backoff_factor ** max(retry_count, 0)
        if self.jitter:
            delay *= random.uniform(0.5, 1.5)
        return float(min(delay, self.max_interval))


class RetryController:
    """Retry counts, budgets and last errors per task id, for one run."""

    def __init__(self, default_max_retries: int = 0) -> None:
        self.default_max_retries = default_max_retries
        self.retry_counts: dict[str, int] = {}
        self.node_max_retries: dict[str, int] = {}
        self.node_policies: dict[str, RetryPolicy] = {}
        # The last error per task: the exception itself while the run lives, its text
        # once restored from a checkpoint.
        self.last_errors: dict[str, BaseException | str] = {}

    def set_node_max_retries(self, node_id: str, max_retries: int) -> None:
        """Give ``node_id`` its own retry budget."""
        self.node_max_retries[node_id] = max_retries

    def set_node_policy(self, node_id: str, policy: RetryPolicy) -> None:
        """Give ``node_id`` a retry policy (its budget comes from the policy)."""
        self.node_policies[node_id] = policy
        self.node_max_retries[node_id] = policy.max_retries

    def get_policy_for_node(self, node_id: str) -> RetryPolicy | None:
        """The retry policy of ``node_id``, if it has one."""
        return self.node_policies.get(node_id)

    def get_max_retries_for_node(self, node_id: str) -> int:
        """The retry budget of ``node_id``."""
        return self.node_max_retries.get(node_id, self.default_max_retries)

    def get_retry_count(self, node_id: str) -> int:
        """How many retries ``node_id`` has used."""
        return self.retry_counts.get(node_id, 0)

    def accept_retry(self, node_id: str) -> bool:
        """True if ``node_id`` may be retried once more."""
        return self.get_retry_count(node_id) < self.get_max_retries_for_node(node_id)

    def increment(self, node_id: str, error: BaseException | str | None = None) -> int:
        """Count one more retry of ``node_id``; return the new count."""
        count = self.retry_counts.get(node_id, 0) + 1
        self.retry_counts[node_id] = count
        if error is not None:
            self.last_errors[node_id] = error
        return count

    def check_retry_limit(self, node_id: str) -> None:
        """Raise RetryLimitExceededError once ``node_id`` has used up its retry budget."""
        count = self.get_retry_count(node_id)
        limit = self.get_max_retries_for_node(node_id)
        if count >= limit:
            last = self.last_errors.get(node_id)
            error = RuntimeError(last) if isinstance(last, str) else last
            raise RetryLimitExceededError(node_id, count, limit, error)

    def get_delay(self, node_id: str) -> float:
        """Seconds to wait before the next retry of ``node_id`` (0 without a policy)."""
        policy = self.node_policies.get(node_id)
        if policy is None:
            return 0.0
        return policy.get_delay(max(self.get_retry_count(node_id) - 1, 0))

    def get_last_error(self, node_id: str) -> BaseException | str | None:
        """The last error that made ``node_id`` retry (its text after a checkpoint restore)."""
        return self.last_errors.get(node_id)

    def get_last_error_text(self, node_id: str) -> str | None:
        """The message of the last error that made ``node_id`` retry."""
        error = self.last_errors.get(node_id)
        return None if error is None else str(error)

    def error_texts(self) -> dict[str, str]:
        """Every task's last error message (plain data for checkpoints)."""
        return {node: str(error) for node, error in self.last_errors.items()}

    def __getstate__(self) -> dict[str, Any]:
        # An exception may not pickle (or may drag a traceback's frames along): the
        # pickled controller keeps each last error as its text.
        state = dict(self.__dict__)
        state["last_errors"] = self.error_texts()
        return state

    def state(self) -> dict[str, Any]:
        """Plain-data snapshot (for checkpoints)."""
        return {"retry_counts": dict(self.retry_counts), "last_errors": self.error_texts()}
