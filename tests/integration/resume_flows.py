"""Workflows for the resume tests, importable by worker processes, and a driver to run them.

The driver checkpoints the chain every 20 ms and the other flows after every completion.
Every task appends ``<RESUME_TAG> <task id>`` to the file ``RESUME_LOG`` (one ``write`` of an
``O_APPEND`` file: lines never interleave), so a test counts executions across processes that
get killed. The task named by ``RESUME_GATE_TASK`` (``loop#N``: the N-th cycle of ``loop``)
waits until the file ``RESUME_GATE_FILE`` exists: the test kills the driver while it waits.
A gated task whose driver died exits its worker instead of waiting forever.

    python -m tests.integration.resume_flows FLOW OUT.json [CHECKPOINT] [--redis URL QUEUE]
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from typing import Any

import graflow
from graflow import parallel, task, workflow
from graflow.core.workflow import WorkflowContext

CHAIN_LENGTH = 2000
MEMBERS = 12
LOOP_CYCLES = 30
_GATE_DEADLINE_S = 120.0


def _log(task_id: str) -> None:
    line = f"{os.environ.get('RESUME_TAG', '-')} {task_id}\n".encode()
    fd = os.open(os.environ["RESUME_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _gate(key: str) -> None:
    if key != os.environ.get("RESUME_GATE_TASK"):
        return
    _log(f"gate:{key}")
    gate = os.environ["RESUME_GATE_FILE"]
    parent = os.getppid()
    deadline = time.monotonic() + _GATE_DEADLINE_S
    while not os.path.exists(gate):
        if os.getppid() != parent or time.monotonic() > deadline:
            os._exit(0)  # the driver is gone: nobody wants this result
        time.sleep(0.01)


@task(inject_context=True)
def step(ctx: Any) -> int:
    """Chain link ``t<i>``: the previous link's value plus ``i``."""
    index = int(ctx.task_id[1:])
    _log(ctx.task_id)
    _gate(ctx.task_id)
    previous = ctx.get_result(f"t{index - 1}") if index else 0
    return int(previous) + index


def chain() -> WorkflowContext:
    """``t0 >> t1 >> ... >> t1999``; the value is ``sum(range(2000))``."""
    with workflow("resume-chain") as wf:
        links = [step(task_id=f"t{i}") for i in range(CHAIN_LENGTH)]
        for left, right in itertools.pairwise(links):
            left >> right
    return wf


@task(inject_context=True)
def member(ctx: Any) -> int:
    """Group member ``b<i>``."""
    _log(ctx.task_id)
    _gate(ctx.task_id)
    return int(ctx.task_id[1:]) * 3


@task(inject_context=True)
def member_post(ctx: Any) -> int:
    """``b<i>_post``, run in the branch of ``b<i>`` after it."""
    _log(ctx.task_id)
    _gate(ctx.task_id)
    name = ctx.task_id.removesuffix("_post")
    return int(ctx.get_result(name)) + 1


@task(inject_context=True)
def begin(ctx: Any) -> int:
    """The first task."""
    _log(ctx.task_id)
    return 1


@task(inject_context=True)
def loop(ctx: Any, data: Any = None) -> int:
    """Iterates LOOP_CYCLES times; its value depends on the cycle count it is given."""
    _log(ctx.task_id)
    _gate(f"loop#{ctx.cycle_count}")
    total = (data or 0) + ctx.cycle_count
    if ctx.cycle_count < LOOP_CYCLES:
        ctx.next_iteration(total)
    else:
        ctx.get_channel().set("loop_total", total)
    return total


def mixed() -> WorkflowContext:
    """``begin >> (b0 >> b0_post | ... ) >> loop``, loop iterating with next_iteration."""
    with workflow("resume-mixed") as wf:
        branches = [
            member(task_id=f"b{i}") >> member_post(task_id=f"b{i}_post") for i in range(MEMBERS)
        ]
        loop.max_cycles = LOOP_CYCLES
        begin >> parallel(*branches).set_group_name("fan") >> loop
    return wf


def small() -> WorkflowContext:
    """Forty links of the chain, for the command line tests."""
    with workflow("resume-small") as wf:
        links = [step(task_id=f"t{i}") for i in range(40)]
        for left, right in itertools.pairwise(links):
            left >> right
    return wf


FLOWS = {"chain": (chain, "t0"), "mixed": (mixed, "begin"), "small": (small, "t0")}


def main(argv: list[str]) -> None:
    """Run a flow on 2 worker processes (or Redis), checkpointed; write its result as JSON."""
    name, out = argv[0], argv[1]
    checkpoint = argv[2] if len(argv) > 2 and argv[2] != "-" else None
    build, start = FLOWS[name]
    options: dict[str, Any] = {"processes": 2}
    if "--redis" in argv:
        at = argv.index("--redis")
        options = {"redis": argv[at + 1], "queue": argv[at + 2], "timeout_s": 120.0}
    if checkpoint is not None:
        # The chain is long: a checkpoint every 20 ms; the others: after every completion.
        every_s = 0.02 if name == "chain" else 0.0
        options.update(checkpoint=checkpoint, checkpoint_every_s=every_s)
    result = graflow.run(build(), start=start, **options)
    stable = {k: v for k, v in result.results.items() if "_cycle_" not in k}
    report = {
        "value": result.value,
        "results": stable,
        "loop_total": result.channel.get("loop_total"),
        "tasks_run": result.stats.tasks_run,
        "already_finished": result.already_finished,
    }
    with open(out, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
