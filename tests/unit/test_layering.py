"""The package has no import circles: its imports of its own modules form a DAG.

A lazy import inside a function that only breaks a circle is still a circle (the two modules
cannot be understood apart), so function-level imports count; only `if TYPE_CHECKING:` imports
(annotations) do not. `_secrets` is the bottom layer (it imports nothing of ours at run time),
and `errors` builds on it alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zeph_providers

ROOT = Path(zeph_providers.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside functions, except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def runtime_imports(name: str) -> set[str]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` needs only the submodule (pkg's __init__ is already
            # being imported as its parent); `from pkg import name` needs pkg itself.
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in MODULES]
            if len(targets) < len(subs):
                targets.append(base)
        edges.update(t for t in targets if t in MODULES and t != name)
    return edges


def _cycles() -> list[list[str]]:
    graph = {name: runtime_imports(name) for name in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def test_no_import_circles() -> None:
    assert _cycles() == []


def test_secrets_and_errors_are_the_bottom_layers() -> None:
    assert runtime_imports("zeph_providers._secrets") == set()
    assert runtime_imports("zeph_providers.errors") == {"zeph_providers._secrets"}


def test_the_checker_sees_a_circle(tmp_path: Path) -> None:
    """The checker is not vacuous: a two-module circle is reported."""
    global MODULES
    saved = MODULES
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from zeph_providers.b import x\n", encoding="utf-8")
    b.write_text(
        "import zeph_providers.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import zeph_providers.c\n",
        encoding="utf-8",
    )
    MODULES = {**saved, "zeph_providers.a": a, "zeph_providers.b": b}
    try:
        assert ["zeph_providers.a", "zeph_providers.b", "zeph_providers.a"] in _cycles()
        assert "zeph_providers.c" not in runtime_imports("zeph_providers.b")
    finally:
        MODULES = saved
