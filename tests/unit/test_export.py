"""Mermaid, DOT and ASCII exports of a TaskGraph, and the graflow.utils.graph wrappers."""

from __future__ import annotations

import ast
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import graflow.core.export as export
from graflow.core.export import snapshot, to_ascii, to_dot, to_mermaid
from graflow.core.graph import TaskGraph
from graflow.utils.graph import (
    draw_ascii,
    draw_dot,
    draw_mermaid,
    draw_mermaid_png,
    draw_png,
    show_graph_info,
    visualize_dependencies,
)


class Step:
    """Stand-in for a task: only the id matters to the exporters."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


class Group(Step):
    """Stand-in for a parallel group: members under ``tasks`` and a ``with_execution`` method."""

    def __init__(self, task_id: str, tasks: list[Step]) -> None:
        super().__init__(task_id)
        self.tasks = tasks

    def with_execution(self) -> Group:
        return self


ODD_IDS = [
    'say "hi"',
    "with space",
    "dash-ed",
    "naïve-ü",
    "日本語",
    "end",
    "a#b<c>&d",
    "back\\slash",
    "tick`",
    "1digit",
    "semi;colon|pipe",
    "a b",
    "a_b",
    "a-b",
]


def build(edges: list[tuple[str, str]], groups: dict[str, list[str]] | None = None) -> TaskGraph:
    """A TaskGraph with ``Step`` nodes for every edge endpoint and a ``Group`` per group."""
    graph = TaskGraph()
    groups = groups or {}
    steps: dict[str, Step] = {}
    for node_id in [n for e in edges for n in e] + [m for ms in groups.values() for m in ms]:
        if node_id not in steps and node_id not in groups:
            steps[node_id] = Step(node_id)
            graph.add_node(steps[node_id])
    for group_id, members in groups.items():
        graph.add_node(Group(group_id, [steps[m] for m in members]))
    for src, dst in edges:
        graph.add_edge(src, dst)
    return graph


def pipeline() -> TaskGraph:
    """start -> group(a | b) -> join -> start (a loop), plus a self-loop on join."""
    return build(
        [("start", "grp"), ("grp", "join"), ("join", "start"), ("join", "join")],
        groups={"grp": ["a", "b"]},
    )


# -- Mermaid parsing helpers ------------------------------------------------------------------

_MERMAID_NODE = re.compile(r'^\s*(\w+)(?:\["(.*)"\]|\{\{"(.*)"\}\})$')
_MERMAID_EDGE = re.compile(r"^\s*(\w+) (-->|-\.-) (\w+)$")


def mermaid_unescape(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)


def parse_mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str]], set[tuple[str, str]]]:
    """Declared nodes (safe id -> label), solid edges and dashed links, by original ids."""
    labels: dict[str, str] = {}
    raw_edges: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        if node := _MERMAID_NODE.match(line):
            assert node.group(1) not in labels, f"declared twice: {line}"
            labels[node.group(1)] = mermaid_unescape(node.group(2) or node.group(3))
        elif edge := _MERMAID_EDGE.match(line):
            raw_edges.append((edge.group(1), edge.group(2), edge.group(3)))
    solid = {(labels[a], labels[b]) for a, kind, b in raw_edges if kind == "-->"}
    dashed = {(labels[a], labels[b]) for a, kind, b in raw_edges if kind == "-.-"}
    return labels, solid, dashed


def subgraph_blocks(text: str) -> dict[str, list[str]]:
    """Subgraph title -> safe ids declared inside it."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if m := re.match(r'^\s*subgraph \w+ \["(.*)"\]$', line):
            current = blocks.setdefault(mermaid_unescape(m.group(1)), [])
        elif line.strip() == "end":
            current = None
        elif current is not None and (node := _MERMAID_NODE.match(line)):
            current.append(node.group(1))
    return blocks


# -- DOT parsing helpers ----------------------------------------------------------------------

_DOT_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|->|[{}\[\];=,]|[A-Za-z_][\w.]*|#\w+|\S')


def dot_unquote(token: str) -> str:
    assert token.startswith('"') and token.endswith('"'), token
    return escstring(token[1:-1])


