"""The boxed text drawing of a graph that ``print(graph)`` and ``wf.show_info()`` show.

Each node is a box (``+---+`` around `` name ``; a parallel group is two double-lined boxes,
its fork and its join ``↣ name``) and edges are lines of ``*``. Layout, without a plotting
library, by the layered method of Sugiyama et al., step by step as upstream Graflow's
drawing gets it, so that scripts print the same picture:

1. connected pieces: only the one holding the first node is drawn;
2. loops are broken by turning round the edges a depth-first search finds going back;
3. ranks: a node sits one rank below its lowest predecessor; then a node is pulled down
   next to its successors when all of them lie below it;
4. edges longer than one rank get a dummy node in every rank they cross;
5. order within a rank: barycentres of the neighbours, then one pass of swapping
   neighbours that cross less the other way, downwards, upwards, downwards again;
6. x: the four Brandes-Köpf alignments (up/down x left/right), each compacted, and the
   mean of their two middle values; y: ranks 6 lines apart;
7. an edge runs from where the line between box centres leaves one box to where it
   enters the other, through its dummies.

Then boxes are drawn over the edges on a character canvas.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect
from collections.abc import Iterator

from graflow.core.export import GraphSnapshot, to_ascii

__all__ = ["draw_boxes"]

_HEIGHT = 3  # every box is three lines high
_INF = float("inf")


class _Node:
    """A node of the layout (a box, or a dummy point of a long edge)."""

    def __init__(self, label: str, width: float, height: float, dummy: bool = False) -> None:
        self.label = label
        self.w = width
        self.h = height
        self.dummy = dummy
        self.edges: list[_Edge] = []
        self.rank = -1
        self.pos = 0
        self.bar = 0.0
        self.ctrl: dict[int, _Node] = {}  # a dummy's edge, by rank
        self.cache: dict[int, list[_Node]] | None = None
        self.root: _Node = self
        self.align: _Node = self
        self.sink: _Node = self
        self.shift = _INF
        self.x_block: float | None = None
        self.xs = [0.0, 0.0, 0.0, 0.0]
        self.xy = (0.0, 0.0)

    def ins(self) -> list[_Edge]:
        return [e for e in self.edges if e.head is self]

    def outs(self) -> list[_Edge]:
        return [e for e in self.edges if e.tail is self]

    def near(self, direction: int) -> list[_Node]:
        """Graph neighbours: predecessors (-1) or successors (+1); a dummy's along its edge."""
        if self.dummy:
            found = self.ctrl.get(self.rank + direction)
            return [found] if found is not None else []
        if direction < 0:
            return [e.tail for e in self.ins()]
        return [e.head for e in self.outs()]

    def edge_with(self, other: _Node) -> _Edge:
        return next(e for e in self.edges if other in (e.tail, e.head))

    def is_inner(self, direction: int) -> bool:
        """True for a dummy whose neighbour that way is a dummy too."""
        return self.dummy and any(n.dummy for n in self.near(direction)[:1])


class _Edge:
    def __init__(self, tail: _Node, head: _Node) -> None:
        self.tail = tail
        self.head = head
        self.turned = False  # breaks a loop: ranked and ordered the other way round

    def flip(self) -> None:
        self.tail, self.head = self.head, self.tail


