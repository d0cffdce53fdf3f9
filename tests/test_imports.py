"""No import cycle among triton_ops modules, nor between its capabilities.

Every `import` statement counts, wherever it stands: at module level, inside a function (the
lazy imports that keep the CLI fast) or under `if TYPE_CHECKING:`. Importing `a.b.c` also
runs the `__init__` of the packages `a` and `a.b`, so those count too, except the importing
module's own packages (they are already being imported when it runs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import triton_ops

Graph = dict[str, set[str]]


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under `package_dir`."""
    root = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _packages(name: str) -> Iterator[str]:
    """`name`'s enclosing packages: "a.b.c" -> "a.b", "a"."""
    while "." in name:
        name = name.rpartition(".")[0]
        yield name


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` if it is one of the modules, else the closest package holding it."""
    for candidate in (name, *_packages(name)):
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, modules: dict[str, Path]) -> set[str]:
    """The modules among `modules` that module `name` imports, anywhere in its file."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    explicit: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            explicit.update(filter(None, (_known(a.name, modules) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                target = _known(f"{base}.{alias.name}", modules) or _known(base, modules)
                if target:
                    explicit.add(target)
    own = set(_packages(name))
    implicit = {p for target in explicit for p in _packages(target) if p in modules} - own
    return (explicit | implicit) - {name}


def import_graph(package_dir: Path) -> Graph:
    modules = module_files(package_dir)
    return {name: imports_of(name, modules) for name in modules}


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (first node repeated at the end) through each group of modules that import
    each other, found by depth-first search; empty when the graph has none."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the search path, then "done"
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def capability_graph(graph: Graph, top: str) -> tuple[Graph, dict[tuple[str, str], list[str]]]:
    """The graph between capabilities (`top`.X: a package or a top-level module), and for
    each edge the module imports that make it."""
    def capability(name: str) -> str:
        return ".".join(name.split(".")[:2]) if name != top else top

    between: Graph = {}
    because: dict[tuple[str, str], list[str]] = {}
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = capability(source), capability(target)
            if a != b and top not in (a, b):
                between.setdefault(a, set()).add(b)
                because.setdefault((a, b), []).append(f"{source} -> {target}")
    return between, because


PACKAGE_DIR = Path(triton_ops.__file__).parent


def test_no_import_cycle_between_modules() -> None:
    found = cycles(import_graph(PACKAGE_DIR))
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def test_no_import_cycle_between_capabilities() -> None:
    between, because = capability_graph(import_graph(PACKAGE_DIR), "triton_ops")
    found = cycles(between)
    lines = []
    for cycle in found:
        lines.append("  " + " -> ".join(cycle))
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines.extend(f"    {why}" for why in sorted(because[(a, b)]))
    assert not found, "capabilities import each other:\n" + "\n".join(lines)


def test_the_walk_sees_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg import c\n")
    (pkg / "a.py").write_text("def later():\n    from . import b\n")
    (pkg / "b.py").write_text("import pkg.sub.d\n")
    (pkg / "c.py").write_text("from pkg.a import later\n")
    (pkg / "sub" / "d.py").write_text("from typing import TYPE_CHECKING\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.d", "pkg.sub"}  # importing pkg.sub.d runs pkg.sub
    assert graph["pkg.sub.d"] == set()  # its own packages are not its imports
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.c", "pkg.a"]]
    between, because = capability_graph(graph, "pkg")
    assert cycles(between) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.c", "pkg.a"]]
    assert because[("pkg.b", "pkg.sub")] == ["pkg.b -> pkg.sub", "pkg.b -> pkg.sub.d"]
