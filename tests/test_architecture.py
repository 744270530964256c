"""Architecture checks: no import cycle between lmforge's modules, and benchmarks that use only
lmforge's public names.

The graph is grimp's (import-linter's engine), which counts every import statement, those inside
functions and under ``TYPE_CHECKING`` included, so a cycle cannot hide in a function body. The
stage layering itself is import-linter's contract in pyproject.toml (``lint-imports``).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import grimp

PACKAGE = "lmforge"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan's
    algorithm, iterative: the graph is deep enough to strain recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        while work:
            module, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[module] = min(low[module], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as modules from it back to it."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for nxt in sorted(graph.find_modules_directly_imported_by(module) & members):
            if nxt == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = module
                queue.append(nxt)
    raise AssertionError(f"{start} is on no cycle in its own component")


def imports_between(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = sorted(
        d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)
    )
    return f"{importer} (l.{', '.join(map(str, lines))}) -> {imported}"


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One component: its modules, a shortest cycle through it, then every import between its
    modules (one of them must go), each with its line numbers."""
    cycle = shortest_cycle(graph, component)
    members = set(component)
    inside = [
        imports_between(graph, importer, imported)
        for importer in component
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members)
    ]
    return (
        f"  cycle: {' -> '.join(cycle)}\n"
        f"    all imports between its {len(component)} modules:\n      " + "\n      ".join(inside)
    )


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    components = strongly_connected(graph)
    assert not components, (
        f"{len(components)} import cycle(s), imports inside functions counted:\n"
        + "\n".join(describe(graph, c) for c in components)
    )


def test_the_cycle_finder_finds_a_known_cycle_and_no_false_one() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(module)
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    assert strongly_connected(graph) == [["p.a", "p.b", "p.c"]]
    assert shortest_cycle(graph, ["p.a", "p.b", "p.c"]) == ["p.a", "p.b", "p.c", "p.a"]
    described = describe(graph, ["p.a", "p.b", "p.c"])
    assert "cycle: p.a -> p.b -> p.c -> p.a" in described and "p.c (l.1) -> p.a" in described
    graph.remove_import(importer="p.c", imported="p.a")
    assert strongly_connected(graph) == []


def private_lmforge_names(source: str) -> list[str]:
    """Each private name (a ``_`` part, dunders aside) that ``source`` imports from lmforge, or
    reaches as an attribute of an imported lmforge module, with its line."""

    def private(name: str) -> bool:
        return any(p.startswith("_") and not p.endswith("__") for p in name.split("."))

    found = []
    modules: set[str] = set()  # local names bound to lmforge modules
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            for alias in node.names:
                if private(f"{node.module}.{alias.name}"):
                    found.append(f"l.{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    modules.add(alias.asname or PACKAGE)
                    if private(alias.name):
                        found.append(f"l.{node.lineno}: import {alias.name}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"l.{node.lineno}: {ast.unparse(node)}")
    return found


def test_benchmarks_use_only_public_lmforge_names() -> None:
    found = {
        path.name: names
        for path in sorted(BENCHMARKS.glob("*.py"))
        if (names := private_lmforge_names(path.read_text()))
    }
    assert not found, "private lmforge names in benchmarks/:\n" + "\n".join(
        f"  {name}: {', '.join(names)}" for name, names in found.items()
    )


def test_the_private_name_finder() -> None:
    source = (
        "import lmforge.train.loop as loop\n"
        "from lmforge.train.sft import _adapt, chat_examples\n"
        "from lmforge.compress._finetune import fit_classifier\n"
        "from accelerate.state import AcceleratorState\n"
        "loop._private(1)\n"
        "AcceleratorState._reset_state()\n"
        "x.__doc__\n"
    )
    assert private_lmforge_names(source) == [
        "l.2: from lmforge.train.sft import _adapt",
        "l.3: from lmforge.compress._finetune import fit_classifier",
        "l.5: loop._private",
    ]
