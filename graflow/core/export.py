"""Text renderings of a workflow graph: Mermaid, Graphviz DOT and a layered ASCII listing.

Pure string building with no third-party imports, so a graph can be drawn anywhere. Input is
duck-typed: a TaskGraph and a networkx.DiGraph both expose ``nodes`` (id -> data dict) and
``successors(id)``. A node whose ``"task"`` has a ``with_execution`` attribute is a parallel
group; its members (``task.tasks``) have no edges to it, so they are drawn in a cluster of
their own with dashed membership links from the group node.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "STATUSES",
    "GraphLike",
    "GraphSnapshot",
    "snapshot",
    "to_ascii",
    "to_dot",
    "to_mermaid",
]

# status -> (fill, stroke)
_STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "pending": ("#eceff1", "#78909c"),
    "running": ("#fff8e1", "#ffa000"),
    "succeeded": ("#e8f5e9", "#43a047"),
    "failed": ("#ffebee", "#e53935"),
}
STATUSES = frozenset(_STATUS_COLOURS)
_DIRECTIONS = ("TD", "TB", "BT", "LR", "RL")
_COLOUR = re.compile(r"#?[0-9A-Za-z]+")
_UNSAFE_ID = re.compile(r"[^0-9A-Za-z_]")
# Mermaid reads these as syntax even inside a quoted label; its "#<code>;" entities are safe.
_MERMAID_ESCAPES = {ord(c): f"#{ord(c)};" for c in '"#&<>`'}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INDENT = "    "


class GraphLike(Protocol):
    """The read-only surface the exporters use; TaskGraph and networkx.DiGraph both fit."""

    @property
    def nodes(self) -> Mapping[Any, Any]:
        """Node id -> node data (a dict that may hold the executable under ``"task"``)."""
        ...

    def successors(self, node_id: Any) -> Iterable[Any]:
        """Ids of the nodes ``node_id`` points to."""
        ...


@dataclass(frozen=True)
class GraphSnapshot:
    """Plain copy of a graph: successor lists and parallel-group members, in insertion order."""

    adjacency: Mapping[str, tuple[str, ...]]
    groups: Mapping[str, tuple[str, ...]]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node id, in insertion order."""
        return tuple(self.adjacency)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every edge as a ``(from, to)`` pair."""
        return tuple((src, dst) for src, succs in self.adjacency.items() for dst in succs)

    def predecessors(self, node_id: str) -> tuple[str, ...]:
        """Ids of the nodes that point to ``node_id``."""
        return tuple(src for src, succs in self.adjacency.items() if node_id in succs)

    def group_of(self) -> dict[str, str]:
        """Member id -> the first group listing it (a node is drawn inside one cluster only)."""
        owner: dict[str, str] = {}
        for group, members in self.groups.items():
            for member in members:
                owner.setdefault(member, group)
        return owner

    def start_nodes(self) -> list[str]:
        """Nodes without predecessors, minus members of a start-node group (as TaskGraph)."""
        targets = {dst for _, dst in self.edges}
        roots = [n for n in self.adjacency if n not in targets]
        if len(roots) > 1:
            members = {m for n in roots for m in self.groups.get(n, ())}
            roots = [n for n in roots if n not in members]
        return roots

    def cycles(self) -> list[list[str]]:
        """One cycle per back edge of a depth-first search; empty when the graph is acyclic."""
        return _depth_first(self.adjacency)[1]


def snapshot(graph: GraphLike | GraphSnapshot) -> GraphSnapshot:
    """Copy ``graph`` (a TaskGraph, a networkx.DiGraph or a snapshot) into plain data."""
    if isinstance(graph, GraphSnapshot):
        return graph
    adjacency: dict[str, tuple[str, ...]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for key in list(graph.nodes):
        node_id = str(key)
        succs = tuple(dict.fromkeys(str(s) for s in graph.successors(key)))
        adjacency[node_id] = adjacency.get(node_id, ()) + succs
        members = _group_members(node_id, graph.nodes[key])
        if members is not None:
            groups[node_id] = members
    for succs in list(adjacency.values()):
        for dst in succs:
            adjacency.setdefault(dst, ())
    return GraphSnapshot(adjacency=adjacency, groups=groups)


def _group_members(node_id: str, data: object) -> tuple[str, ...] | None:
    """Member ids if the node holds a parallel group, else None."""
    task = data.get("task") if isinstance(data, Mapping) else None
    if task is None or not hasattr(task, "with_execution"):
        return None
    ids = (str(getattr(member, "task_id", member)) for member in getattr(task, "tasks", ()))
    return tuple(m for m in dict.fromkeys(ids) if m != node_id)


# -- Mermaid ----------------------------------------------------------------------------------


def to_mermaid(
    graph: GraphLike | GraphSnapshot,
    title: str | None = None,
    direction: str = "TD",
    *,
    statuses: Mapping[str, str] | None = None,
    node_colors: Mapping[str, str] | None = None,
    wrap_words: int = 0,
    with_styles: bool = True,
) -> str:
    """Render ``graph`` as a Mermaid flowchart.

    Node ids become safe identifiers (``n_<id>``) labelled with the original id. ``statuses``
    maps node ids to one of STATUSES, ``node_colors`` to a fill colour (``#hex`` or a name);
    ``wrap_words`` > 0 breaks labels after that many words. ``with_styles=False`` leaves out
    every class and style line.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    snap = snapshot(graph)
    _check_statuses(statuses)
    _check_colours(node_colors)
    safe = _mermaid_ids([*snap.nodes, *(m for ms in snap.groups.values() for m in ms)])
    lines: list[str] = []
    if title is not None:
        lines += ["---", f"title: {_yaml_quote(title)}", "---"]
    lines.append(f"flowchart {direction}")
    lines += _mermaid_body(snap, safe, wrap_words)
    if with_styles:
        lines += _mermaid_styles(snap, safe, statuses or {}, node_colors or {})
    return "\n".join(lines) + "\n"


def _mermaid_body(snap: GraphSnapshot, safe: Mapping[str, str], wrap_words: int) -> list[str]:
    """Node declarations, group clusters, edges and membership links."""
    owner = snap.group_of()

    def declare(node_id: str) -> str:
        label = _mermaid_label(node_id, wrap_words)
        if node_id in snap.groups:
            return f'{safe[node_id]}{{{{"{label}"}}}}'
        return f'{safe[node_id]}["{label}"]'

    lines = [_INDENT + declare(n) for n in snap.nodes if n not in owner]
    for index, (group, members) in enumerate(snap.groups.items()):
        own = [m for m in members if owner[m] == group]
        if not own:
            continue
        lines.append(f'{_INDENT}subgraph g{index} ["{_mermaid_label(group, wrap_words)}"]')
        lines += [_INDENT * 2 + declare(m) for m in own]
        lines.append(f"{_INDENT}end")
    lines += [f"{_INDENT}{safe[src]} --> {safe[dst]}" for src, dst in snap.edges]
    for group, members in snap.groups.items():
        lines += [f"{_INDENT}{safe[group]} -.- {safe[m]}" for m in members]
    return lines


def _mermaid_styles(
    snap: GraphSnapshot,
    safe: Mapping[str, str],
    statuses: Mapping[str, str],
    node_colors: Mapping[str, str],
) -> list[str]:
    """classDef/class lines for groups and statuses, then per-node fill colours."""
    lines: list[str] = []
    if snap.groups:
        lines.append(f"{_INDENT}classDef group stroke-dasharray:5 3")
        lines.append(f"{_INDENT}class {','.join(safe[g] for g in snap.groups)} group")
    for status, (fill, stroke) in _STATUS_COLOURS.items():
        ids = [safe[k] for k, v in statuses.items() if v == status and k in safe]
        if ids:
            lines.append(f"{_INDENT}classDef {status} fill:{fill},stroke:{stroke}")
            lines.append(f"{_INDENT}class {','.join(ids)} {status}")
    lines += [f"{_INDENT}style {safe[k]} fill:{c}" for k, c in node_colors.items() if k in safe]
    return lines


def _mermaid_ids(ids: Iterable[str]) -> dict[str, str]:
    """Map each id to a unique identifier made of ASCII letters, digits and underscores."""
    safe: dict[str, str] = {}
    used: set[str] = set()
    for node_id in ids:
        if node_id in safe:
            continue
        base = "n_" + _UNSAFE_ID.sub("_", node_id)
        candidate, suffix = base, 1
        while candidate in used:
            suffix += 1
            candidate = f"{base}_{suffix}"
        used.add(candidate)
        safe[node_id] = candidate
    return safe


def _mermaid_label(text: str, wrap_words: int) -> str:
    """Escape ``text`` for a quoted Mermaid label, breaking lines every ``wrap_words`` words."""
    text = _CONTROL.sub(" ", text)
    if wrap_words <= 0:
        return text.translate(_MERMAID_ESCAPES)
    words = text.split(" ")
    chunks = [" ".join(words[i : i + wrap_words]) for i in range(0, len(words), wrap_words)]
    return "<br>".join(chunk.translate(_MERMAID_ESCAPES) for chunk in chunks)


def _yaml_quote(text: str) -> str:
    """A double-quoted YAML scalar for the Mermaid front-matter title."""
    text = _CONTROL.sub(" ", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


# -- DOT --------------------------------------------------------------------------------------


def to_dot(
    graph: GraphLike | GraphSnapshot,
    name: str = "workflow",
    *,
    statuses: Mapping[str, str] | None = None,
    node_colors: Mapping[str, str] | None = None,
) -> str:
    """Render ``graph`` as a Graphviz digraph; groups become dashed ``cluster_<n>`` subgraphs."""
    snap = snapshot(graph)
    _check_statuses(statuses)
    _check_colours(node_colors)
    owner = snap.group_of()

    def declare(node_id: str) -> str:
        attrs = _dot_attrs(node_id, snap, statuses or {}, node_colors or {})
        return f"{_dot_quote(node_id)} [{attrs}];"

    lines = [
        f"digraph {_dot_quote(name)} {{",
        f"{_INDENT}node [shape=box, style=rounded];",
    ]
    lines += [_INDENT + declare(n) for n in snap.nodes if n not in owner]
    for index, (group, members) in enumerate(snap.groups.items()):
        own = [m for m in members if owner[m] == group]
        if not own:
            continue
        lines.append(f'{_INDENT}subgraph "cluster_{index}" {{')
        lines.append(f"{_INDENT * 2}label={_dot_quote(group)};")
        lines.append(f"{_INDENT * 2}style=dashed;")
        lines += [_INDENT * 2 + declare(m) for m in own]
        lines.append(f"{_INDENT}}}")
    lines += [f"{_INDENT}{_dot_quote(s)} -> {_dot_quote(d)};" for s, d in snap.edges]
    for group, members in snap.groups.items():
        lines += [
            f"{_INDENT}{_dot_quote(group)} -> {_dot_quote(m)} [style=dashed, arrowhead=none];"
            for m in members
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_attrs(
    node_id: str,
    snap: GraphSnapshot,
    statuses: Mapping[str, str],
    node_colors: Mapping[str, str],
) -> str:
    """The attribute list of one node: label, group shape and fill colour."""
    attrs = [f"label={_dot_quote(node_id)}"]
    if node_id in snap.groups:
        attrs.append("shape=hexagon")
    fill = node_colors.get(node_id)
    status = statuses.get(node_id)
    if status is not None:
        status_fill, stroke = _STATUS_COLOURS[status]
        fill = fill or status_fill
        attrs.append(f'color="{stroke}"')
    if fill is not None:
        attrs += ['style="rounded,filled"', f'fillcolor="{fill}"']
    return ", ".join(attrs)


def _dot_quote(text: str) -> str:
    """A double-quoted DOT string; backslashes are doubled so ids map one-to-one."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{_CONTROL.sub(" ", escaped)}"'


# -- ASCII ------------------------------------------------------------------------------------


def to_ascii(graph: GraphLike | GraphSnapshot) -> str:
    """A layered text listing: each node under its layer, with its successors and members.

    Layers follow the longest path from the start nodes once loop-back edges are set aside;
    those are marked ``(loop)``. Group members with no edges of their own appear only inside
    their group's ``(a | b)`` line. The output depends only on the graph's insertion order.
    """
    snap = snapshot(graph)
    if not snap.nodes:
        return "Empty graph"
    layer, back = _layers(snap)
    owner = snap.group_of()
    linked = {n for edge in snap.edges for n in edge}
    shown = [n for n in snap.nodes if n not in owner or n in linked]
    edge_count = len(snap.edges)
    lines = [f"Graph: {len(snap.nodes)} nodes, {edge_count} edge{'s' * (edge_count != 1)}"]
    for number, depth in enumerate(sorted({layer[n] for n in shown})):
        lines.append(f"[layer {number}]")
        for node in (n for n in shown if layer[n] == depth):
            lines += _ascii_node(node, snap, back)
    return "\n".join(lines)


def _ascii_node(node: str, snap: GraphSnapshot, back: set[tuple[str, str]]) -> list[str]:
    """The lines of one node: its name (with members for a group), then one per successor."""
    head = _printable(node)
    if node in snap.groups:
        head += " = (" + " | ".join(_printable(m) for m in snap.groups[node]) + ")"
    lines = [f"  {head}"]
    for succ in snap.adjacency[node]:
        mark = "  (loop)" if (node, succ) in back else ""
        lines.append(f"      --> {_printable(succ)}{mark}")
    return lines


def _printable(text: str) -> str:
    """``text`` on one line: control characters shown as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _layers(snap: GraphSnapshot) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Longest-path layer of every node, and the back edges ignored to compute it.

    Group membership counts as an edge here, so members sit below their group.
    """
    adjacency = {
        node: tuple(dict.fromkeys((*succs, *snap.groups.get(node, ()))))
        for node, succs in snap.adjacency.items()
    }
    back, _ = _depth_first(adjacency)
    forward = {
        node: [d for d in succs if d in adjacency and (node, d) not in back]
        for node, succs in adjacency.items()
    }
    indegree = dict.fromkeys(adjacency, 0)
    for succs in forward.values():
        for dst in succs:
            indegree[dst] += 1
    layer = dict.fromkeys(adjacency, 0)
    ready = deque(n for n in adjacency if indegree[n] == 0)
    while ready:
        node = ready.popleft()
        for dst in forward[node]:
            layer[dst] = max(layer[dst], layer[node] + 1)
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    return layer, back


def _depth_first(
    adjacency: Mapping[str, tuple[str, ...]],
) -> tuple[set[tuple[str, str]], list[list[str]]]:
    """Back edges and the cycle each closes, from one iterative depth-first search.

    Iterative so that long chains cannot hit the recursion limit. The search starts from
    the nodes without predecessors, then from any node left unvisited, in insertion order.
    """
    targets = {dst for succs in adjacency.values() for dst in succs}
    order = [n for n in adjacency if n not in targets] + [n for n in adjacency if n in targets]
    on_path: dict[str, int] = {}
    done: set[str] = set()
    back: set[tuple[str, str]] = set()
    cycles: list[list[str]] = []
    for root in order:
        if root in done:
            continue
        path = [root]
        on_path[root] = 0
        stack: list[Iterator[str]] = [iter(adjacency.get(root, ()))]
        while stack:
            succ = next(stack[-1], None)
            if succ is None:
                stack.pop()
                done.add(path[-1])
                del on_path[path.pop()]
            elif succ in on_path:
                back.add((path[-1], succ))
                cycles.append(path[on_path[succ] :])
            elif succ not in done:
                on_path[succ] = len(path)
                path.append(succ)
                stack.append(iter(adjacency.get(succ, ())))
    return back, cycles


# -- argument checks --------------------------------------------------------------------------


def _check_statuses(statuses: Mapping[str, str] | None) -> None:
    """Raise ValueError for a status outside STATUSES."""
    for node_id, status in (statuses or {}).items():
        if status not in _STATUS_COLOURS:
            raise ValueError(
                f"unknown status {status!r} for node {node_id!r}; expected one of "
                f"{sorted(_STATUS_COLOURS)}"
            )


def _check_colours(node_colors: Mapping[str, str] | None) -> None:
    """Raise ValueError for a colour that is not ``#hex`` or a plain name."""
    for node_id, colour in (node_colors or {}).items():
        if not _COLOUR.fullmatch(colour):
            raise ValueError(
                f"colour {colour!r} for node {node_id!r} must be '#rrggbb' or a colour name"
            )
