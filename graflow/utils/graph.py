"""Graph drawing under the upstream names (``draw_ascii``, ``draw_mermaid``, ...).

Thin wrappers over graflow.core.export. Each accepts a TaskGraph or a networkx.DiGraph (as
returned by ``TaskGraph.nx_graph()``) and needs no plotting library: image output is left to
external renderers, so ``draw_png`` and ``draw_mermaid_png`` only explain how to get one.
"""

from __future__ import annotations

from collections.abc import Mapping

from graflow.core.export import GraphLike, GraphSnapshot, snapshot, to_ascii, to_dot, to_mermaid

__all__ = [
    "draw_ascii",
    "draw_dot",
    "draw_mermaid",
    "draw_mermaid_png",
    "draw_png",
    "show_graph_info",
    "visualize_dependencies",
]


def draw_ascii(graph: GraphLike | GraphSnapshot) -> str:
    """A layered text drawing of ``graph`` (``"Empty graph"`` when it has no nodes)."""
    return to_ascii(graph)


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
    """Print node and edge counts, start nodes, parallel groups and cycles."""
    snap = snapshot(graph)
    cycles = snap.cycles()
    lines = [
        "Graph information:",
        f"  Nodes: {len(snap.nodes)}",
        f"  Edges: {len(snap.edges)}",
        f"  Start nodes: {_join(snap.start_nodes())}",
    ]
    lines += [f"  Parallel group {g}: {_join(m)}" for g, m in snap.groups.items()]
    lines.append(f"  Cycles: {len(cycles)}")
    lines += [f"    {' -> '.join([*cycle, cycle[0]])}" for cycle in cycles]
    print("\n".join(lines))


def visualize_dependencies(graph: GraphLike | GraphSnapshot) -> None:
    """Print each node with the nodes it depends on (its predecessors) and its successors."""
    snap = snapshot(graph)
    lines = ["Task dependencies:"]
    for node in snap.nodes:
        lines.append(f"  {node}")
        lines.append(f"    depends on: {_join(snap.predecessors(node))}")
        lines.append(f"    leads to:   {_join(snap.adjacency[node])}")
        if node in snap.groups:
            lines.append(f"    runs in parallel: {_join(snap.groups[node])}")
    print("\n".join(lines))


def _join(ids: tuple[str, ...] | list[str]) -> str:
    """Comma-separated ids, or ``(none)``."""
    return ", ".join(ids) if ids else "(none)"
