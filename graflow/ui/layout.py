"""Where each task of a run's graph is drawn: a layered layout, left to right.

A task's column is the length of the longest path to it from a task with no predecessor; a
parallel group fans out to its members, which fan in to the group's successors, the way the
group runs. Edges that close a loop are kept but do not push their target further right.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

__all__ = ["BOX_H", "BOX_W", "MAX_NODES", "layout"]

BOX_W, BOX_H = 130, 30
_GAP_X, _GAP_Y, _MARGIN = 40, 12, 16
MAX_NODES = 400
"""Past this many tasks the page shows the task table and the timeline, not the graph."""


def _edges(graph: dict[str, Any]) -> list[tuple[str, str]]:
    """The edges to draw: plain edges, a group to its members and its members onwards."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.get("edges", []):
        succ[a].append(b)
    out: list[tuple[str, str]] = []
    members_of = {n["id"]: n.get("members") or [] for n in graph.get("nodes", [])}
    for node_id, members in members_of.items():
        if not members:
            out.extend((node_id, b) for b in succ.get(node_id, []))
            continue
        for member in members:
            out.append((node_id, member))
            out.extend((member, b) for b in succ.get(node_id, []))
    return out


def _columns(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: its longest distance from a source (Kahn's order; loops last)."""
    succ: dict[str, list[str]] = defaultdict(list)
    indegree = dict.fromkeys(ids, 0)
    for a, b in edges:
        if a in indegree and b in indegree:
            succ[a].append(b)
            indegree[b] += 1
    column = dict.fromkeys(ids, 0)
    ready = deque(i for i in ids if indegree[i] == 0)
    placed: set[str] = set()
    while len(placed) < len(ids):
        if not ready:  # the rest sit on loops: take the first one as if it were a source
            ready.append(next(i for i in ids if i not in placed))
        node = ready.popleft()
        if node in placed:
            continue
        placed.add(node)
        for nxt in succ[node]:
            if nxt in placed:
                continue  # an edge back into a loop
            column[nxt] = max(column[nxt], column[node] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return column


def layout(graph: dict[str, Any]) -> dict[str, Any]:
    """Boxes and edges of ``graph`` (as ``graph_summary`` makes it), in SVG user units.

    ``{"nodes": [{"id", "kind", "x", "y"}], "edges": [[from, to]], "box": [w, h], "width",
    "height"}``;
    ``{"too_large": n}`` instead past ``MAX_NODES`` tasks.
    """
    nodes = graph.get("nodes", [])
    if len(nodes) > MAX_NODES:
        return {"too_large": len(nodes), "nodes": [], "edges": [], "width": 0, "height": 0}
    ids = [n["id"] for n in nodes]
    edges = _edges(graph)
    column = _columns(ids, edges)
    rows: dict[int, int] = defaultdict(int)
    placed = []
    for node in nodes:
        col = column[node["id"]]
        row = rows[col]
        rows[col] += 1
        placed.append(
            {
                "id": node["id"],
                "kind": node.get("kind", "Task"),
                "x": _MARGIN + col * (BOX_W + _GAP_X),
                "y": _MARGIN + row * (BOX_H + _GAP_Y),
            }
        )
    known = set(ids)
    columns = max(column.values(), default=0) + 1
    height = max(rows.values(), default=0)
    return {
        "nodes": placed,
        "edges": [[a, b] for a, b in edges if a in known and b in known],
        "box": [BOX_W, BOX_H],
        "width": 2 * _MARGIN + columns * (BOX_W + _GAP_X) - _GAP_X,
        "height": 2 * _MARGIN + height * (BOX_H + _GAP_Y) - _GAP_Y,
    }
