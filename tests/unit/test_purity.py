"""The pure modules import nothing that touches sockets, processes or signals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = ["fastxfer.protocol.wire", "fastxfer.protocol.layout", "fastxfer.protocol.paths", "fastxfer.protocol.keys"]
FORBIDDEN = ["socket", "multiprocessing", "signal", "selectors"]

_PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps({{"before": sorted(before), "after": sorted(sys.modules)}}))
"""


def _modules_after_import(module: str) -> tuple[set[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    seen = json.loads(done.stdout)
    return set(seen["before"]), set(seen["after"])


@pytest.mark.parametrize("module", PURE + [",".join(PURE).replace(",", ", ")])
def test_pure_modules_import_no_io(module: str) -> None:
    before, after = _modules_after_import(module)
    assert module.split(", ")[0] in after  # the probe really imported it
    # The interpreter must not have loaded them on its own either, or the
    # check below would prove nothing.
    assert not before & set(FORBIDDEN), sorted(before & set(FORBIDDEN))
    assert not after & set(FORBIDDEN), sorted(after & set(FORBIDDEN))


def test_probe_detects_an_import() -> None:
    # The probe is able to fail: a module known to pull in socket is caught.
    _, after = _modules_after_import("fastxfer.net.conn")
    assert "socket" in after
