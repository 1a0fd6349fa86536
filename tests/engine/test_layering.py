"""Imports inside ``engine/`` flow one way (docs/architecture.md, "Map of modules").

Read from the source with ``ast``, function-level imports included (they hide loops, they do
not break them): the planner knows no executor, the observation code (stats, progress,
pictures) stands below the executor, the two backends never import each other, and only
``engine/backend.py`` picks between them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
BACKEND_PICKER: Final = "engine.backend"

RULES: Final = (
    # (modules the rule covers, module prefixes they must not import, why)
    (
        ("engine.plan",),
        ("engine.executor", "engine.comm", "engine.gpu", BACKEND_PICKER),
        "the planner is pure: plan data in, plan data out",
    ),
    (
        ("engine.stats", "engine.progress", "engine.profile"),
        ("engine.executor", "engine.gpu", BACKEND_PICKER),
        "observation code stands below the executor and knows only plans",
    ),
    (("engine.executor",), ("engine.gpu",), "the CPU backend does not know the GPU backend"),
    (("engine.gpu",), ("engine.executor",), "the GPU backend does not know the CPU backend"),
    (("engine",), ("launcher",), "launcher -> engine -> preload: the engine never sees launcher"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _engine_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / "engine").rglob("*.py"))}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str, path: Path, modules: set[str]) -> Iterator[tuple[str, bool]]:
    """``(imported module, for annotations only)`` for every import anywhere in ``path``.

    ``from engine.plan import dsl`` imports the module ``engine.plan.dsl``; a relative import
    is resolved against ``module``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno in typing_only
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules else base), node.lineno in typing_only


def _covers(prefixes: tuple[str, ...], module: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


@pytest.mark.parametrize(("covered", "forbidden", "why"), RULES, ids=[r[2] for r in RULES])
def test_imports_flow_one_way(covered: tuple[str, ...], forbidden: tuple[str, ...], why: str):
    modules = _engine_modules()
    wrong = [
        f"{module} imports {imported}"
        for module, path in modules.items()
        if _covers(covered, module) and module != BACKEND_PICKER
        for imported, _ in imports_of(module, path, set(modules))
        if _covers(forbidden, imported)
    ]
    assert not wrong, f"{why}:\n" + "\n".join(wrong)


def test_only_the_picker_imports_both_backends():
    modules = _engine_modules()
    both = [
        module
        for module, path in modules.items()
        if {
            prefix
            for imported, _ in imports_of(module, path, set(modules))
            for prefix in ("engine.executor", "engine.gpu")
            if _covers((prefix,), imported)
        }
        == {"engine.executor", "engine.gpu"}
    ]
    assert both == [BACKEND_PICKER]


def test_no_import_cycles():
    """No loop among engine modules, function-level imports included (annotations aside)."""
    modules = _engine_modules()
    graph = {
        module: {
            imported
            for imported, typing_only in imports_of(module, path, set(modules))
            if imported in modules and imported != module and not typing_only
        }
        for module, path in modules.items()
    }
    # A package's __init__ importing its own submodules is how packages work, not a loop.
    for module in graph:
        graph[module] = {m for m in graph[module] if not module.startswith(f"{m}.")}
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return [*stack[stack.index(imported) :], imported]
            if imported not in state and (loop := visit(imported)) is not None:
                return loop
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (loop := visit(module)) is not None:
            pytest.fail("import loop: " + " -> ".join(loop))
