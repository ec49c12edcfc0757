"""Workflows with parallel groups for the CLI tests of group failures and group results.

Loaded as ``tests/integration/group_flows.py:<name>`` by the ``graflow`` command.
"""

from __future__ import annotations

from graflow import parallel, task, workflow


@task
def part(n: int) -> int:
    """Member ``n``: fails for 1 (ValueError) and 3 (ZeroDivisionError)."""
    if n == 1:
        raise ValueError(f"part {n} is bad")
    if n == 3:
        return n // 0
    return n * 10


@task
def add_up(parts: dict[str, int]) -> int:
    """Takes the group ``parts`` by its name: the members' results by member id."""
    return sum(parts.values())


with workflow("broken_fanout") as broken_fanout:
    members = [part(task_id=f"part_{n}", n=n) for n in range(4)]
    parallel(*members).set_group_name("parts") >> add_up


with workflow("fine_fanout") as fine_fanout:
    members = [part(task_id=f"part_{n}", n=n) for n in (0, 2, 4)]
    parallel(*members).set_group_name("parts") >> add_up