class _LoopFinder:
    """Tarjan's depth-first search; an edge back to a node on the search path is turned."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.low: dict[int, int] = {}
        self.stack: list[_Node] = []
        self.on_stack: set[int] = set()
        self.visiting: set[int] = set()  # on the path of the search

    def visit(self, v: _Node) -> None:
        key = id(v)
        self.index[key] = self.low[key] = len(self.index) + 1
        self.stack.append(v)
        self.on_stack.add(key)
        self.visiting.add(key)
        for e in v.outs():
            w = id(e.head)
            if w not in self.index:
                self.visit(e.head)
                self.low[key] = min(self.low[key], self.low[w])
            elif w in self.visiting:
                e.turned = True
            if w in self.on_stack:
                self.low[key] = min(self.low[key], self.index[w])
        if self.low[key] == self.index[key]:
            while True:
                done = self.stack.pop()
                self.on_stack.discard(id(done))
                if done is v:
                    break
        self.visiting.discard(key)


class _Layout:
    """The layered layout of one connected piece."""

    def __init__(self, nodes: list[_Node], edges: list[_Edge], xspace: float) -> None:
        self.nodes = nodes
        self.edges = edges
        self.layers: list[list[_Node]] = []
        widths = sorted(n.w for n in nodes)
        self.dummy_w = widths[len(widths) // 2]
        self.xspace = xspace  # the narrowest box of the whole graph, drawn piece or not
        self.dirh = 1
        self.dirv = -1
        self.conflicts: set[tuple[int, int]] = set()

    # -- 2. loops and 3. ranks -------------------------------------------------------------
    def break_loops(self, roots: list[_Node]) -> None:
        finder = _LoopFinder()
        for v in [*roots, *self.nodes]:
            if id(v) not in finder.index:
                finder.visit(v)

    def _flip_turned(self) -> None:
        for e in self.edges:
            if e.turned:
                e.flip()

    def rank(self, roots: list[_Node]) -> None:
        self._flip_turned()
        unranked = roots + [v for v in self.nodes if not v.ins() and v not in roots]
        scanned: set[int] = set()
        while unranked:
            following: list[_Node] = []
            for v in unranked:
                self._set_rank(v)
                scanned.update(id(e) for e in v.outs())
                for x in v.near(+1):
                    if all(id(e) in scanned for e in x.ins()) and x not in following:
                        following.append(x)
            unranked = following
        self._pull_down()
        self._flip_turned()

    def _set_rank(self, v: _Node) -> None:
        v.rank = max([x.rank for x in v.near(-1)] + [-1]) + 1
        if v.rank == len(self.layers):
            self.layers.append([])
        self.layers[v.rank].append(v)

    def _pull_down(self) -> None:
        for layer in reversed(self.layers):
            for v in layer:
                for x in v.near(-1):
                    if all(y.rank >= v.rank for y in x.near(+1)):
                        self.layers[x.rank].remove(x)
                        x.rank = v.rank - 1
                        self.layers[x.rank].append(x)

    # -- 4. dummies ------------------------------------------------------------------------
    def add_dummies(self) -> dict[int, dict[int, _Node]]:
        chains: dict[int, dict[int, _Node]] = {}
        for e in self.edges:
            v0, v1 = e.tail, e.head
            if v0.rank > v1.rank:
                v0, v1 = v1, v0
            if v1.rank - v0.rank > 1:
                chain = chains[id(e)] = {v0.rank: v0, v1.rank: v1}
                for r in range(v0.rank + 1, v1.rank):
                    dummy = _Node("", self.dummy_w, _HEIGHT, dummy=True)
                    dummy.rank = r
                    dummy.ctrl = chain
                    chain[r] = dummy
                    self.layers[r].append(dummy)
        self.chains = chains
        for layer in self.layers:
            step = 1.0 / (len(layer) - 1) if len(layer) > 1 else 1.0
            for i, v in enumerate(layer):
                v.pos = i
                v.bar = i * step
        return chains

    def neighbours(self, v: _Node) -> list[_Node]:
        """The nodes next to ``v`` in the adjacent rank in the current vertical direction."""
        if v.cache is None:
            v.cache = {-1: v.near(-1), +1: v.near(+1)}
            if not v.dummy:
                for d in (-1, +1):
                    for i, x in enumerate(v.cache[d]):
                        if x.rank != v.rank + d:
                            v.cache[d][i] = self.chains[id(v.edge_with(x))][v.rank + d]
        return v.cache[self.dirv]

    def _previous(self, rank: int) -> list[_Node] | None:
        """The rank the current direction looks at (above when going down)."""
        other = rank + 1 if self.dirv == +1 else rank - 1
        return self.layers[other] if 0 <= other < len(self.layers) else None

    # -- 5. order --------------------------------------------------------------------------
    def order_all(self) -> None:
        self._sweep(oneway=False)
        self._sweep(oneway=True)

    def _sweep(self, oneway: bool) -> None:
        self.dirv = -1
        crossings = 0
        for rank in range(len(self.layers)):
            crossings += self._order(rank)
        if oneway or crossings == 0:
            return
        self.dirv = +1
        for rank in reversed(range(len(self.layers))):
            self._order(rank)

    def _order(self, rank: int) -> int:
        self._flip_turned()
        layer = self.layers[rank]
        count = self._crossings(layer)
        if count > 0:
            for v in layer:
                v.bar = self._mean_bar(v, rank)
            layer.sort(key=lambda n: n.bar)
            count = self._swap_pass(layer)
            step = 1.0 / (len(layer) - 1) if len(layer) > 1 else 1.0
            for i, v in enumerate(layer):
                v.pos = i
                v.bar = i * step
        self._flip_turned()
        return count

    def _mean_bar(self, v: _Node, rank: int) -> float:
        if not self._previous(rank):
            return v.bar
        bars = [x.bar for x in self.neighbours(v)]
        return sum(bars) / len(bars) if bars else v.bar

    def _crossings(self, layer: list[_Node]) -> int:
        ends: list[int] = []
        for v in layer:
            ends.extend(sorted(x.pos for x in self.neighbours(v)))
        seen: list[int] = []
        count = 0
        for i, p in enumerate(ends):
            j = bisect(seen, p)
            count += i - j
            seen.insert(j, p)
        return count

    def _swap_pass(self, layer: list[_Node]) -> int:
        total = 0
        for i in range(len(layer) - 1):
            left = [x.bar for x in self.neighbours(layer[i])]
            keep = turn = 0
            for b in (x.bar for x in self.neighbours(layer[i + 1])):
                above = len([a for a in left if a > b])
                keep += above
                turn += len(left) - above
            if turn < keep:
                layer[i], layer[i + 1] = layer[i + 1], layer[i]
                total += turn
            else:
                total += keep
        return total

    # -- 6. coordinates --------------------------------------------------------------------
    def place(self) -> None:
        self._flip_turned()
        self._find_conflicts()
        for dirvh, (dirh, dirv) in enumerate(((1, -1), (-1, -1), (1, 1), (-1, 1))):
            self.dirh, self.dirv = dirh, dirv
            self._align()
            self._compact(dirvh)
        self.dirh, self.dirv = 1, -1
        top = 0.0
        for layer in self.layers:
            half = max(v.h / 2.0 for v in layer)
            for v in layer:
                xs = sorted(v.xs)
                v.xy = ((xs[1] + xs[2]) / 2.0, top + half)
            top += 2 * half + _HEIGHT
        self._flip_turned()

    def _find_conflicts(self) -> None:
        self.dirh, self.dirv = 1, -1
        for rank, layer in enumerate(self.layers):
            above = self._previous(rank)
            if not above:
                continue
            k0, start, last = 0, 0, len(layer) - 1
            for l1, v in enumerate(layer):
                if not v.dummy:
                    continue
                if l1 == last or v.is_inner(-1):
                    k1 = v.near(-1)[-1].pos if v.is_inner(-1) else len(above) - 1
                    for vl in layer[start : l1 + 1]:
                        for vk in self.neighbours(vl):
                            if vk.pos < k0 or vk.pos > k1:
                                self.conflicts.add((id(vk), id(vl)))
                    start = l1 + 1
                    k0 = k1

    def _align(self) -> None:
        dirh, dirv = self.dirh, self.dirv
        for rank in range(len(self.layers)) if dirv == -1 else reversed(range(len(self.layers))):
            above = self._previous(rank)
            if not above:
                continue
            taken: int | None = None
            for vk in self.layers[rank][::dirh]:
                for m in self._medians(vk):
                    um = above[m]
                    if vk.align is not vk:
                        continue
                    pair = (id(vk), id(um)) if dirv == 1 else (id(um), id(vk))
                    if pair not in self.conflicts and (taken is None or dirh * taken < dirh * m):
                        um.align = vk
                        vk.root = um.root
                        vk.align = vk.root
                        taken = m

    def _medians(self, v: _Node) -> list[int]:
        pos = sorted(x.pos for x in self.neighbours(v))[:: self.dirh]
        if not pos:
            return []
        i, odd = divmod(len(pos) - 1, 2)
        return [pos[i]] if odd == 0 else [pos[i], pos[i + odd]]

    def _ranks_in_order(self) -> Iterator[list[_Node]]:
        return iter(self.layers if self.dirv == -1 else self.layers[::-1])

    def _compact(self, dirvh: int) -> None:
        dirh = self.dirh
        for layer in self._ranks_in_order():
            for v in layer[::dirh]:
                if v.root is v:
                    self._place_block(v)
        if dirh == -1:
            for v in self._all():
                if v.x_block:
                    v.x_block = -v.x_block
        for v in self._all():
            root = v.root
            assert root.x_block is not None
            shift = root.sink.shift
            v.xs[dirvh] = root.x_block + (dirh * shift if shift < _INF else 0.0)
        for v in self._all():
            v.root = v.align = v.sink = v
            v.shift = _INF
            v.x_block = None

    def _all(self) -> Iterator[_Node]:
        for layer in self.layers:
            yield from layer

    def _place_block(self, v: _Node) -> None:
        if v.x_block is not None:
            return
        v.x_block = 0.0
        w = v
        while True:
            j = w.pos - self.dirh
            layer = self.layers[w.rank]
            if 0 <= j < len(layer):
                before = layer[j]
                delta = self.xspace + (before.w + w.w) / 2.0
                u = before.root
                self._place_block(u)
                assert u.x_block is not None
                if v.sink is v:
                    v.sink = u.sink
                if v.sink is not u.sink:
                    sink = u.sink
                    sink.shift = min(sink.shift, v.x_block - (u.x_block + delta))
                else:
                    v.x_block = max(v.x_block, u.x_block + delta)
            w = w.align
            if w is v:
                break

    # -- 7. edges --------------------------------------------------------------------------
    def routes(self) -> list[list[tuple[float, float]]]:
        paths = []
        for e in self.edges:
            points = [e.tail.xy]
            chain = self.chains.get(id(e))
            if chain is not None:
                r0, r1 = e.tail.rank, e.head.rank
                ranks = range(r0 + 1, r1) if r0 < r1 else range(r0 - 1, r1, -1)
                points += [chain[r].xy for r in ranks]
            points.append(e.head.xy)
            points[0] = _leave_box(e.tail, points[1])
            points[-1] = _leave_box(e.head, points[-2])
            paths.append(points)
        return paths


def _crossing(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> tuple[float, float] | None:
    """Where segment a-b meets segment c-d, if it does."""
    bx, by = b[0] - a[0], b[1] - a[1]
    dx, dy = d[0] - c[0], d[1] - c[1]
    det = bx * dy - by * dx
    if det == 0:
        return None
    cx, cy = c[0] - a[0], c[1] - a[1]
    t = (cx * by - cy * bx) / det
    if t < 0.0 or t > 1.0:
        return None
    t = (cx * dy - cy * dx) / det
    if t < 0.0 or t > 1.0:
        return None
    return (a[0] + t * bx, a[1] + t * by)


def _leave_box(node: _Node, toward: tuple[float, float]) -> tuple[float, float]:
    """Where the line from ``node``'s centre to ``toward`` crosses the box's border."""
    far = (toward[0] - node.xy[0], toward[1] - node.xy[1])
    half_w, half_h = int(node.w) // 2, int(node.h) // 2
    sides = (
        ((-half_w, -half_h), (half_w, -half_h)),
        ((half_w, -half_h), (half_w, half_h)),
        ((-half_w, half_h), (half_w, half_h)),
        ((-half_w, half_h), (-half_w, -half_h)),
    )
    for start, end in sides:
        hit = _crossing((0.0, 0.0), far, start, end)
        if hit is not None:
            return (hit[0] + node.xy[0], hit[1] + node.xy[1])
    raise ValueError(f"edge of {node.label.strip()!r} starts inside its box")


# -- the picture --------------------------------------------------------------------------
def _expand_groups(snap: GraphSnapshot) -> tuple[list[str], list[tuple[str, str]], set[str]]:
    """Nodes and edges with each group as a fork node and a join node ``↣ name``."""
    nodes = list(snap.nodes)
    edges = list(snap.edges)
    doubled: set[str] = set()
    for group, members in snap.groups.items():
        preds = [s for s, t in snap.edges if t == group]
        outside = [t for s, t in snap.edges if s == group and t not in members]
        join = f"↣ {group}"
        doubled.update((group, join))
        nodes = [n for n in nodes if n != group] + [group, join]
        edges = [(s, t) for s, t in edges if group not in (s, t)]
        nodes += [m for m in members if m not in nodes]
        edges += [(p, group) for p in preds]
        for member in members:
            edges += [(group, member), (member, join)]
        edges += [(join, t) for t in outside if t in nodes]
        edges = list(dict.fromkeys(edges))
    return nodes, _by_source(nodes, edges), doubled


def _by_source(nodes: list[str], edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Edges in the order a directed graph lists them: by source node, then insertion."""
    rank = {n: i for i, n in enumerate(nodes)}
    return sorted(edges, key=lambda e: rank[e[0]])


