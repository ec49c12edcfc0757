"""The ``@task`` decorator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, overload

from graflow.core.retry import RetryPolicy
from graflow.core.task import TaskWrapper

__all__ = ["task"]


@overload
def task(id_or_func: Callable[..., Any]) -> TaskWrapper: ...


@overload
def task(
    id_or_func: str | None = None,
    *,
    id: str | None = None,
    inject_context: bool = False,
    inject_llm_client: bool = False,
    inject_llm_agent: str | None = None,
    handler: str | None = None,
    resolve_keyword_args: bool = True,
    max_cycles: int | None = None,
    max_retries: int | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout_s: float | None = None,
    io: bool = False,
) -> Callable[[Callable[..., Any]], TaskWrapper]: ...


def task(
    id_or_func: Callable[..., Any] | str | None = None,
    *,
    id: str | None = None,
    inject_context: bool = False,
    inject_llm_client: bool = False,
    inject_llm_agent: str | None = None,
    handler: str | None = None,
    resolve_keyword_args: bool = True,
    max_cycles: int | None = None,
    max_retries: int | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout_s: float | None = None,
    io: bool = False,
) -> TaskWrapper | Callable[[Callable[..., Any]], TaskWrapper]:
    """Turn a function into a task.

    Forms: ``@task``, ``@task()``, ``@task("id")``, ``@task(id="id", inject_context=True,
    max_retries=2, retry_policy=RetryPolicy(...), max_cycles=5, handler="name",
    timeout_s=30)``. The task id defaults to the function's name. With ``inject_context``
    the function's first parameter receives the TaskExecutionContext. An ``async def``
    runs on its worker's event loop; ``io=True`` marks a blocking sync function that mostly
    waits (HTTP, a database), run on its worker's thread pool; any other runs one at a time
    per worker process.
    """

    def decorate(func: Callable[..., Any], task_id: str | None) -> TaskWrapper:
        name = task_id or getattr(func, "__name__", None) or str(uuid.uuid4().int)
        return TaskWrapper(
            name,
            func,
            inject_context=inject_context,
            inject_llm_client=inject_llm_client,
            inject_llm_agent=inject_llm_agent,
            handler_type=handler,
            resolve_keyword_args=resolve_keyword_args,
            max_cycles=max_cycles,
            max_retries=max_retries,
            retry_policy=retry_policy,
            timeout_s=timeout_s,
            io=io,
        )

    if callable(id_or_func):
        return decorate(id_or_func, id)
    if id_or_func is not None and not isinstance(id_or_func, str):
        raise TypeError(f"@task() takes a task id string, not {id_or_func!r}")
    explicit = id if id is not None else id_or_func
    return lambda func: decorate(func, explicit)
