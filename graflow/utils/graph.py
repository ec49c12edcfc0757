"""Graph drawing under the upstream names (``draw_ascii``, ``draw_mermaid``, ...).

Thin wrappers over graflow.core.export. Each accepts a TaskGraph or a networkx.DiGraph (as
returned by ``TaskGraph.nx_graph()``) and needs no plotting library: image output is left to
external renderers, so ``draw_png`` and ``draw_mermaid_png`` only explain how to get one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from graflow.core.boxes import draw_boxes
from graflow.core.export import GraphLike, GraphSnapshot, snapshot, to_dot, to_mermaid
from graflow.core.graph import TaskGraph
from graflow.core.workflow import WorkflowContext, current_workflow_context

if TYPE_CHECKING:
    from graflow.core.task import Executable

__all__ = [
    "build_graph",
    "draw_ascii",
    "draw_dot",
    "draw_mermaid",
    "draw_mermaid_png",
    "draw_png",
    "show_graph_info",
    "visualize_dependencies",
]


def build_graph(start_node: Executable, context: WorkflowContext | None = None) -> TaskGraph:
    """A new TaskGraph of the part of the workflow's graph connected to ``start_node``.

    Edges are followed both ways; a parallel group also gets an edge to each member. The
    workflow (default: the current one) is left as it is.
    """
    source = (context if context is not None else current_workflow_context()).graph
    built = TaskGraph()
    first = source.nodes.get(start_node.task_id, {}).get("task", start_node)  # not a chain
    pending: list[Executable] = [first]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if node.task_id in seen:
            continue
        seen.add(node.task_id)
        built.add_node(node, skip_if_exists=True)
        for succ in source.successors(node.task_id):
            _link(built, source, node.task_id, succ, pending)
        for member in getattr(node, "tasks", ()) if hasattr(node, "with_execution") else ():
            built.add_node(member, skip_if_exists=True)
            built.add_edge(node.task_id, member.task_id)
            pending.append(member)
        for pred in source.predecessors(node.task_id):
            _link(built, source, pred, node.task_id, pending, follow=pred)
    return built


def _link(
    built: TaskGraph,
    source: TaskGraph,
    head: str,
    tail: str,
    pending: list[Executable],
    follow: str | None = None,
) -> None:
    """Add ``head -> tail`` to ``built`` and queue the far end (``follow``, default tail)."""
    far = tail if follow is None else follow
    task = source.nodes[far].get("task") if far in source.nodes else None
    if task is not None:
        built.add_node(task, far, skip_if_exists=True)
        pending.append(task)
    built.add_edge(head, tail)


def draw_ascii(graph: GraphLike | GraphSnapshot) -> str:
    """The boxed drawing ``print(graph)`` shows (``"Empty graph"`` when it has no nodes)."""
    return draw_boxes(snapshot(graph))


def draw_mermaid(
    graph: GraphLike | GraphSnapshot,
    title: str = "Graph",
    *,
    with_styles: bool = True,
    node_colors: Mapping[str, str] | None = None,
    wrap_label_n_words: int = 9,
) -> str:
    """Mermaid flowchart source; ``node_colors`` maps node ids to fill colours."""
    return to_mermaid(
        graph,
        title=title,
        node_colors=node_colors,
        wrap_words=wrap_label_n_words,
        with_styles=with_styles,
    )


def draw_dot(
    graph: GraphLike | GraphSnapshot,
    name: str = "workflow",
    *,
    node_colors: Mapping[str, str] | None = None,
    statuses: Mapping[str, str] | None = None,
) -> str:
    """Graphviz DOT source; render it with ``dot -Tpng graph.dot -o graph.png``."""
    return to_dot(graph, name, statuses=statuses, node_colors=node_colors)


def draw_png(
    graph: GraphLike | GraphSnapshot,
    output_path: str | None = None,
    node_labels: Mapping[str, str] | None = None,
    node_colors: Mapping[str, str] | None = None,
) -> bytes:
    """Not available: graflow ships no image renderer.

    Raises:
        NotImplementedError: always; render ``draw_dot(graph)`` with Graphviz instead.
    """
    raise NotImplementedError(
        "draw_png() needs an image renderer, which graflow does not ship; write "
        "draw_dot(graph) to a file and run Graphviz on it: dot -Tpng graph.dot -o graph.png"
    )


def draw_mermaid_png(graph: GraphLike | GraphSnapshot, *args: object, **kwargs: object) -> bytes:
    """Not available: rendering Mermaid would mean sending the graph to a remote service.

    Raises:
        NotImplementedError: always; render ``draw_mermaid(graph)`` locally instead.
    """
    raise NotImplementedError(
        "draw_mermaid_png() would send the graph to a remote rendering service, which graflow "
        "never does; render draw_mermaid(graph) locally, e.g. with mermaid-cli: "
        "mmdc -i graph.mmd -o graph.png"
    )


def show_graph_info(graph: GraphLike | GraphSnapshot) -> None:
    """Print the nodes, the edges and the cycles, as upstream's ``show_graph_info`` does."""
    snap = snapshot(graph)
    cycles = snap.cycles()
    print("=== Graph Information ===")
    print(f"Nodes: {list(snap.nodes)}")
    print(f"Edges: {list(snap.edges)}")
    print(f"Cycles detected: {[list(c) for c in cycles]}" if cycles else "No cycles detected")


def visualize_dependencies(graph: GraphLike | GraphSnapshot) -> None:
    """Print each node with its successors: ``a >> b >> c``, or ``a (no dependencies)``."""
    snap = snapshot(graph)
    print("=== Dependencies ===")
    for node in snap.nodes:
        succs = snap.adjacency[node]
        print(f"{node} >> {' >> '.join(succs)}" if succs else f"{node} (no dependencies)")
