"""The import graph: product code never imports the lab, and no module imports itself round a circle.

The graph is built from the source with ``ast`` (every ``import``, at module level or inside a function:
a lazy import in a circle still ties the two modules together), and checked with a depth-first search.
The cycle finder is tested first on tiny graphs written by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("cat_serve", "eval", "training", "clients")
PROJECT = (*PRODUCT, "lab")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(tops=PROJECT) -> dict[str, Path]:
    return {module_name(f): f for top in tops for f in (REPO / top).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports: ``from a.b import c`` is ``a.b.c`` when that is a module, else
    ``a.b``; relative imports resolve against the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c.func`-like names: the nearest module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(tops=PROJECT) -> dict[str, set[str]]:
    mods = project_modules(tops)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: iterative DFS, white/grey/black colouring (grey = on the path)."""
    colour = dict.fromkeys(graph, 0)
    for root in sorted(graph):
        if colour[root]:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        colour[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt, 2) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


# ---------------------------------------------------------------------- the cycle finder (hand-made graphs)
@pytest.mark.parametrize("graph,cycle", [
    ({}, None),
    ({"a": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),  # a chain
    ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None),  # a diamond: d is reached twice, no cycle
    ({"a": {"a"}}, ["a", "a"]),  # a self-import
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "x": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"d"}, "d": {"c"}}, ["c", "d", "c"]),  # in a second component
    ({"a": {"z"}}, None),  # an edge out of the graph (not a project module)
])
def test_find_cycle_on_hand_made_graphs(graph, cycle):
    assert find_cycle(graph) == cycle


def test_imports_are_resolved_to_modules(tmp_path):
    """``from pkg import mod``, ``from pkg.mod import name``, ``import pkg.mod`` and relative imports."""
    src = tmp_path / "m.py"
    src.write_text("import pkg.mod\nfrom pkg import other\nfrom pkg.mod import thing\nfrom . import sib\n"
                   "from .sib import x\nimport os\n\ndef f():\n    from pkg.deep.leaf import y\n")
    known = {"pkg", "pkg.mod", "pkg.other", "pkg.deep", "pkg.deep.leaf", "here", "here.m", "here.sib"}
    assert imports_of("here.m", src, known) == {"pkg.mod", "pkg.other", "here.sib", "pkg.deep.leaf"}


# ---------------------------------------------------------------------- the project
def test_product_code_never_imports_the_lab():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] in PRODUCT
                       for t in targets if t.split(".")[0] == "lab")
    assert offenders == []


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50  # the graph really was read
    assert find_cycle(graph) is None
