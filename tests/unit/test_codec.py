"""core/codec.py: functions and classes that cannot be imported travel by value."""

from __future__ import annotations

import functools
import inspect
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from graflow.core import codec
from graflow.core.task import TaskWrapper


def _closures() -> tuple[Callable[..., int], Callable[[int], int], type]:
    offset = 5

    def add(a: int, b: int = 2, *, c: int = 3) -> int:
        "Adds."
        return a + b + c + offset

    add.marker = "kept"  # type: ignore[attr-defined]

    def countdown(n: int) -> int:
        return 0 if n == 0 else countdown(n - 1) + 1

    class Local:
        def answer(self) -> int:
            return 42

    return add, countdown, Local


def _made_at_run_time(count: int) -> list[Callable[[], int]]:
    made = []
    for i in range(count):
        namespace: dict[str, Any] = {"__name__": __name__}
        exec(f"def step_{i}():\n    return {i}\n", namespace)
        made.append(namespace[f"step_{i}"])
    return made


@pytest.mark.parametrize("distinct", [2, 40], ids=["few", "many"])
def test_functions_and_classes_round_trip(distinct: int) -> None:
    add, countdown, local = _closures()
    value = {
        "add": add,
        "again": add,
        "countdown": countdown,
        "class": local,
        "instance": local(),
        "lambdas": [lambda i=i: i * 10 for i in range(4)],
        "partial": functools.partial(add, 1),
        "made": _made_at_run_time(distinct),
    }
    copy = codec.loads(codec.dumps(value))
    assert copy["add"] is copy["again"] and copy["add"] is not add
    assert copy["add"](1) == 11 and copy["add"](1, 1, c=0) == 7
    assert copy["add"].__doc__ == "Adds." and copy["add"].marker == "kept"
    assert copy["add"].__qualname__ == add.__qualname__
    assert copy["add"].__kwdefaults__ == {"c": 3}
    assert copy["countdown"](4) == 4
    assert type(copy["instance"]) is copy["class"] and copy["instance"].answer() == 42
    assert [f() for f in copy["lambdas"]] == [0, 10, 20, 30]
    # Functions of one code object share it on the other side too.
    assert copy["lambdas"][0].__code__ is copy["lambdas"][3].__code__
    assert copy["partial"](1) == 10
    assert [f() for f in copy["made"]] == list(range(distinct))


def test_closure_cell_assigned_later_stays_empty_then_fills() -> None:
    def outer() -> Callable[[], int]:
        def read() -> int:
            return later

        copy = codec.loads(codec.dumps(read))  # the cell is still empty here
        later = 3
        return copy

    copy = outer()
    with pytest.raises(NameError):
        copy()


def test_importable_functions_go_by_reference() -> None:
    blob = codec.dumps([inspect.signature, _closures])
    assert b"cloudpickle" not in blob
    assert pickle.loads(blob) == [inspect.signature, _closures]


def test_a_graph_of_many_run_time_functions_loads_in_one_piece() -> None:
    tasks = [TaskWrapper(f"t{i}", f, register_to_context=False) for i, f in
             enumerate(_made_at_run_time(30))]  # fmt: skip
    copy = codec.loads(codec.dumps(tasks))
    assert [t.func() for t in copy] == list(range(30))
    assert [t.task_id for t in copy] == [f"t{i}" for i in range(30)]


def _takes(a: int, b: int, /, c: int, d: int, *, e: int) -> int:
    return a + b + c + d + e


@pytest.mark.parametrize(
    "bound",
    [
        functools.partial(_takes, 1),
        functools.partial(_takes, 1, 2, 3),
        functools.partial(_takes, d=1),
        functools.partial(_takes, c=1),
        functools.partial(_takes, 1, e=3),
        functools.partial(functools.partial(_takes, 1), 2),
    ],
)
@pytest.mark.parametrize("inject_context", [False, True])
def test_parameter_names_of_partials_match_their_signature(
    bound: functools.partial[int], inject_context: bool
) -> None:
    params = list(inspect.signature(bound).parameters.values())
    if inject_context:
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    expected = tuple(p.name for p in params if p.kind in kinds)
    wrapper = TaskWrapper("t", bound, inject_context=inject_context, register_to_context=False)
    assert wrapper.parameter_names() == expected
