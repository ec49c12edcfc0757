"""Pickling of graphs, tasks and values for other processes: C speed, cloudpickle where needed.

cloudpickle can pickle closures, lambdas and code defined in ``__main__``, but it runs a
Python hook for every object, which makes a graph of 10,000 tasks cost a tenth of a second.
``dumps`` uses the C pickler with a hook that only intervenes for functions and classes:
one that can be imported by name in another process is pickled by
reference as usual; any other (defined in ``__main__``, nested, a lambda, or hidden behind a
``@task`` wrapper of the same name) is embedded by value with cloudpickle, once per object
thanks to the pickle memo. If the C pickler still cannot handle something, the whole object
goes through cloudpickle.
"""

from __future__ import annotations

import io
import operator
import pickle
import sys
import types
from typing import Any

import cloudpickle

from graflow.core.packing import PackedGraph
from graflow.core.spec import ITEM_FIELDS, Outcome, OutcomeKind, WorkItem
from graflow.exceptions import ConfigError, GraphCompilationError

__all__ = [
    "decode_item",
    "decode_outcome",
    "dumps",
    "dumps_run",
    "encode_item",
    "encode_outcome",
    "loads",
    "register_by_value",
]


# Modules loaded from a file path (``graflow run path/to/flow.py``) exist only in the process
# that loaded them: their code must travel by value. Kept module-wide like cloudpickle's own
# registry, which is told too, so the functions' globals follow them.
_BY_VALUE_MODULES: set[str] = set()


def register_by_value(module_name: str) -> None:
    """Pickle the functions and classes of ``module_name`` by value from now on."""
    _BY_VALUE_MODULES.add(module_name)
    module = sys.modules.get(module_name)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)


def _importable(obj: Any) -> bool:
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or module_name == "__main__" or "<" in qualname:
        return False
    if module_name in _BY_VALUE_MODULES:
        return False
    target: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


# Up to this many prototypes and classes to embed, each gets a cloudpickle call of its own
# in a single pass; past it, the pass only collects them and a second pass embeds them all.
_DIRECT_LIMIT = 8


class _Pickler(pickle.Pickler):
    """The C pickler, with functions and classes that cannot be imported embedded by value.

    Such a function becomes a new function made from a *prototype* (its code and globals,
    one per code object, shared by every function made from it) and its own state:
    closure contents, defaults, attributes, pickled here at C speed. Prototypes and
    classes go through cloudpickle: each on its own while there are few; past
    ``_DIRECT_LIMIT`` the pass goes on only to collect them, and a second pass
    (``by_value`` given) embeds them all from one cloudpickle call (``_ByValue``).
    """

    def __init__(self, file: io.BytesIO, by_value: _ByValue | None = None) -> None:
        super().__init__(file, protocol=5)
        self.by_value = by_value
        self.found: dict[Any, Any] = {}  # (code, globals id) or class id -> what to embed
        self.embedded: dict[Any, _Embedded] = {}

    def reducer_override(self, obj: Any) -> Any:
        # The C pickler calls this for objects other than plain containers and scalars;
        # only functions and classes that cannot be imported by name need help.
        if type(obj) is types.FunctionType:
            if _importable(obj):
                return NotImplemented
            return self._reduce_function(obj)
        if isinstance(obj, type) and not _importable(obj):
            stand_in = self._embed(id(obj), obj)
            return (int, ()) if stand_in is None else stand_in.__reduce__()
        return NotImplemented

    @property
    def is_complete(self) -> bool:
        """Whether what was written is the pickle (else only a collecting pass)."""
        return self.by_value is not None or len(self.found) <= _DIRECT_LIMIT

    def _embed(self, key: Any, obj: Any) -> _Embedded | _Slot | None:
        """What stands for ``obj`` in the pickle (None once this pass only collects)."""
        if self.by_value is not None:
            return _Slot(self.by_value, self.by_value.index[key])
        self.found.setdefault(key, obj)
        if len(self.found) > _DIRECT_LIMIT:
            return None
        stand_in = self.embedded.get(key)
        if stand_in is None:
            stand_in = self.embedded[key] = _Embedded(cloudpickle.dumps(obj, protocol=5))
        return stand_in

    def _reduce_function(self, func: types.FunctionType) -> tuple[Any, ...]:
        code = func.__code__
        key = (code, id(func.__globals__))
        prototype = self.found.get(key)
        if prototype is None:
            # Empty cells: the prototype carries only what every function of its code
            # shares; each function's closure contents travel in its own state.
            cells = tuple(types.CellType() for _ in code.co_freevars) or None
            prototype = types.FunctionType(code, func.__globals__, func.__name__, None, cells)
        closure = func.__closure__ or ()
        state = (
            tuple(_cell_value(cell) for cell in closure),
            func.__defaults__,
            func.__kwdefaults__,
            func.__dict__ or None,
            func.__name__,
            func.__qualname__,
            func.__module__,
            func.__doc__,
            func.__annotations__ or None,
        )
        stand_in = self._embed(key, prototype)
        return (_new_function, (stand_in, len(closure)), state, None, None, _fill_function)


class _EmptyCell:
    """Stands for the contents of a closure cell not yet assigned."""


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a closure variable assigned later)
        return _EmptyCell


