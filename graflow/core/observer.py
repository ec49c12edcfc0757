"""The run-observer seam: what the scheduler tells about a run while it goes.

    scheduler ──run_started / tasks_queued / tasks_done / task_event / run_finished──▶ observer

The scheduler sees every state change of a run, so it reports them here; whoever records
or shows runs (``graflow.history``) implements the protocol, and the engine never imports
it. ``tasks_queued`` and ``tasks_done`` are called on the scheduler's thread with what one
scheduling step queued or received (a whole parallel group, a backend's batch of
completions): an implementation must only keep what it was given (append it to a list) and
do any real work elsewhere, or it slows every run down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from graflow.core.graph import TaskGraph
    from graflow.core.spec import Completion, WorkItem

__all__ = ["RunObserver"]


class RunObserver(Protocol):
    """Told of one run's progress by its scheduler (driver thread only; must not block)."""

    def run_started(self, run_id: str, graph: TaskGraph) -> None:
        """The run begins (before its first task is queued)."""

    def tasks_queued(self, items: Sequence[WorkItem]) -> None:
        """Attempts were handed to the backend (each ``item.seq`` names one)."""

    def tasks_done(self, completions: Sequence[Completion]) -> None:
        """Attempts came back (``seq`` tells which): succeeded, failed, or void (did not
        run; ``void``), possibly a late duplicate of one that came back before. Keep no
        reference to them past the next write: they hold the tasks' results."""

    def task_event(self, task_id: str, state: str, attempt: int, detail: str = "") -> None:
        """A change the scheduler made itself: ``retried`` (with the delay), or a parallel
        group ``started`` / ``succeeded`` / ``failed`` (groups run in the driver)."""

    def run_finished(self, error: BaseException | None) -> None:
        """The run ended: succeeded when ``error`` is None, else with that error."""
