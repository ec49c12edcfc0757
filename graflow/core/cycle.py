"""Cycle bookkeeping: how many times each (base) task has started in a run."""

from __future__ import annotations

import re

from graflow.exceptions import CycleLimitExceededError

__all__ = ["CycleController", "base_task_id"]

_ITERATION_SUFFIX = re.compile(r"(?:_cycle_\d+_[0-9a-f]{8})+$")


def base_task_id(task_id: str) -> str:
    """``task_id`` without the ``_cycle_<n>_<hex8>`` suffixes of iteration nodes."""
    if "_cycle_" not in task_id:
        return task_id
    return _ITERATION_SUFFIX.sub("", task_id)


class CycleController:
    """Counts starts per base task id and holds each task's cycle budget."""

    def __init__(self, default_max_cycles: int = 100) -> None:
        self.default_max_cycles = default_max_cycles
        self.cycle_counts: dict[str, int] = {}
        self.node_max_cycles: dict[str, int] = {}

    def set_node_max_cycles(self, node_id: str, max_cycles: int) -> None:
        """Give ``node_id`` its own cycle budget."""
        self.node_max_cycles[base_task_id(node_id)] = max_cycles

    def get_max_cycles_for_node(self, node_id: str) -> int:
        """The cycle budget of ``node_id``'s base task."""
        return self.node_max_cycles.get(base_task_id(node_id), self.default_max_cycles)

    def get_cycle_count(self, node_id: str) -> int:
        """How many times ``node_id``'s base task has started."""
        return self.cycle_counts.get(base_task_id(node_id), 0)

    def increment(self, node_id: str) -> int:
        """Count one more start of ``node_id``'s base task; return the new count."""
        base = base_task_id(node_id)
        count = self.cycle_counts.get(base, 0) + 1
        self.cycle_counts[base] = count
        return count

    def accept_next_cycle(self, node_id: str) -> bool:
        """True while another iteration of ``node_id`` fits in its budget."""
        return self.get_cycle_count(node_id) < self.get_max_cycles_for_node(node_id)

    def check_cycle_limit(self, node_id: str) -> None:
        """Raise CycleLimitExceededError once ``node_id`` has used up its budget."""
        count = self.get_cycle_count(node_id)
        limit = self.get_max_cycles_for_node(node_id)
        if count >= limit:
            raise CycleLimitExceededError(base_task_id(node_id), count, limit)
