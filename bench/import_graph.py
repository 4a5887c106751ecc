"""Print the import graph of src/secureml read from the source (no module is imported), its
cycles, and how many imports hide inside functions.

An edge A -> B means: importing A runs `import B` (or `from B import ...`) at A's top level,
outside `if TYPE_CHECKING:`. Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`,
so those are edges too. Imports inside a function or method body run only when it is called:
they are counted as function-level imports. The full graph adds them as edges, except those
in a module's `__getattr__` (PEP 562), which only resolve an old or lazy name on first use.
A function-level import that hides a cycle of the full graph still makes one: the modules
cannot be understood, tested or typed apart. tests/test_import_graph.py asserts that neither
graph has a cycle.

Usage: python bench/import_graph.py [--edges]
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "secureml"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_names(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: the top level and the blocks of its
    top-level `if`/`try`/`with`, but not `if TYPE_CHECKING:`, a function or a class body."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level_imports(block)
        elif isinstance(node, ast.With):
            yield from _top_level_imports(node.body)


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _function_level_imports(tree: ast.Module) -> Iterator[tuple[Function, ast.Import | ast.ImportFrom]]:
    """Import statements inside function and method bodies (run only when called), each
    with the function it is in."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in _own_statements(node):
                if isinstance(statement, (ast.Import, ast.ImportFrom)):
                    yield node, statement


def _own_statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of a function body, without those of functions nested in it (counted apart)."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        submodules: list[str] = []
    else:
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        bases = [base]
        # `from secureml import paths` imports the submodule secureml.paths.
        submodules = [f"{base}.{alias.name}" for alias in node.names]
    for name in [*bases, *submodules]:
        parts = name.split(".")
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in known:
                yield prefix


def import_graph(source: Path = SOURCE, *, function_level: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its top level imports; with `function_level`, also
    those its functions import (but a module-level `__getattr__`)."""
    modules = module_names(source)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        imports = list(_top_level_imports(tree.body))
        if function_level:
            lazy_getattr = {
                node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            }
            imports += [node for function, node in _function_level_imports(tree) if function not in lazy_getattr]
        edges = {target for node in imports for target in _targets(node, name, is_package, known)}
        edges.discard(name)
        # A package's own __init__ runs before its submodules; that is not a cycle.
        graph[name] = {target for target in edges if not name.startswith(target + ".")}
    return graph


def function_level_counts(source: Path = SOURCE) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, path in module_names(source).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        counts[name] = sum(1 for _ in _function_level_imports(tree))
    return counts


def _secureml_function_level(source: Path = SOURCE) -> int:
    count = 0
    for path in module_names(source).values():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for _, node in _function_level_imports(tree):
            target = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            count += bool(getattr(node, "level", 0) or (target or "").split(".")[0] == PACKAGE)
    return count


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def main() -> None:
    graph = import_graph()
    if "--edges" in sys.argv[1:]:
        for name in sorted(graph):
            print(f"{name} -> {', '.join(sorted(graph[name])) or '(nothing of secureml)'}")
        print()
    for label, each in (("top-level", graph), ("full (with function-level)", import_graph(function_level=True))):
        found = cycles(each)
        print(f"{label} graph: {len(each)} modules, {sum(map(len, each.values()))} edges, {len(found)} cycles")
        for component in found:
            print(f"  {len(component)} modules: {', '.join(component)}")
    counts = function_level_counts()
    print(f"function-level imports: {sum(counts.values())}, of secureml modules: {_secureml_function_level()}")
    for name, count in counts.most_common(10):
        print(f"  {count:4d} {name}")


if __name__ == "__main__":
    main()
