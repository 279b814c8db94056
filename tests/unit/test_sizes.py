"""The size rules of docs/ARCHITECTURE.md: no module over 600 lines, no class
over 300, no function over 60, in every file under fastxfer/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fastxfer"
MODULE_MAX, CLASS_MAX, FUNCTION_MAX = 600, 300, 60


def oversized(path: Path) -> list[str]:
    text = path.read_text()
    found = []
    if text.count("\n") > MODULE_MAX:
        found.append(f"{path.name}: {text.count(chr(10))} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            size = node.end_lineno - start + 1
            limit = CLASS_MAX if isinstance(node, ast.ClassDef) else FUNCTION_MAX
            if size > limit:
                found.append(f"{path.name}:{node.lineno} {node.name}: {size} lines")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sizes(path: Path) -> None:
    assert not oversized(path)


def test_the_rule_can_fail(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text("def f():\n" + "    x = 1\n" * 61)
    assert oversized(big) == ["big.py:1 f: 62 lines"]