def _first_piece(names: list[str], edges: list[tuple[str, str]]) -> tuple[list[_Node], list[_Edge]]:
    """The connected piece drawn: nodes in the order merging pieces edge by edge gives."""
    made = {n: _Node(f" {n} ", len(n) + 4, _HEIGHT) for n in names}
    piece_of: dict[str, list[str]] = {n: [n] for n in names}
    pieces: list[list[str]] = [piece_of[n] for n in names]
    links: list[_Edge] = []
    for tail, head in edges:
        if tail == head:
            continue  # a self-loop has no line to draw in this style (upstream raises)
        edge = _Edge(made[tail], made[head])
        for end in (edge.tail, edge.head):
            if edge not in end.edges:
                end.edges.append(edge)
        links.append(edge)
        a, b = piece_of[tail], piece_of[head]
        if a is not b:
            a.extend(n for n in b if n not in a)
            pieces = [p for p in pieces if p is not b]
            for n in b:
                piece_of[n] = a
    first = pieces[0]
    members = set(first)
    return [made[n] for n in first], [e for e in links if e.tail.label.strip() in members]


def _single_column(nodes: list[str]) -> str:
    width = max(len(n) for n in nodes) + 2
    rule = "+" + "-" * width + "+\n"
    rows = []
    for node in nodes:
        text = node[: width - 2]
        pad = width - len(text)
        rows.append(f"|{' ' * (pad // 2)}{text}{' ' * (pad - pad // 2)}|")
    return rule + f"\n{rule}".join(rows) + f"\n{rule}"


