"""An agent/tool loop with goto: the agent and its tool hand control back and forth.

``agent`` looks at what it knows and either asks for one tool call (``ctx.next_task(tool,
goto=True)``) or answers and ends the run with ``terminate_workflow``. ``tool`` runs the
requested call, records the observation and jumps back to the agent. The two tasks share
state through the run's channel. The agent's policy is a small deterministic rule set
standing in for a language model, so the run is reproducible.

A goto loop is bounded only by ``max_steps``; pass one as a safety net.

Run: python examples/agent_loop.py
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graflow import TaskExecutionContext, task, workflow

# What the tools know: catalog prices in their own currencies, and exchange rates to EUR.
CATALOG = {
    "flight": (420.0, "USD"),
    "hotel": (285.0, "GBP"),
    "rail pass": (60.0, "EUR"),
}
RATES_TO_EUR = {"USD": 0.92, "GBP": 1.17, "EUR": 1.0}

QUESTION = "What does the trip (flight, hotel, rail pass) cost in EUR?"
ITEMS = ["flight", "hotel", "rail pass"]


def lookup_price(item: str) -> dict[str, Any]:
    """Tool: the catalog price of ``item`` in its own currency."""
    amount, currency = CATALOG[item]
    return {"item": item, "amount": amount, "currency": currency}


def convert(item: str, amount: float, currency: str) -> dict[str, Any]:
    """Tool: ``amount`` converted from ``currency`` to EUR."""
    return {"item": item, "eur": round(amount * RATES_TO_EUR[currency], 2)}


TOOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "lookup_price": lookup_price,
    "convert": convert,
}


def decide(memory: dict[str, Any]) -> dict[str, Any]:
    """The agent's policy: the next tool call, or the final answer."""
    prices: dict[str, Any] = memory["prices"]
    in_eur: dict[str, float] = memory["in_eur"]
    for item in ITEMS:
        if item not in prices:
            return {"tool": "lookup_price", "args": {"item": item}}
    for item in ITEMS:
        if item not in in_eur:
            price = prices[item]
            if price["currency"] == "EUR":
                in_eur[item] = price["amount"]
                continue
            return {
                "tool": "convert",
                "args": {"item": item, "amount": price["amount"], "currency": price["currency"]},
            }
    return {"answer": round(sum(in_eur.values()), 2)}


def main() -> dict[str, Any]:
    """Run the agent until it answers; return the answer and how it got there."""
    with workflow("trip_cost_agent") as wf:

        @task(inject_context=True)
        def agent(ctx: TaskExecutionContext) -> dict[str, Any] | None:
            channel = ctx.get_channel()
            memory = channel.get("memory")
            if memory is None:
                print(f"user:     {QUESTION}")
                memory = {"prices": {}, "in_eur": {}, "tool_calls": 0}
            step = decide(memory)
            channel.set("memory", memory)
            if "answer" in step:
                print(f"agent[{ctx.cycle_count}]: answer {step['answer']:.2f} EUR")
                ctx.terminate_workflow("answered")
                return {
                    "answer_eur": step["answer"],
                    "tool_calls": memory["tool_calls"],
                    "agent_turns": ctx.cycle_count,
                    "breakdown": dict(memory["in_eur"]),
                }
            args = ", ".join(f"{k}={v!r}" for k, v in step["args"].items())
            print(f"agent[{ctx.cycle_count}]: call {step['tool']}({args})")
            channel.set("tool_call", step)
            ctx.next_task(tool, goto=True)
            return None

        @task(inject_context=True)
        def tool(ctx: TaskExecutionContext, tool_call: dict[str, Any]) -> dict[str, Any]:
            channel = ctx.get_channel()
            observation = TOOLS[tool_call["tool"]](**tool_call["args"])
            memory = channel.get("memory")
            memory["tool_calls"] += 1
            if tool_call["tool"] == "lookup_price":
                memory["prices"][observation["item"]] = observation
            else:
                memory["in_eur"][observation["item"]] = observation["eur"]
            channel.set("memory", memory)
            print(f"tool:     {observation}")
            ctx.next_task(agent, goto=True)
            return observation

        answer: dict[str, Any] = wf.execute("agent", max_steps=50)
    return answer


if __name__ == "__main__":
    result = main()
    print(
        f"Answer: {result['answer_eur']:.2f} EUR after {result['tool_calls']} tool calls "
        f"and {result['agent_turns']} agent turns"
    )
    for item, eur in result["breakdown"].items():
        print(f"  {item:<10} {eur:>8.2f} EUR")
