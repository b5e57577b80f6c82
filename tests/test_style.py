"""The package reads as the style guide asks: short functions, modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "auditor"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (
            f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}",
            node.end_lineno - node.lineno + 1,
        )
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    ]


def test_no_function_in_the_package_is_longer_than_sixty_lines() -> None:
    long = [
        f"{where} ({lines} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for where, lines in _functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, "split these into named steps: " + "; ".join(long)


def test_no_module_in_the_package_is_longer_than_four_hundred_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)} ({n} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these modules: " + "; ".join(long)
