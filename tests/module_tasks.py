"""Tasks defined at module level, as the quick start writes them, for tests that wire the
same functions into several workflows in one process (and workers import them by name)."""

from __future__ import annotations

from graflow import TaskExecutionContext, task


@task
def extract() -> list[int]:
    """Three numbers."""
    return [1, 2, 3]


@task
def double(extract: list[int]) -> list[int]:
    """Each number twice."""
    return [x * 2 for x in extract]


@task
def total(double: list[int]) -> int:
    """Their sum."""
    return sum(double)


@task(inject_context=True)
def agent(ctx: TaskExecutionContext) -> str | None:
    """Asks the tool until it has three observations, then answers and ends the run."""
    seen = ctx.get_channel().get("seen", 0)
    if seen >= 3:
        ctx.get_channel().set("answer", f"done after {seen}")
        ctx.terminate_workflow("answered")
        return f"done after {seen}"
    ctx.next_task(tool, goto=True)
    return None


@task(inject_context=True)
def tool(ctx: TaskExecutionContext) -> int:
    """One observation; hands control back to the agent."""
    channel = ctx.get_channel()
    seen = int(channel.get("seen", 0)) + 1
    channel.set("seen", seen)
    ctx.next_task(agent, goto=True)
    return seen
