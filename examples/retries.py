"""Retries: a flaky task succeeds on its third attempt; a broken one exhausts its budget.

``fetch_rates`` stands for a call to an unreliable service: it fails with
``ConnectionError`` twice, then answers. With ``RetryPolicy(max_retries=3,
initial_interval=0.01)`` the engine tries it again after 0.01 s, then 0.02 s (the interval
doubles each time). A channel counter records every attempt, and ``ctx.retry_count`` tells
the task which retry it is on. ``publish_report`` always fails: once its two retries are
used up the run raises ``RetryLimitExceededError``, whose ``cause`` is the last error.

Run: python examples/retries.py
"""

from __future__ import annotations

from typing import Any

from graflow import RetryPolicy, TaskExecutionContext, task, workflow
from graflow.exceptions import RetryLimitExceededError

POLICY = RetryPolicy(max_retries=3, initial_interval=0.01)


def flaky_run() -> dict[str, Any]:
    """A run whose first task fails twice before it succeeds."""
    with workflow("flaky_fetch") as wf:

        @task(inject_context=True, retry_policy=POLICY)
        def fetch_rates(ctx: TaskExecutionContext) -> dict[str, float]:
            attempt = ctx.get_channel().atomic_add("fetch_rates.attempts", 1)
            if attempt < 3:
                print(f"fetch_rates: attempt {attempt} (retry {ctx.retry_count}) -> timeout")
                raise ConnectionError(f"rates service timed out (attempt {attempt})")
            print(f"fetch_rates: attempt {attempt} (retry {ctx.retry_count}) -> ok")
            return {"USD": 1.08, "GBP": 0.86, "JPY": 161.9}

        @task(inject_context=True)
        def price_basket(ctx: TaskExecutionContext, fetch_rates: dict[str, float]) -> Any:
            basket_eur = 250.0
            attempts = ctx.get_channel().get("fetch_rates.attempts")
            prices = {cur: round(basket_eur * rate, 2) for cur, rate in fetch_rates.items()}
            print(f"price_basket: {len(prices)} currencies priced")
            return {"attempts": attempts, "prices": prices}

        fetch_rates >> price_basket
        result: dict[str, Any] = wf.execute()
    return result


def broken_run() -> dict[str, Any]:
    """A run whose task never succeeds: the error after the last retry."""
    with workflow("broken_publish") as wf:

        @task(inject_context=True, retry_policy=RetryPolicy(max_retries=2, initial_interval=0.01))
        def publish_report(ctx: TaskExecutionContext) -> None:
            attempt = ctx.get_channel().atomic_add("publish_report.attempts", 1)
            print(f"publish_report: attempt {attempt} -> permission denied")
            raise PermissionError("report bucket is read-only")

        try:
            wf.execute()
        except RetryLimitExceededError as exc:
            return {
                "error": type(exc).__name__,
                "task_id": exc.task_id,
                "retry_count": exc.retry_count,
                "max_retries": exc.max_retries,
                "cause": repr(exc.cause),
            }
    raise AssertionError("publish_report was expected to fail")


def main() -> dict[str, Any]:
    """Run both workflows; return what each ended with."""
    print(
        "Planned waits before each retry: "
        + ", ".join(f"{POLICY.get_delay(n):.2f}s" for n in range(POLICY.max_retries))
    )
    return {"flaky": flaky_run(), "broken": broken_run()}


if __name__ == "__main__":
    outcome = main()
    flaky = outcome["flaky"]
    print(f"fetch_rates succeeded after {flaky['attempts']} attempts")
    print("Basket of 250 EUR: " + ", ".join(f"{v} {k}" for k, v in flaky["prices"].items()))
    broken = outcome["broken"]
    print(
        f"{broken['task_id']} gave up: {broken['error']} "
        f"retry_count={broken['retry_count']} max_retries={broken['max_retries']} "
        f"cause={broken['cause']}"
    )