def parse_dot(text: str) -> tuple[dict[str, str], set[tuple[str, str]], set[tuple[str, str]]]:
    """Node id -> label, solid edges and dashed edges of the generated DOT."""
    tokens = _DOT_TOKEN.findall(text)
    assert tokens[:3] == ["digraph", tokens[1], "{"] and tokens[-1] == "}"
    depth = 0
    for tok in tokens:
        depth += {"{": 1, "}": -1}.get(tok, 0)
        assert depth >= 0
    assert depth == 0
    nodes: dict[str, str] = {}
    solid: set[tuple[str, str]] = set()
    dashed: set[tuple[str, str]] = set()
    for statement in _split_statements(tokens):
        attrs = _attrs(statement)
        if len(statement) >= 3 and statement[1] == "->":
            edge = (dot_unquote(statement[0]), dot_unquote(statement[2]))
            (dashed if attrs.get("style") == "dashed" else solid).add(edge)
        elif statement and statement[0].startswith('"') and (len(statement) == 1 or attrs):
            nodes[dot_unquote(statement[0])] = attrs.get("label", "")
    return nodes, solid, dashed


def _split_statements(tokens: list[str]) -> list[list[str]]:
    statements: list[list[str]] = []
    current: list[str] = []
    for tok in tokens[3:-1]:
        if tok in {";", "{", "}"}:
            if current:
                statements.append(current)
            current = []
        else:
            current.append(tok)
    return statements


def _attrs(statement: list[str]) -> dict[str, str]:
    if "[" not in statement:
        return {}
    body = statement[statement.index("[") + 1 : statement.index("]")]
    pairs = [body[i : i + 3] for i in range(0, len(body), 4)]
    out = {}
    for key, eq, value in pairs:
        assert eq == "="
        out[key] = dot_unquote(value) if value.startswith('"') else value
    return out


