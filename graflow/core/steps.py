"""The step limit of a run: ``max_steps`` of ``graflow.run``, the CLI and ``Supervisor.run``.

``wf.execute(max_steps=N)`` keeps upstream's rule: the run stops quietly after N steps
(``context.max_steps_reached`` says so). The public entry points fail instead: a run that
reaches its limit with tasks still queued raises ``MaxStepsExceeded`` (#14), and their
default limit scales with the graph so that a wide group never reaches it, while a loop
without an exit does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graflow.exceptions import ConfigError

if TYPE_CHECKING:
    from graflow.core.context import ExecutionContext

__all__ = ["DEFAULT_MAX_STEPS", "check_max_steps", "limit_steps"]

DEFAULT_MAX_STEPS = 10_000
"""Steps a run may take beyond one per task of its graph when ``max_steps`` is not given."""


def check_max_steps(max_steps: int | None) -> None:
    """ConfigError unless ``max_steps`` is None (the default limit) or at least 1."""
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")


def limit_steps(context: ExecutionContext, max_steps: int | None) -> None:
    """Apply the public entry points' step limit to ``context``: reaching it with work left
    fails the run.

    None allows one step per task of the graph plus DEFAULT_MAX_STEPS, growing by one with
    each task added at run time.
    """
    check_max_steps(max_steps)
    context.max_steps_fails = True
    if max_steps is None:
        context.max_steps = DEFAULT_MAX_STEPS + len(context.graph.nodes)
        context.max_steps_grows = True
    else:
        context.max_steps = max_steps
