"""A run's graph in the compact form it travels in to worker processes.

Pickling a TaskGraph object by object costs a Python call per task on both sides, and a
workflow of 10,000 tasks is shipped once per run to every worker: that alone took longer
than running the tasks. Most tasks of a large graph are plain ``@task`` functions that share
their function and options, and only differ by id. ``PackedGraph`` sends those as columns::

    ids      ["t0", "t1", ..., "g"]          every node, in order
    kinds    [0, 0, ..., GROUP]              a shape index, or OTHER / GROUP / EMPTY
    shapes   [(func, options, pending, keys)] one per function, option set and bound names
    bound    [(values of keys), ...]         per plain task with bound arguments, in order
    others   [executable, ...]               any other node, pickled as it is
    groups   [(state, [member ids]), ...]    parallel groups, members by id

and the receiver builds each plain task from its shape's attributes in one dict update.
A plain task is an exact ``TaskWrapper`` with no iteration data and no attributes beyond its
own; the fan-out idiom ``echo(task_id=f"t{i}", i=i)`` makes thousands of them with bound
arguments, which travel as a column of values beside the shape's names. Everything else
(and a group with a member that is not a node of its own) is pickled as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from graflow.core.graph import TaskGraph
from graflow.core.task import (
    _OPTION_FIELDS,
    _WRAPPER_FIELDS,
    Executable,
    ParallelGroup,
    TaskWrapper,
    _get_options,
)

__all__ = ["PackedGraph"]

OTHER = -1
GROUP = -2
EMPTY = -3

_FUNC_ATTRS = ("__name__", "__doc__", "__module__", "__qualname__")


class PackedGraph:
    """Pickles as a compact form of ``graph``; unpickles as a TaskGraph."""

    __slots__ = ("graph",)

    def __init__(self, graph: TaskGraph) -> None:
        self.graph = graph

    def __reduce__(self) -> tuple[Any, ...]:
        with _no_gc():
            return self._pack()

    def _pack(self) -> tuple[Any, ...]:
        nodes = self.graph._nodes
        ids = list(nodes)
        kinds: list[int] = []
        shapes: list[tuple[Any, ...]] = []
        bound: list[tuple[Any, ...]] = []
        shape_index: dict[tuple[Any, ...], int] = {}
        others: list[Executable] = []
        groups: list[tuple[dict[str, Any], list[str]]] = []
        for node_id in ids:
            task = nodes[node_id].get("task")
            if task is None:
                kinds.append(EMPTY)
                continue
            key = _shape_key(task, node_id)
            if key is not None:
                try:
                    index = shape_index.get(key)
                except TypeError:  # an unhashable option (a RetryPolicy): pickled as it is
                    key = index = None
            if key is not None:
                if index is None:
                    index = shape_index[key] = len(shapes)
                    shapes.append(key)
                kinds.append(index)
                if key[3]:
                    bound.append(tuple(task._bound_kwargs.values()))
                continue
            members = _member_ids(task, nodes)
            if members is not None:
                state = task.__getstate__()
                del state["tasks"]
                groups.append((state, members))
                kinds.append(GROUP)
                continue
            others.append(task)
            kinds.append(OTHER)
        return (_unpack, (ids, kinds, shapes, bound, others, groups, self.graph.edges))


def _shape_key(task: Any, node_id: str) -> tuple[Any, ...] | None:
    """(function, options, pending registration, bound names) of a plain task, else None."""
    if type(task) is not TaskWrapper or task._iteration_args:
        return None
    state = task.__dict__
    if task._task_id != node_id or not state.keys() <= _WRAPPER_FIELDS:
        return None
    if state.get("__annotations__") != getattr(task.func, "__annotations__", {}):
        return None
    return (
        task.func,
        _get_options(task),
        state.get("_pending_registration", False),
        tuple(task._bound_kwargs),
    )


def _member_ids(task: Any, nodes: dict[str, dict[str, Any]]) -> list[str] | None:
    """The ids of a parallel group's members, if each is a node of its own."""
    if type(task) is not ParallelGroup:
        return None
    ids = []
    for member in task.tasks:
        data = nodes.get(member.task_id)
        if data is None or data.get("task") is not member:
            return None
        ids.append(member.task_id)
    return ids


def _shape_state(
    func: Any, options: tuple[Any, ...], pending: bool, keys: tuple[str, ...]
) -> dict[str, Any]:
    """The attributes every plain task of one shape has (see TaskWrapper.__reduce__)."""
    state: dict[str, Any] = {"func": func}
    state.update(zip(_OPTION_FIELDS, options, strict=True))
    state["_iteration_args"] = ()
    state["_param_names"] = None
    for attr in _FUNC_ATTRS:
        value = getattr(func, attr, None)
        if value is not None:
            state[attr] = value
    state["__annotations__"] = dict(getattr(func, "__annotations__", {}))
    if pending:
        state["_pending_registration"] = True
    return state


@contextmanager
def _no_gc() -> Iterator[None]:
    """Hold off the cyclic collector while tens of thousands of objects are made at once.

    Each batch of allocations would otherwise start a collection, and the full ones walk the
    whole heap: unpacking a 10,000-task graph took up to five times longer with them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _unpack(*args: Any) -> TaskGraph:
    with _no_gc():
        return _build(*args)


def _build(
    ids: list[str],
    kinds: list[int],
    shapes: list[tuple[Any, ...]],
    bound: list[tuple[Any, ...]],
    others: list[Executable],
    groups: list[tuple[dict[str, Any], list[str]]],
    edges: list[tuple[str, str]],
) -> TaskGraph:
    states = [_shape_state(*shape) for shape in shapes]
    keys = [shape[3] for shape in shapes]
    bound_iter = iter(bound)
    new = TaskWrapper.__new__
    nodes: dict[str, dict[str, Any]] = {}
    other_iter = iter(others)
    group_iter = iter(groups)
    made_groups: list[tuple[ParallelGroup, list[str]]] = []
    for node_id, kind in zip(ids, kinds, strict=True):
        if kind >= 0:
            wrapper = new(TaskWrapper)
            attrs = wrapper.__dict__
            attrs.update(states[kind])
            attrs["_task_id"] = node_id
            names = keys[kind]
            attrs["_bound_kwargs"] = (
                dict(zip(names, next(bound_iter), strict=True)) if names else {}
            )
            attrs["__annotations__"] = dict(attrs["__annotations__"])
            nodes[node_id] = {"task": wrapper}
        elif kind == EMPTY:
            nodes[node_id] = {}
        elif kind == OTHER:
            nodes[node_id] = {"task": next(other_iter)}
        else:
            state, members = next(group_iter)
            group = ParallelGroup.__new__(ParallelGroup)
            group.__setstate__(state)
            made_groups.append((group, members))
            nodes[node_id] = {"task": group}
    for group, members in made_groups:
        group.tasks = [nodes[m]["task"] for m in members]
    graph = TaskGraph()
    graph._nodes = nodes
    succ: dict[str, list[str]] = {node_id: [] for node_id in ids}
    pred: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for src, dst in edges:
        succ[src].append(dst)
        pred[dst].append(src)
    graph._succ = succ
    graph._pred = pred
    return graph