def draw_boxes(snap: GraphSnapshot) -> str:
    """The boxed drawing of ``snap`` (``"Empty graph"`` when it has no nodes)."""
    if not snap.nodes:
        return "Empty graph"
    if not snap.edges:
        return _single_column(list(snap.nodes))
    names, edges, doubled = _expand_groups(snap)
    if all(tail == head for tail, head in edges):
        return _single_column(list(snap.nodes))
    nodes, links = _first_piece(names, edges)
    layout = _Layout(nodes, links, xspace=min(len(n) + 4 for n in names))
    roots = [v for v in nodes if not v.ins()]
    layout.break_loops(roots)
    layout.rank(roots)
    layout.add_dummies()
    layout.order_all()
    layout.place()
    try:
        return _paint(layout, layout.routes(), doubled)
    except ValueError:
        # A shape this drawing cannot route (upstream raises): list the layers instead.
        return to_ascii(snap)


def _paint(layout: _Layout, paths: list[list[tuple[float, float]]], doubled: set[str]) -> str:
    boxes = layout.nodes
    xs = [x for v in boxes for x in (v.xy[0] - v.w / 2.0, v.xy[0] + v.w / 2.0)]
    ys = [y for v in boxes for y in (v.xy[1], v.xy[1] + v.h)]
    xs += [p[0] for path in paths for p in path]
    ys += [p[1] for path in paths for p in path]
    min_x, min_y = min(xs), min(ys)
    canvas = _Canvas(math.ceil(math.ceil(max(xs)) - math.floor(min_x)) + 1, round(max(ys) - min_y))
    for path in paths:
        for (x0, y0), (x1, y1) in itertools.pairwise(path):
            canvas.line(round(x0 - min_x), round(y0 - min_y), round(x1 - min_x), round(y1 - min_y))
    for v in boxes:
        left = round(v.xy[0] - v.w / 2.0 - min_x)
        top = round(v.xy[1] - min_y)
        canvas.box(left, top, int(v.w), int(v.h), double=v.label.strip() in doubled)
        canvas.text(left + 1, top + 1, v.label)
    return canvas.render()


