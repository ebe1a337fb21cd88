"""The shape of the code: no import cycles between modules, and a platform that speaks of
no one kind (it never imports a kind's package)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tunelab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(p): p
    for p in PACKAGE.rglob("*.py")
    if "migrations" not in p.parts  # Alembic loads these by path
}


def _resolve(name: str) -> str | None:
    """The tunelab module `name` refers to (a module, or a package's __init__)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _import_nodes(node: ast.AST, *, top_level_only: bool) -> list[ast.AST]:
    """Import statements under `node`; top-level only: those that run at import time (not
    in function bodies, not under `if TYPE_CHECKING:`)."""
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        elif top_level_only and (
            isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
        ):
            continue
        else:
            found += _import_nodes(child, top_level_only=top_level_only)
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The tunelab modules `path` imports."""
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text()), top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.startswith("tunelab") and (target := _resolve(name)):
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle of `graph` (module -> modules it imports), if there is one. A
    package's __init__ importing its own submodules is not one."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if dep.startswith(m + "."):
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a.b"}, "a.b": set(), "c": {"a"}}) is None


def test_no_import_cycles() -> None:
    graph = {m: _imports(p, top_level_only=True) - {m} for m, p in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_platform_speaks_of_no_one_kind() -> None:
    """platform/, schema/ and dashboard/ never import a kind's package, anywhere."""
    node_code = {"tunelab.workers", "tunelab.workers.tasks", "tunelab.workers.context",
                 "tunelab.workers.environment", "tunelab.workers.threads"}  # fmt: skip
    for name, path in MODULES.items():
        if name.split(".")[:2] in (["tunelab", "platform"], ["tunelab", "schema"],
                                   ["tunelab", "dashboard"]):  # fmt: skip
            workers = {m for m in _imports(path, top_level_only=False) if ".workers" in m}
            assert workers <= node_code, (name, workers - node_code)
