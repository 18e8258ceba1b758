"""No module imports in a circle, and no bench module imports another bench module.

The graph is read from the source of every module of the project's packages (the AST,
nothing imported; ``tests/import_scan.py``), imports inside functions included: a cycle
dodged by importing in a function body is still a cycle. An edge goes from a module to
the module it names: ``from a import b`` names ``a.b`` when that is a module, else ``a``.
The ``__init__`` of a package that Python runs on the way to a submodule is not an edge;
a module that imports itself (``bench/alert_latency.py`` run as ``__main__``) is not a cycle.

Benches share their machinery through the harness (``paystream_dev.harness``), never
through each other; the tests too.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from import_scan import imports, module_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "beam_pipeline",
    "transforms",
    "kernels",
    "schemas",
    "simulator",
    "paystream_dev",
    "bench",
    "scripts",
)

# module -> {module it imports: where, as "path:line"}
Graph = Dict[str, Dict[str, str]]


def module_graph(root: Path, packages: Sequence[str]) -> Graph:
    """The import graph of every module under ``root``'s ``packages`` (those that exist)."""
    paths = {
        module_name(path, root): path
        for package in packages
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
    }
    graph: Graph = {}
    for name, path in paths.items():
        edges = graph.setdefault(name, {})
        for line, module, names in imports(path, root):
            for target in [f"{module}.{n}" if f"{module}.{n}" in paths else module for n in names] or [
                module
            ]:
                if target in paths and target != name:
                    edges.setdefault(target, f"{path.relative_to(root)}:{line}")
    return graph


def _components(graph: Graph) -> List[List[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _shortest_cycle(graph: Graph, start: str, within: Iterable[str]) -> List[str]:
    """The shortest path from ``start`` back to itself through the modules ``within``."""
    allowed = set(within)
    came_from: Dict[str, str] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node]):
            if succ not in allowed:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if succ not in came_from:
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is in no cycle")  # cannot happen within a component


def cycles(graph: Graph) -> List[str]:
    """Each import cycle, readably: the shortest one through each module of each circle,
    as ``a -> b -> a`` with where each import stands."""
    out: List[str] = []
    seen = set()
    for component in _components(graph):
        for start in component:
            cycle = _shortest_cycle(graph, start, component)
            # one rotation per cycle: the one that starts at its smallest module
            first = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[first:-1] + cycle[:first])
            if key in seen:
                continue
            seen.add(key)
            ring = [*key, key[0]]
            where = ", ".join(graph[a][b] for a, b in zip(ring, ring[1:]))
            out.append(f"{' -> '.join(ring)}  ({where})")
    return out


def bench_imports(graph: Graph) -> List[str]:
    """Each import of a bench module by another bench module."""
    return [
        f"{where}: {module} imports {target}"
        for module, edges in sorted(graph.items())
        if module.startswith("bench.")
        for target, where in sorted(edges.items())
        if target.startswith("bench.")
    ]


def test_no_import_cycle_among_the_project_modules() -> None:
    graph = module_graph(ROOT, PACKAGES)
    assert "paystream_dev.harness.live" in graph and "bench.streaming" in graph  # the scan saw them
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_no_bench_module_imports_another() -> None:
    found = bench_imports(module_graph(ROOT, PACKAGES))
    assert not found, "\n".join(found)


def test_no_test_imports_a_bench_module() -> None:
    """Tests take their services and runs from the harness, not from a bench."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, module, _ in imports(path, ROOT)
        if module == "bench" or module.startswith("bench.")
    ]
    assert found == []


def _tree(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    """The checks above can fail: a cycle closed by an import in a function body, and one
    through ``from package import module``, are both found, each once."""
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "def f():\n    from pkg.a import thing\n",
            "pkg/c.py": "from pkg import d\n",
            "pkg/d.py": "import os\n\ndef g():\n    if os.sep:\n        from pkg import c\n",
        },
    )
    assert cycles(module_graph(root, ["pkg"])) == [
        "pkg.a -> pkg.b -> pkg.a  (pkg/a.py:1, pkg/b.py:2)",
        "pkg.c -> pkg.d -> pkg.c  (pkg/c.py:1, pkg/d.py:5)",
    ]


def test_a_package_init_run_on_the_way_is_no_edge(tmp_path: Path) -> None:
    """``pkg/__init__.py`` imports ``pkg.a``, which imports ``pkg.b``: Python runs
    ``pkg/__init__.py`` first, but that is no cycle. ``from pkg import name`` of a name
    that is not a module is an edge to ``pkg`` itself."""
    root = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nVALUE = 1\n",
            "pkg/a.py": "import pkg.b\nA = 1\n",
            "pkg/b.py": "B = 2\n",
            "pkg/c.py": "from pkg import VALUE\n",
            "other/__init__.py": "",
            "other/x.py": "from pkg.b import B\nfrom . import y\n",
            "other/y.py": "def f():\n    from ..other import x\n",
        },
    )
    graph = module_graph(root, ["pkg", "other"])
    assert graph["pkg"] == {"pkg.a": "pkg/__init__.py:1"}
    assert graph["pkg.a"] == {"pkg.b": "pkg/a.py:1"}
    assert graph["pkg.c"] == {"pkg": "pkg/c.py:1"}
    assert cycles(graph) == ["other.x -> other.y -> other.x  (other/x.py:2, other/y.py:2)"]


def test_a_bench_importing_a_bench_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/one.py": "def main():\n    from bench.two import run\n",
            "bench/two.py": "from bench import three\n",
            "bench/three.py": "import json\n",
            "bench/own.py": "if __name__ == '__main__':\n    from bench import own\n",
        },
    )
    assert bench_imports(module_graph(root, ["bench"])) == [
        "bench/one.py:2: bench.one imports bench.two",
        "bench/two.py:1: bench.two imports bench.three",
    ]
