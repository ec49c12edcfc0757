"""The runtime graph a tracer keeps: which tasks ran, in what state, and who started whom.

When networkx is installed the graph is a ``networkx.DiGraph`` (what scripts written for
the upstream project expect); otherwise it is ``RuntimeGraph``, a small directed graph with
the part of that surface the tracers and graflow's exporters use: ``nodes[id]`` and
``edges[u, v]`` attribute dicts, ``in``, ``len``, ``has_edge``, ``successors``,
``predecessors``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from typing import Any

__all__ = ["RuntimeGraph", "new_runtime_graph"]


class _NodeView:
    """``graph.nodes``: iterable ids, ``view[id]`` the node's attribute dict."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        return self._data[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __call__(self, data: bool = False) -> list[Any]:
        return list(self._data.items()) if data else list(self._data)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._data.items())


class _EdgeView:
    """``graph.edges``: iterable ``(u, v)`` pairs, ``view[u, v]`` the edge's attribute dict."""

    __slots__ = ("_succ",)

    def __init__(self, succ: dict[str, dict[str, dict[str, Any]]]) -> None:
        self._succ = succ

    def __getitem__(self, pair: tuple[str, str]) -> dict[str, Any]:
        return self._succ[pair[0]][pair[1]]

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        return pair[1] in self._succ.get(pair[0], {})

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for u, targets in self._succ.items():
            for v in targets:
                yield u, v

    def __len__(self) -> int:
        return sum(len(t) for t in self._succ.values())

    def __call__(self, data: bool = False) -> list[Any]:
        if data:
            return [(u, v, self._succ[u][v]) for u, v in self]
        return list(self)


class RuntimeGraph:
    """A directed graph of task ids with attribute dicts on nodes and edges."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, dict[str, dict[str, Any]]] = {}
        self._pred: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def nodes(self) -> _NodeView:
        """The nodes: ``nodes[id]`` is a node's attribute dict."""
        return _NodeView(self._nodes)

    @property
    def edges(self) -> _EdgeView:
        """The edges: ``edges[u, v]`` is an edge's attribute dict."""
        return _EdgeView(self._succ)

    def add_node(self, node_id: str, **attrs: Any) -> None:
        """Add ``node_id`` (or update its attributes)."""
        self._nodes.setdefault(node_id, {}).update(attrs)
        self._succ.setdefault(node_id, {})
        self._pred.setdefault(node_id, {})

    def add_edge(self, u: str, v: str, **attrs: Any) -> None:
        """Add the edge ``u -> v`` (and either node if missing)."""
        for node_id in (u, v):
            if node_id not in self._nodes:
                self.add_node(node_id)
        data = self._succ[u].setdefault(v, {})
        data.update(attrs)
        self._pred[v][u] = data

    def has_edge(self, u: str, v: str) -> bool:
        """True if ``u -> v`` is an edge."""
        return v in self._succ.get(u, {})

    def has_node(self, node_id: str) -> bool:
        """True if ``node_id`` is a node."""
        return node_id in self._nodes

    def successors(self, node_id: str) -> Iterator[str]:
        """The nodes ``node_id`` has an edge to."""
        return iter(self._succ[node_id])

    def predecessors(self, node_id: str) -> Iterator[str]:
        """The nodes with an edge to ``node_id``."""
        return iter(self._pred[node_id])

    def number_of_nodes(self) -> int:
        """How many nodes there are."""
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)


@functools.cache
def _networkx() -> Any:
    # Imported on first use, not with graflow: networkx takes a tenth of a second to load,
    # and most runs never keep a runtime graph.
    try:
        return importlib.import_module("networkx")
    except ImportError:
        return None


def new_runtime_graph() -> Any:
    """An empty runtime graph: a networkx.DiGraph if networkx is installed."""
    nx = _networkx()
    return nx.DiGraph() if nx is not None else RuntimeGraph()
