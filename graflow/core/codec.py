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
import pickle
import sys
import types
from typing import Any

import cloudpickle

from graflow.core.packing import PackedGraph
from graflow.exceptions import ConfigError, GraphCompilationError

__all__ = ["dumps", "dumps_run", "loads", "register_by_value"]


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


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # The C pickler calls this for objects other than plain containers and scalars;
        # only functions and classes that cannot be imported by name need help.
        if isinstance(obj, types.FunctionType | type) and not _importable(obj):
            return (cloudpickle.loads, (cloudpickle.dumps(obj, protocol=5),))
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for another process of the same Python and graflow version."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=5).dump(obj)
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