class _Embedded:
    """One object embedded by a cloudpickle call of its own: unpickles as that object."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return (cloudpickle.loads, (self.blob,))


class _Slot:
    """One embedded object of a ``_ByValue``: unpickles as ``by_value[index]``."""

    __slots__ = ("by_value", "index")

    def __init__(self, by_value: _ByValue, index: int) -> None:
        self.by_value, self.index = by_value, index

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.getitem, (self.by_value, self.index))


def _new_function(prototype: Any, cells: int) -> types.FunctionType:
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(
        prototype.__code__, prototype.__globals__, prototype.__name__, None, closure
    )


def _fill_function(func: types.FunctionType, state: tuple[Any, ...]) -> None:
    cells, defaults, kwdefaults, attrs, name, qualname, module, doc, annotations = state
    for cell, value in zip(func.__closure__ or (), cells, strict=True):
        if value is not _EmptyCell:
            cell.cell_contents = value
    func.__defaults__ = defaults
    func.__kwdefaults__ = kwdefaults
    if attrs:
        func.__dict__.update(attrs)
    func.__name__, func.__qualname__, func.__module__, func.__doc__ = name, qualname, module, doc
    if annotations:
        func.__annotations__ = annotations


class _ByValue:
    """The prototypes and classes a pickle embeds by value, in one cloudpickle blob.

    A workflow made at run time can hold thousands of functions (closures, lambdas,
    ``exec``); a cloudpickle call each cost up to milliseconds, most of it pickling again
    what they share (their code, their module's globals, the helpers they call).
    Unpickles as their list.
    """

    __slots__ = ("blob", "index")

    def __init__(self, found: dict[Any, Any]) -> None:
        self.index = {key: i for i, key in enumerate(found)}
        self.blob = cloudpickle.dumps(list(found.values()), protocol=5)

    def __reduce__(self) -> tuple[Any, ...]:
        return (cloudpickle.loads, (self.blob,))


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for another process of the same Python and graflow version."""
    buffer = io.BytesIO()
    try:
        pickler = _Pickler(buffer)
        pickler.dump(obj)
        if not pickler.is_complete:
            buffer = io.BytesIO()
            _Pickler(buffer, _ByValue(pickler.found)).dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(obj, protocol=5)  # type: ignore[no-any-return]
    return buffer.getvalue()


def loads(data: bytes | memoryview) -> Any:
    """Unpickle bytes made by ``dumps`` (only ever from a trusted source)."""
    return pickle.loads(data)


def dumps_run(graph: Any, handlers: dict[str, Any], destination: str) -> tuple[bytes, bytes]:
    """A run's graph and task handlers pickled for ``destination`` (named in errors).

    Raises GraphCompilationError naming the first task that cannot be pickled, and
    ConfigError for a handler that cannot.
    """
    try:
        graph_blob = dumps(PackedGraph(graph))
    except Exception as exc:
        raise GraphCompilationError(
            f"the workflow cannot be sent to {destination}: {_unpicklable_node(graph)}: "
            f"{type(exc).__name__}: {exc}. Make the task and what it captures picklable, "
            "or run it in-process (processes=0)",
            cause=exc,
        ) from exc
    try:
        handlers_blob = dumps(dict(handlers))
    except Exception as exc:
        raise ConfigError(f"a registered task handler cannot be pickled: {exc}") from exc
    return graph_blob, handlers_blob


def _unpicklable_node(graph: Any) -> str:
    for node_id, data in graph.nodes.items():
        try:
            dumps(data.get("task"))
        except Exception:  # noqa: BLE001 - we only look for the first culprit
            return f"task '{node_id}'"
    return "the graph"


# -- records on the wire ------------------------------------------------------------------
# A WorkItem travels as the tuple of its fields, then its predecessor's seq when it is a
# conditional item (graflow.core.lookahead); an Outcome as the tuple of its fields with its
# kind as a plain int. Tuples pickle several times faster than dataclass instances, and a
# longer tuple from a newer field decodes here as long as the field has a default.


def encode_item(item: WorkItem, after: int = 0) -> tuple[Any, ...]:
    """The wire form of ``item`` (``after``: the seq of the item it runs after, or 0)."""
    raw = item.as_tuple()
    return (*raw, after) if after else raw


def decode_item(raw: tuple[Any, ...] | list[Any]) -> tuple[WorkItem, int]:
    """The item and its predecessor's seq (0: none) of an ``encode_item`` tuple.

    Raises TypeError or ValueError for a tuple that is not one.
    """
    if not isinstance(raw, tuple | list) or len(raw) < 2:
        raise ValueError(f"not a work item: {raw!r:.80}")
    after = raw[ITEM_FIELDS] if len(raw) > ITEM_FIELDS else 0
    if not isinstance(after, int):
        raise ValueError(f"not a predecessor seq: {after!r:.80}")
    return WorkItem(*raw[:ITEM_FIELDS]), after


def encode_outcome(outcome: Outcome) -> tuple[Any, ...]:
    """The wire form of ``outcome``."""
    return (
        outcome.seq,
        outcome.task_id,
        int(outcome.kind),
        outcome.value,
        outcome.error,
        outcome.commands,
        outcome.duration_s,
        outcome.traceback,
    )


def decode_outcome(raw: tuple[Any, ...] | list[Any]) -> Outcome:
    """The Outcome of an ``encode_outcome`` tuple (TypeError/ValueError if it is not one)."""
    seq, task_id, kind, value, error, commands, duration_s, tb = raw[:8]
    return Outcome(seq, task_id, OutcomeKind(kind), value, error, commands, duration_s, tb)
