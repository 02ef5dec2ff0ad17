"""The package's shape: no import cycle among its modules, modules of at most 400 lines, no library code in the
conformance suites, and tests that use only the public names of the modules they test."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_lfm"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not those in functions or under ``if TYPE_CHECKING``."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Try) or (
                isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")):
            yield from (n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))


def imported_modules(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    """The package's modules an import statement loads (``from pytest_lfm.x import y`` loads x.y if y is one)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level or node.module is None or node.module not in known:
        return set()
    submodules = {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known}
    names_of_the_module = len(submodules) < len(node.names)
    return submodules | ({node.module} if names_of_the_module else set())


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in top_level_imports(tree):
            edges |= imported_modules(node, known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_package_modules() -> None:
    graph = import_graph()
    assert graph.get("pytest_lfm.plugin"), "the import graph was not read"
    # a package's __init__ that imports its submodules is the usual shape; a submodule importing the names of its
    # package's __init__ back would be a cycle, and is one here
    assert find_cycle(graph) is None


def test_the_report_does_not_import_the_plugin_or_the_runtimes_it_describes() -> None:
    graph = import_graph()
    report = {name for name in graph if name == "pytest_lfm.report" or name.startswith("pytest_lfm.report.")}
    reached, todo = set(), list(report)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    assert not reached & {"pytest_lfm.plugin", "pytest_lfm.fixtures", "pytest_lfm.factories"}


def test_modules_are_at_most_400_lines() -> None:
    over = {str(path.relative_to(ROOT)) for path in modules().values()
            if len(path.read_text().splitlines()) > MAX_LINES}
    assert not over, f"over {MAX_LINES} lines: {sorted(over)}"


def test_conformance_modules_hold_tests_and_fixtures_only() -> None:
    """Library code lives in the package: a conformance module's functions are tests, fixtures, or helpers of its
    own tests (underscored), never public helpers another module could import; its classes describe its test data."""
    offenders = []
    for path in sorted((ROOT / "conformance").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
                if not (node.name.startswith(("test_", "_")) or fixture):
                    offenders.append(f"{path.name}:{node.name}")
    assert offenders == []


def test_tests_use_no_private_names_of_the_package() -> None:
    """The plugin's own tests go through the public names of the modules they test."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        bound: set[str] = set()  # names bound to the package's modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_lfm"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offenders.append(f"{path.name}:{node.lineno} imports {alias.name}")
                    bound.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("pytest_lfm")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setattr"
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in bound
                    and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_")):
                offenders.append(f"{path.name}:{node.lineno} patches {node.args[0].id}.{node.args[1].value}")
    assert offenders == []