def graphviz_json(text: str) -> dict[str, object]:
    done = subprocess.run(
        [shutil.which("dot") or "dot", "-Tjson"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert not done.stderr, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def escstring(text: str) -> str:
    """What Graphviz shows for a label: ``\\\\`` is a backslash, ``\\n`` a line break."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed")


# -- Mermaid ----------------------------------------------------------------------------------


def test_mermaid_has_every_node_and_edge() -> None:
    graph = build([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    text = to_mermaid(graph)
    assert text.startswith("flowchart TD\n")
    labels, solid, dashed = parse_mermaid(text)
    assert sorted(labels.values()) == ["a", "b", "c", "d"]
    assert solid == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert dashed == set()


def test_mermaid_sanitises_odd_ids_and_keeps_them_as_labels() -> None:
    graph = build(list(itertools.pairwise(ODD_IDS)))
    labels, solid, _ = parse_mermaid(to_mermaid(graph))
    assert sorted(labels.values()) == sorted(ODD_IDS)
    assert solid == set(itertools.pairwise(ODD_IDS))
    for safe_id in labels:
        assert re.fullmatch(r"n_[A-Za-z0-9_]+", safe_id), safe_id
    assert len(set(labels)) == len(ODD_IDS)
    for line in to_mermaid(graph).splitlines():
        if _MERMAID_NODE.match(line):
            label = line[line.index('"') + 1 : line.rindex('"')]
            assert not set(label) & set('"<>`'), line


def test_mermaid_title_direction_and_bad_arguments() -> None:
    graph = build([("a", "b")])
    text = to_mermaid(graph, title='My "flow"\nsecond line', direction="LR")
    assert text.splitlines()[:4] == [
        "---",
        'title: "My \\"flow\\" second line"',
        "---",
        "flowchart LR",
    ]
    with pytest.raises(ValueError, match="direction"):
        to_mermaid(graph, direction="sideways")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        to_mermaid(graph, statuses={"a": "done"})
    with pytest.raises(ValueError, match="colour"):
        to_mermaid(graph, node_colors={"a": "red;stroke:blue"})


def test_mermaid_renders_groups_as_subgraphs_with_membership_links() -> None:
    text = to_mermaid(pipeline())
    labels, solid, dashed = parse_mermaid(text)
    assert solid == {("start", "grp"), ("grp", "join"), ("join", "start"), ("join", "join")}
    assert dashed == {("grp", "a"), ("grp", "b")}
    blocks = subgraph_blocks(text)
    assert [labels[s] for s in blocks["grp"]] == ["a", "b"]
    group_id = next(s for s, label in labels.items() if label == "grp")
    assert f'{group_id}{{{{"grp"}}}}' in text
    assert f"class {group_id} group" in text


def test_mermaid_group_members_outside_the_graph_are_still_drawn() -> None:
    graph = TaskGraph()
    graph.add_node(Group("g", [Step("x"), Step("y")]))
    labels, _, dashed = parse_mermaid(to_mermaid(graph))
    assert sorted(labels.values()) == ["g", "x", "y"]
    assert dashed == {("g", "x"), ("g", "y")}


def test_mermaid_member_of_two_groups_is_declared_once() -> None:
    graph = build([], groups={"g1": ["shared", "a"], "g2": ["shared", "b"]})
    text = to_mermaid(graph)
    labels, _, dashed = parse_mermaid(text)
    assert sorted(labels.values()) == ["a", "b", "g1", "g2", "shared"]
    assert dashed == {("g1", "shared"), ("g1", "a"), ("g2", "shared"), ("g2", "b")}
    blocks = subgraph_blocks(text)
    assert [labels[s] for s in blocks["g1"]] == ["shared", "a"]
    assert [labels[s] for s in blocks["g2"]] == ["b"]


def test_mermaid_statuses_and_colours() -> None:
    graph = build([("a", "b"), ("b", "c")])
    text = to_mermaid(
        graph,
        statuses={"a": "succeeded", "b": "running", "zz": "failed"},
        node_colors={"c": "#abc"},
    )
    assert "classDef succeeded fill:#e8f5e9,stroke:#43a047" in text
    assert "class n_a succeeded" in text
    assert "class n_b running" in text
    assert "failed" not in text
    assert "style n_c fill:#abc" in text
    plain = to_mermaid(graph, statuses={"a": "failed"}, with_styles=False)
    assert "classDef" not in plain and "class " not in plain and "style " not in plain


def test_mermaid_empty_graph() -> None:
    assert to_mermaid(TaskGraph()) == "flowchart TD\n"


# -- DOT --------------------------------------------------------------------------------------


def test_dot_has_every_node_and_edge() -> None:
    graph = build([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    text = to_dot(graph, name="my flow")
    assert text.startswith('digraph "my flow" {\n')
    nodes, solid, dashed = parse_dot(text)
    assert nodes == {n: n for n in "abcd"}
    assert solid == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert dashed == set()


def test_dot_quotes_odd_ids() -> None:
    ids = [*ODD_IDS, "line\nbreak", "tail\\", 'x"; "y']
    graph = build(list(itertools.pairwise(ids)))
    nodes, solid, _ = parse_dot(to_dot(graph))
    assert sorted(nodes) == sorted(ids)
    assert all(nodes[n] == n for n in ids)
    assert solid == set(itertools.pairwise(ids))
    assert len(to_dot(graph).splitlines()) == len(ids) * 2 + 2


def test_dot_groups_become_dashed_clusters() -> None:
    text = to_dot(pipeline())
    nodes, solid, dashed = parse_dot(text)
    assert sorted(nodes) == ["a", "b", "grp", "join", "start"]
    assert solid == {("start", "grp"), ("grp", "join"), ("join", "start"), ("join", "join")}
    assert dashed == {("grp", "a"), ("grp", "b")}
    cluster = re.search(r'subgraph "cluster_0" \{(.*?)\n    \}', text, re.S)
    assert cluster is not None
    assert 'label="grp";' in cluster.group(1)
    assert '"a" [label="a"];' in cluster.group(1) and '"b" [label="b"];' in cluster.group(1)
    assert '"grp" [label="grp", shape=hexagon];' in text


def test_dot_statuses() -> None:
    graph = build([("a", "b")])
    text = to_dot(graph, statuses={"a": "failed"}, node_colors={"b": "lightblue"})
    assert '"a" [label="a", color="#e53935", style="rounded,filled", fillcolor="#ffebee"];' in text
    assert '"b" [label="b", style="rounded,filled", fillcolor="lightblue"];' in text
    with pytest.raises(ValueError, match="unknown status"):
        to_dot(graph, statuses={"a": "exploded"})


def test_dot_empty_graph() -> None:
    text = to_dot(TaskGraph())
    assert parse_dot(text) == ({}, set(), set())


@needs_dot
def test_graphviz_accepts_dot_output() -> None:
    ids = [*ODD_IDS, "line\nbreak", "tail\\"]
    graph = build(
        [*itertools.pairwise(ids), (ids[-1], ids[0]), ("grp", ids[0])],
        groups={"grp": ["m1", "m2"]},
    )
    graph.add_edge(ids[3], ids[3])
    text = to_dot(graph, statuses={ids[0]: "running"}, node_colors={ids[1]: "#ff0000"})
    result = graphviz_json(text)
    objects = result["objects"]
    assert isinstance(objects, list)
    by_gvid = {o["_gvid"]: o for o in objects if "nodes" not in o}
    labels = {gvid: escstring(o["label"]) for gvid, o in by_gvid.items()}
    assert sorted(labels.values()) == sorted([*ids, "grp", "m1", "m2"])
    edges = result["edges"]
    assert isinstance(edges, list)
    drawn = {(labels[e["tail"]], labels[e["head"]], e.get("style", "")) for e in edges}
    expected = {(a, b, "") for a, b in graph.edges} | {
        ("grp", "m1", "dashed"),
        ("grp", "m2", "dashed"),
    }
    assert drawn == expected
    clusters = [o for o in objects if o.get("name") == "cluster_0"]
    assert [sorted(labels[n] for n in c["nodes"]) for c in clusters] == [["m1", "m2"]]


# -- ASCII ------------------------------------------------------------------------------------


def test_ascii_empty_graph() -> None:
    assert to_ascii(TaskGraph()) == "Empty graph"
    assert str(TaskGraph()) == "Empty graph"


def test_ascii_layers_nodes_and_edges() -> None:
    graph = build([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")])
    assert to_ascii(graph) == "\n".join(
        [
            "Graph: 4 nodes, 5 edges",
            "[layer 0]",
            "  a",
            "      --> b",
            "      --> c",
            "      --> d",
            "[layer 1]",
            "  b",
            "      --> d",
            "  c",
            "      --> d",
            "[layer 2]",
            "  d",
        ]
    )
    assert str(graph) == draw_ascii(graph)


def test_ascii_groups_and_loops() -> None:
    assert to_ascii(pipeline()) == "\n".join(
        [
            "Graph: 5 nodes, 4 edges",
            "[layer 0]",
            "  start",
            "      --> grp",
            "[layer 1]",
            "  grp = (a | b)",
            "      --> join",
            "[layer 2]",
            "  join",
            "      --> start  (loop)",
            "      --> join  (loop)",
        ]
    )


def test_ascii_member_with_edges_gets_its_own_entry() -> None:
    graph = build([("start", "grp"), ("a", "after")], groups={"grp": ["a", "b"]})
    text = to_ascii(graph)
    assert "  grp = (a | b)" in text
    assert "  a\n      --> after" in text
    assert "\n  b\n" not in text + "\n"
    assert text.index("grp = (a | b)") < text.index("  a\n") < text.index("  after")


def test_ascii_is_deterministic_and_shows_every_edge() -> None:
    edges = [(f"n{i}", f"n{(i * 7 + 3) % 20}") for i in range(20)]
    first, second = to_ascii(build(edges)), to_ascii(build(edges))
    assert first == second
    for src, dst in edges:
        block = first[first.index(f"\n  {src}\n") :]
        assert re.match(rf"\n  {src}\n(      --> .*\n)*      --> {dst}( |\n|$)", block + "\n")


def test_ascii_pure_cycle_and_odd_ids() -> None:
    graph = build([("x", "y\nz"), ("y\nz", "x")])
    assert to_ascii(graph) == "\n".join(
        [
            "Graph: 2 nodes, 2 edges",
            "[layer 0]",
            "  x",
            "      --> y\\nz",
            "[layer 1]",
            "  y\\nz",
            "      --> x  (loop)",
        ]
    )


def test_long_chain_does_not_hit_the_recursion_limit() -> None:
    count = sys.getrecursionlimit() + 500
    graph = build([(f"t{i}", f"t{i + 1}") for i in range(count)] + [(f"t{count}", "t0")])
    text = to_ascii(graph)
    assert text.endswith(f"[layer {count}]\n  t{count}\n      --> t0  (loop)")
    assert snapshot(graph).cycles() == [[f"t{i}" for i in range(count + 1)]]
    assert to_mermaid(graph).count(" --> ") == count + 1
    assert to_dot(graph).count(" -> ") == count + 1


# -- snapshot and networkx input --------------------------------------------------------------


def test_snapshot_reads_task_graph() -> None:
    graph = pipeline()
    snap = snapshot(graph)
    assert snap.nodes == ("start", "join", "a", "b", "grp")
    assert snap.edges == (("start", "grp"), ("join", "start"), ("join", "join"), ("grp", "join"))
    assert snap.groups == {"grp": ("a", "b")}
    assert snap.predecessors("join") == ("join", "grp")
    assert snap.start_nodes() == graph.get_start_nodes() == ["a", "b"]
    assert snap.cycles() == [["start", "grp", "join"], ["join"]]
    assert snapshot(snap) is snap


def test_networkx_graph_renders_like_task_graph() -> None:
    pytest.importorskip("networkx")
    graph = pipeline()
    nx_graph = graph.nx_graph()
    assert draw_ascii(nx_graph) == draw_ascii(graph)
    assert draw_mermaid(nx_graph) == draw_mermaid(graph)
    assert draw_dot(nx_graph) == draw_dot(graph)


def test_networkx_graph_with_non_string_nodes() -> None:
    nx = pytest.importorskip("networkx")
    nx_graph = nx.DiGraph()
    nx_graph.add_edges_from([(1, 2), (2, (3, "x"))])
    labels, solid, _ = parse_mermaid(draw_mermaid(nx_graph))
    assert sorted(labels.values()) == ["(3, 'x')", "1", "2"]
    assert solid == {("1", "2"), ("2", "(3, 'x')")}


# -- graflow.utils.graph ----------------------------------------------------------------------


def test_draw_mermaid_defaults_and_wrapping() -> None:
    graph = build([("load the raw input data", "b")])
    text = draw_mermaid(graph, wrap_label_n_words=2)
    assert text.startswith('---\ntitle: "Graph"\n---\nflowchart TD\n')
    assert '["load the<br>raw input<br>data"]' in text
    assert '["load the raw input data"]' in draw_mermaid(graph)
    assert "classDef" not in draw_mermaid(pipeline(), with_styles=False)
    assert "style n_b fill:#f00" in draw_mermaid(graph, node_colors={"b": "#f00"})


def test_show_graph_info(capsys: pytest.CaptureFixture[str]) -> None:
    show_graph_info(build([("a", "b"), ("b", "c"), ("c", "b")]))
    assert capsys.readouterr().out.splitlines() == [
        "=== Graph Information ===",
        "Nodes: ['a', 'b', 'c']",
        "Edges: [('a', 'b'), ('b', 'c'), ('c', 'b')]",
        "Cycles detected: [['b', 'c']]",
    ]


def test_show_graph_info_empty(capsys: pytest.CaptureFixture[str]) -> None:
    show_graph_info(TaskGraph())
    assert capsys.readouterr().out.splitlines() == [
        "=== Graph Information ===",
        "Nodes: []",
        "Edges: []",
        "No cycles detected",
    ]


def test_visualize_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    visualize_dependencies(build([("a", "c"), ("a", "d"), ("b", "c")]))
    assert capsys.readouterr().out.splitlines() == [
        "=== Dependencies ===",
        "a >> c >> d",
        "c (no dependencies)",
        "d (no dependencies)",
        "b >> c",
    ]


def test_image_renderers_explain_the_alternative() -> None:
    graph = build([("a", "b")])
    with pytest.raises(NotImplementedError, match="draw_dot"):
        draw_png(graph)
    with pytest.raises(NotImplementedError, match="draw_mermaid"):
        draw_mermaid_png(graph)


def test_export_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(export.__file__).read_text(encoding="utf-8"))
    top_level: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            top_level.append(node.module or "")
    assert top_level
    for module in top_level:
        root = module.split(".")[0]
        assert root == "__future__" or root in sys.stdlib_module_names, module
    nested = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert len(nested) == len(top_level)
