"""Which room may import which (docs/ARCHITECTURE.md, "The map"): checked on
the import statements of every module under fastxfer/, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fastxfer"
ALLOWED = {
    "errors": set(),
    "protocol": {"errors"},
    "localfs": {"errors", "protocol"},
    "net": {"errors", "protocol"},
    "trust": {"errors", "protocol"},
    "store": {"errors", "protocol", "localfs"},
    "server": {"errors", "protocol", "net", "trust", "store", "localfs"},
    "client": {"errors", "protocol", "net", "trust", "localfs"},
    "cli": {"errors", "protocol", "net", "trust", "store", "server", "client", "localfs"},
}


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def rooms_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module + "." + a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fastxfer" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = [p for p in sorted(PACKAGE.rglob("*.py")) if room_of(p) in ALLOWED]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_room_imports_only_what_it_may(path: Path) -> None:
    room = room_of(path)
    assert rooms_imported(path) - ALLOWED[room] - {room} == set()


def test_every_room_is_in_the_map() -> None:
    rooms = {room_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert rooms <= set(ALLOWED), rooms - set(ALLOWED)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from fastxfer.cli.report import human\n")
    assert rooms_imported(f) == {"cli"}


def test_no_two_test_modules_share_a_name() -> None:
    """pytest imports test files by their bare names (no packages): two of one
    name stop the whole suite's collection, as they did twice."""
    tests = Path(__file__).resolve().parents[1]
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
