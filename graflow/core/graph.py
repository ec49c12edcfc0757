"""TaskGraph: the nodes and edges of one workflow.

A small adjacency structure of its own rather than a networkx graph: the scheduler reads
successors on every hop, and a dict of lists is several times faster than a NodeView while
keeping the same surface (``graph.nodes[x]["task"]``, ``"x" in graph.nodes``, ...).
``nx_graph()`` builds a networkx graph on demand for users who want its algorithms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from graflow.exceptions import DuplicateTaskError

if TYPE_CHECKING:
    from graflow.core.task import Executable


class NodeView(Mapping[str, dict[str, Any]]):
    """Read-only view of a graph's nodes: ``view[id]["task"]`` is the executable."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        self._nodes = nodes

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._nodes[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def __call__(self, data: bool = False) -> list[Any]:
        if data:
            return list(self._nodes.items())
        return list(self._nodes)

    def __repr__(self) -> str:
        return f"NodeView({list(self._nodes)!r})"


class EdgeView(list[tuple[str, str]]):
    """The edges as ``(from, to)`` pairs; also callable, as networkx's ``graph.edges()``."""

    def __call__(self) -> list[tuple[str, str]]:
        return list(self)


class TaskGraph:
    """Directed graph of executables; cycles are allowed (loops are bounded at run time)."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, list[str]] = {}
        self._pred: dict[str, list[str]] = {}

    # -- building ---------------------------------------------------------------------
    def add_node(
        self, task: Executable, task_id: str | None = None, skip_if_exists: bool = False
    ) -> None:
        """Add ``task`` under ``task_id`` (default: its own id)."""
        node_id = task_id if task_id is not None else task.task_id
        if node_id in self._nodes:
            if skip_if_exists:
                return
            raise DuplicateTaskError(f"Node '{node_id}' already exists in graph")
        self._nodes[node_id] = {"task": task}
        self._succ[node_id] = []
        self._pred[node_id] = []

    def add_edge(self, from_node: str, to_node: str) -> None:
        """Add the edge ``from_node -> to_node``; unknown endpoints become placeholder nodes."""
        for node_id in (from_node, to_node):
            if node_id not in self._nodes:
                self._nodes[node_id] = {}
                self._succ[node_id] = []
                self._pred[node_id] = []
        if to_node not in self._succ[from_node]:
            self._succ[from_node].append(to_node)
            self._pred[to_node].append(from_node)

    def remove_node(self, node_id: str) -> None:
        """Remove a node and its edges."""
        for succ in self._succ.pop(node_id, []):
            self._pred[succ].remove(node_id)
        for pred in self._pred.pop(node_id, []):
            self._succ[pred].remove(node_id)
        self._nodes.pop(node_id, None)

    def rename_node(self, old: str, new: str) -> None:
        """Rename a node, keeping its edges."""
        if old not in self._nodes:
            raise KeyError(old)
        if new in self._nodes:
            raise ValueError(f"Node '{new}' already exists in graph")
        self._nodes = {(new if k == old else k): v for k, v in self._nodes.items()}
        self._succ = {
            (new if k == old else k): [new if s == old else s for s in v]
            for k, v in self._succ.items()
        }
        self._pred = {
            (new if k == old else k): [new if p == old else p for p in v]
            for k, v in self._pred.items()
        }

    def clear(self) -> None:
        """Remove every node and edge."""
        self._nodes.clear()
        self._succ.clear()
        self._pred.clear()

    # -- reading ----------------------------------------------------------------------
    @property
    def nodes(self) -> NodeView:
        """The nodes, as a read-only mapping of id to ``{"task": executable}``."""
        return NodeView(self._nodes)

    @property
    def edges(self) -> EdgeView:
        """Every edge as a ``(from, to)`` pair (``graph.edges()`` works too)."""
        return EdgeView((src, dst) for src, succs in self._succ.items() for dst in succs)

    def get_edges(self) -> list[tuple[str, str]]:
        """Every edge as a ``(from, to)`` pair."""
        return self.edges

    def successors(self, node_id: str) -> list[str]:
        """Ids of the nodes ``node_id`` points to, in insertion order."""
        return list(self._succ.get(node_id, ()))

    def predecessors(self, node_id: str) -> list[str]:
        """Ids of the nodes that point to ``node_id``."""
        return list(self._pred.get(node_id, ()))

    def has_node(self, task_id: str) -> bool:
        """True if ``task_id`` is a node or a member of a parallel group node."""
        if task_id in self._nodes:
            return True
        return self._find_member(task_id) is not None

    def get_node(self, task_id: str) -> Executable:
        """The executable of ``task_id`` (also finds group members); KeyError if absent."""
        data = self._nodes.get(task_id)
        if data is not None and "task" in data:
            return data["task"]  # type: ignore[no-any-return]
        member = self._find_member(task_id)
        if member is None:
            raise KeyError(task_id)
        return member

    def _find_member(self, task_id: str) -> Executable | None:
        for data in self._nodes.values():
            members = getattr(data.get("task"), "tasks", None)
            if members is None or not hasattr(data["task"], "with_execution"):
                continue
            for member in members:
                if member.task_id == task_id:
                    return member  # type: ignore[no-any-return]
        return None

    def get_parallel_group_members(self, group_id: str) -> list[str]:
        """Ids of the members of the parallel group ``group_id``."""
        group = self.get_node(group_id)
        return [m.task_id for m in getattr(group, "tasks", [])]

    def get_start_nodes(self) -> list[str]:
        """Nodes without predecessors, minus members of a start-node parallel group."""
        roots = [n for n in self._nodes if not self._pred[n]]
        if len(roots) > 1:
            members: set[str] = set()
            for n in roots:
                task = self._nodes[n].get("task")
                if task is not None and hasattr(task, "with_execution"):
                    members.update(m.task_id for m in task.tasks)
            roots = [n for n in roots if n not in members]
        return roots

    def detect_cycles(self) -> list[list[str]]:
        """Elementary cycles found by a depth-first search (each reported once)."""
        cycles: list[list[str]] = []
        seen: set[frozenset[str]] = set()
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for succ in self._succ.get(node, ()):
                if state.get(succ) == 1:
                    cycle = stack[stack.index(succ) :]
                    key = frozenset(cycle)
                    if key not in seen:
                        seen.add(key)
                        cycles.append(list(cycle))
                elif succ not in state:
                    visit(succ)
            stack.pop()
            state[node] = 2

        for node in list(self._nodes):
            if node not in state:
                visit(node)
        return cycles

    def nx_graph(self) -> Any:
        """A ``networkx.DiGraph`` copy of this graph (needs networkx installed)."""
        try:
            import networkx as nx  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TaskGraph.nx_graph() needs networkx: pip install networkx") from exc
        graph = nx.DiGraph()
        for node_id, data in self._nodes.items():
            graph.add_node(node_id, **data)
        graph.add_edges_from(self.edges)
        return graph

    @property
    def _graph(self) -> Any:
        """The graph as a ``networkx.DiGraph`` (a copy), where upstream code reaches for it."""
        return self.nx_graph()

    def __reduce__(self) -> tuple[Any, ...]:
        # Nodes and edges as two flat lists: far smaller and faster than three dicts of
        # per-node containers when a large graph is shipped to worker processes.
        nodes = [(node_id, data.get("task")) for node_id, data in self._nodes.items()]
        return (_restore_graph, (nodes, self.edges))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._nodes

    def __str__(self) -> str:
        # Drawing code imports the graph module (export.snapshot reads TaskGraphs).
        from graflow.core.boxes import draw_boxes  # noqa: PLC0415
        from graflow.core.export import snapshot  # noqa: PLC0415

        return draw_boxes(snapshot(self))

    def __repr__(self) -> str:
        return f"TaskGraph(nodes={len(self._nodes)}, edges={len(self.edges)})"


def _restore_graph(nodes: list[tuple[str, Any]], edges: list[tuple[str, str]]) -> TaskGraph:
    graph = TaskGraph()
    for node_id, task in nodes:
        graph._nodes[node_id] = {"task": task} if task is not None else {}
        graph._succ[node_id] = []
        graph._pred[node_id] = []
    for src, dst in edges:
        graph._succ[src].append(dst)
        graph._pred[dst].append(src)
    return graph
