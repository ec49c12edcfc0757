"""Task functions that take their predecessor's result by parameter name, for chain tests.

The engine passes a task's result to a successor whose parameter carries the task's id, so a
chain ``p0 >> p1 >> ...`` needs a function per task with its own parameter name: these are
written from a fixed template and call one shared body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def taking_previous(
    previous: str | None,
    body: Callable[..., Any],
    *,
    context: bool = False,
    extra: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """A function with parameters ``ctx`` (with ``context``), ``<previous>=None`` (when given)
    and each of ``extra`` with its default; it returns ``body(previous value, ctx=...,
    **extra values)``."""
    extra = extra or {}
    params = (["ctx"] if context else []) + ([f"{previous}=None"] if previous else [])
    params += [f"{name}={default!r}" for name, default in extra.items()]
    call = [previous or "None", *(["ctx=ctx"] if context else [])]
    call += [f"{name}={name}" for name in extra]
    source = f"def step({', '.join(params)}):\n    return body({', '.join(call)})\n"
    # A module name, as a function written in a file has (without, cloudpickle searches
    # every module for it).
    module = getattr(getattr(body, "func", body), "__module__", __name__)  # partial or function
    namespace: dict[str, Any] = {"body": body, "__name__": module}
    exec(source, namespace)  # a fixed template, no outside input
    step: Callable[..., Any] = namespace["step"]
    return step
