"""No import circles between atcrl's modules, read from the source with ``ast``.

What counts as an edge: every ``import`` / ``from ... import`` of an atcrl module, at module level *and*
inside functions. A function-level import still makes the importer depend on the imported module; it only
defers the failure a circle would cause at import time, and deferring is how circles hide (a lazy import in
the CLI module, a module ``__getattr__`` resolving names of a module that imports it back). Imports under
``if TYPE_CHECKING:`` do not count: they never run and only name types for annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import atcrl

ROOT = Path(atcrl.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(source: str, name: str, modules: set[str], *, is_package: bool = False) -> set[str]:
    """The atcrl modules that module ``name`` (source text ``source``) imports: the longest known module
    prefix of each imported name."""
    tree = ast.parse(source, filename=name)
    skipped = _type_checking_nodes(tree)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def add(dotted: str) -> None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            found.add(dotted)

    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base == "atcrl" or base.startswith("atcrl."):
                for alias in node.names:
                    add(f"{base}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports_of(path.read_text(), name, set(paths), is_package=path.name == "__init__.py")
            for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_function_level_imports_count_and_type_checking_ones_do_not():
    source = """
from typing import TYPE_CHECKING
from atcrl.b import thing
if TYPE_CHECKING:
    from atcrl.c import Type

def later():
    from . import d
    import atcrl.e.f
"""
    modules = {"atcrl.a", "atcrl.b", "atcrl.c", "atcrl.d", "atcrl.e"}
    assert imports_of(source, "atcrl.a", modules) == {"atcrl.b", "atcrl.d", "atcrl.e"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "atcrl.train.train_session" in graph["atcrl.train.train_cli"]
    assert "atcrl.encoder_io" in graph["atcrl.train.sac_loop"]  # imported inside a function there


def test_no_import_circles_between_atcrl_modules():
    assert cycles(import_graph()) == []