class _Canvas:
    def __init__(self, cols: int, lines: int) -> None:
        self.cols = cols
        self.cells = [[" "] * cols for _ in range(lines)]

    def put(self, x: int, y: int, char: str) -> None:
        if not (0 <= y < len(self.cells) and 0 <= x < self.cols):
            raise ValueError(f"point ({x}, {y}) outside the {self.cols}x{len(self.cells)} canvas")
        self.cells[y][x] = char

    def line(self, x0: int, y0: int, x1: int, y1: int) -> None:
        if x0 > x1:
            x0, y0, x1, y1 = x1, y1, x0, y0
        dx, dy = x1 - x0, y1 - y0
        if dx == 0 and dy == 0:
            self.put(x0, y0, "*")
        elif abs(dx) >= abs(dy):
            for x in range(x0, x1 + 1):
                self.put(x, y0 + round((x - x0) * dy / float(dx)), "*")
        elif y0 < y1:
            for y in range(y0, y1 + 1):
                self.put(x0 + round((y - y0) * dx / float(dy)), y, "*")
        else:
            for y in range(y1, y0 + 1):
                self.put(x1 + round((y - y1) * dx / float(dy)), y, "*")

    def text(self, x: int, y: int, text: str) -> None:
        for i, char in enumerate(text):
            self.put(x + i, y, char)

    def box(self, x0: int, y0: int, width: int, height: int, double: bool) -> None:
        h_edge, v_edge, corners = ("═", "║", "╔╗╚╝") if double else ("-", "|", "++++")
        right, bottom = x0 + width - 1, y0 + height - 1
        for x in range(x0, right):
            self.put(x, y0, h_edge)
            self.put(x, bottom, h_edge)
        for y in range(y0, bottom):
            self.put(x0, y, v_edge)
            self.put(right, y, v_edge)
        for (x, y), corner in zip(
            ((x0, y0), (right, y0), (x0, bottom), (right, bottom)), corners, strict=True
        ):
            self.put(x, y, corner)

    def render(self) -> str:
        return "\n".join("".join(row) for row in self.cells)
