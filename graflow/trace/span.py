"""Attempt spans where tasks run: the narrow hook a worker loop calls around each attempt.

    driver: scheduler ── WorkItem(trace="00-<trace id>-<run span id>-01") ──▶ worker
    worker: spans.start(item) ─▶ the task runs (its span is current) ─▶ spans.end(token, c)

The work item's ``trace`` field is the run's W3C trace context (``traceparent``), set only
when the run is traced; a worker with ``AttemptSpans`` opens a child span of the run's root
for each attempt and closes it with the outcome. A worker without (tracing off on that
node) ignores the field. ``run_item`` (graflow.core.backend) is the one caller: every
backend runs its attempts through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from graflow.core.spec import Completion, WorkItem

__all__ = ["AttemptSpans"]


class AttemptSpans(Protocol):
    """Opens and closes the span of each attempt run in this process.

    ``start`` and ``end`` of one attempt are called in the same thread, in that order, even
    when the task fails; attempts of several threads may interleave. Neither raises.
    """

    def start(self, item: WorkItem) -> Any:
        """Open the span of ``item`` under its trace context; return a token for ``end``."""

    def end(self, token: Any, completion: Completion | None) -> None:
        """Close the span ``start`` opened with ``completion``'s outcome (None: interrupted)."""

    def shutdown(self) -> None:
        """Send what is buffered (the process is about to stop)."""
