"""No asyncworker module imports, at run time, a module that imports it back.

Every module is parsed with ``ast`` (nothing is imported). An edge ``a -> b``
is an import that runs when ``a`` is imported: at module level, in a class
body, under ``try`` or a plain ``if``, but not inside a function and not under
``if TYPE_CHECKING:``. ``from . import x`` is an edge to the submodule ``x``
when there is one, otherwise to the package (``x`` is then a name its
``__init__`` defines), and ``from .x import y`` likewise to ``x.y`` when
that is a module, otherwise to ``x``; a package's ``__init__`` importing its
submodules counts like any module. Importing ``a.b`` also runs ``a``'s
``__init__``, but that edge is not counted: every submodule would then be in
a cycle with a package that re-exports it, which is harmless.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "asyncworker"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def run_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements executed when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from run_time_imports(node.body)
            yield from run_time_imports(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody):
                yield from run_time_imports(block)
            for handler in node.handlers:
                yield from run_time_imports(handler.body)
        elif isinstance(node, (ast.ClassDef, ast.With, ast.AsyncWith, ast.For, ast.AsyncFor,
                               ast.While)):
            yield from run_time_imports(node.body)
            yield from run_time_imports(getattr(node, "orelse", []))


def _base_of(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> modules of this package it imports at run time``."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in run_time_imports(ast.parse(path.read_text(), str(path)).body):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _base_of(node, name, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """The edges inside one cycle, for the failure message."""
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "; ".join(edges)


def test_no_run_time_import_cycles() -> None:
    graph = import_graph(module_files())
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


def test_the_checker_sees_cycles(tmp_path: Path) -> None:
    """The rules above, on a made-up package."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import a\n",
        "a.py": "from .b import thing\n",
        "b.py": "from . import a as _a\nthing = 1\n",   # a <-> b
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n",
        "d.py": "from . import c\n",                    # c -> d only under TYPE_CHECKING
        "e.py": "def f():\n    from . import f\n",
        "f.py": "import pkg.e\n",                      # e -> f only inside a function
        "sub/__init__.py": "from .x import y\n",
        "sub/x.py": "from . import y\ny = 1\n",          # sub -> sub.x -> sub (y is a name)
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    graph = import_graph(module_files(root))
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg"] == {"pkg.a"}
    assert graph["pkg.c"] == set() and graph["pkg.e"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.x"]]
