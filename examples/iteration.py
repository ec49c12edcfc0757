"""Iterate until convergence: PageRank by power iteration with ``next_iteration``.

``pagerank`` computes one power-iteration step and, while the ranks still move by more than
the tolerance, schedules its own next run with ``ctx.next_iteration(ranks)``: the new run
receives the ranks as its ``data`` argument. ``max_cycles`` caps the number of runs; the
task checks ``ctx.can_iterate()`` so that hitting the cap ends the loop cleanly instead of
raising ``CycleLimitExceededError``. Either way it hands over to ``publish`` with
``ctx.next_task(publish)``, leaving the final ranks in the channel for it.

Run: python examples/iteration.py
"""

from __future__ import annotations

from typing import Any

from graflow import TaskExecutionContext, task, workflow

# A small web: page -> pages it links to.
LINKS = {
    "home": ["docs", "blog", "pricing"],
    "docs": ["home", "api"],
    "blog": ["home", "docs"],
    "pricing": ["home", "signup"],
    "api": ["docs"],
    "signup": ["home"],
}
DAMPING = 0.85


def power_step(ranks: dict[str, float]) -> dict[str, float]:
    """One PageRank power-iteration step over ``LINKS``."""
    base = (1 - DAMPING) / len(LINKS)
    new = dict.fromkeys(LINKS, base)
    for page, targets in LINKS.items():
        share = DAMPING * ranks[page] / len(targets)
        for target in targets:
            new[target] += share
    return new


def main(tolerance: float = 1e-6, max_cycles: int = 100) -> dict[str, Any]:
    """Rank the pages; return the ranks, the number of runs and whether they converged."""
    with workflow("pagerank") as wf:

        @task(inject_context=True, max_cycles=max_cycles)
        def pagerank(ctx: TaskExecutionContext, data: dict[str, float] | None = None) -> float:
            ranks = data if data is not None else dict.fromkeys(LINKS, 1 / len(LINKS))
            new = power_step(ranks)
            delta = sum(abs(new[page] - ranks[page]) for page in LINKS)
            if ctx.cycle_count == 1 or ctx.cycle_count % 5 == 0 or delta < tolerance:
                print(f"run {ctx.cycle_count:>3}: delta {delta:.2e}")
            if delta >= tolerance and ctx.can_iterate():
                ctx.next_iteration(new)
                return delta
            channel = ctx.get_channel()
            channel.set("ranks", new)
            channel.set("runs", ctx.cycle_count)
            channel.set("converged", delta < tolerance)
            ctx.next_task(publish)
            return delta

        @task
        def publish(ranks: dict[str, float], runs: int, converged: bool) -> dict[str, Any]:
            ordered = dict(sorted(ranks.items(), key=lambda kv: kv[1], reverse=True))
            state = "converged" if converged else "stopped at max_cycles"
            print(f"publish: {state} after {runs} runs")
            return {
                "ranks": {page: round(rank, 4) for page, rank in ordered.items()},
                "runs": runs,
                "converged": converged,
            }

        result: dict[str, Any] = wf.execute("pagerank")
    return result


if __name__ == "__main__":
    outcome = main()
    print("PageRank:")
    for page, rank in outcome["ranks"].items():
        print(f"  {page:<8} {rank:.4f}")
    print(f"Sum of ranks: {sum(outcome['ranks'].values()):.4f}")
