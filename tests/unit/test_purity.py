"""The protocol package is pure: no module under fastxfer/protocol/ imports
anything that touches sockets, processes, threads, signals, clocks or the
manifest, at the top or lazily inside a function (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "fastxfer" / "protocol"
MODULES = sorted(PROTOCOL.rglob("*.py"))
FORBIDDEN = {"socket", "ssl", "select", "selectors", "asyncio", "threading", "multiprocessing", "signal",
             "time", "subprocess", "sqlite3"}


def imported(path: Path) -> set[str]:
    """Top-level names of every module an import statement anywhere in *path* names,
    and of any module named to __import__ or importlib, which a static check cannot follow."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id == "__import__":
            found.add("__import__")
    return found


def _name(path: Path) -> str:
    return "fastxfer." + ".".join(path.relative_to(PROTOCOL.parent).with_suffix("").parts)


def test_the_glob_finds_the_package() -> None:
    names = {p.stem for p in MODULES}
    assert {"wire", "messages", "states", "keys", "layout", "paths", "limits"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_impure_import(path: Path) -> None:
    bad = imported(path) & (FORBIDDEN | {"importlib", "__import__"})
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    if True:\n        import time as clock\n    from socket import socket\n")
    assert imported(f) == {"time", "socket"}


_PROBE = """
import json, sys
before = set(sys.modules)
{imports}
print(json.dumps({{"before": sorted(before), "after": sorted(sys.modules)}}))
"""


def _modules_after_import(modules: list[str]) -> tuple[set[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(imports="\n".join(f"import {m}" for m in modules))],
        capture_output=True, text=True, timeout=60, check=True,
    )
    seen = json.loads(done.stdout)
    return set(seen["before"]), set(seen["after"])


def test_importing_the_whole_package_loads_nothing_impure() -> None:
    # What the package pulls in through its dependencies (cryptography) counts too.
    names = [_name(p) for p in MODULES if p.stem != "__init__"]
    before, after = _modules_after_import(names)
    assert set(names) <= after  # the probe really imported them
    loaded = (after - before) & FORBIDDEN
    assert not loaded, sorted(loaded)


def test_probe_detects_an_import() -> None:
    # The probe is able to fail: a module known to pull in socket is caught.
    before, after = _modules_after_import(["fastxfer.net.conn"])
    assert "socket" in after - before
