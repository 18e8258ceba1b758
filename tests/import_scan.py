"""The imports of a module, read from its source (the AST, nothing imported): the scan of
``tests/test_layers.py`` and ``tests/test_imports.py``.

Every import counts wherever it stands, inside a function or a branch too: ``import a.b``,
``from a.b import c`` (relative ones made absolute) and ``importlib.import_module("a.b")``
with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, NamedTuple, Tuple

__all__ = ["Import", "imports", "module_name"]


class Import(NamedTuple):
    line: int
    module: str  # absolute: "a.b" for ``import a.b``, ``from a.b import c`` and ``from . import c`` in a.b
    names: Tuple[str, ...]  # ("c",) for ``from a.b import c``; () for ``import a.b`` and import_module


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at ``path`` under ``root``: ``a/b.py`` is ``a.b``,
    ``a/__init__.py`` is ``a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[Import]:
    """Every import of the module at ``path`` (under ``root``, which relative imports are
    resolved against), in the order of the AST walk."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level == 0 and node.module:
                yield Import(node.lineno, node.module, names)
            elif node.level:
                base = package[: len(package) - (node.level - 1)]
                yield Import(node.lineno, ".".join([*base, *([node.module] if node.module else [])]), names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield Import(node.lineno, arg.value, ())
