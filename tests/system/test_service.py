"""contrib/: the systemd units pass `systemd-analyze verify`, and the example
configuration is one the server accepts, naming the folders the unit opens."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastxfer.cli import config

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNITS = ["fastxfer.service", "fastxfer-backup.service", "fastxfer-backup.timer"]


def unit(name: str) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # systemd's keys are case-sensitive
    parsed.read(CONTRIB / name)
    return parsed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: here, this venv's fastxfer.
    program = Path(sys.executable).parent / "fastxfer"
    if not program.exists():
        pytest.skip(f"no {program} to stand in for /usr/local/bin/fastxfer")
    for name in UNITS:
        text = (CONTRIB / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/local/bin/fastxfer", str(program)))
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    assert done.returncode == 0, done.stderr
    # an unknown or misspelt key is only a warning: none is allowed either
    mentions = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in UNITS)]
    assert mentions == []


def test_the_server_unit_runs_the_example_configuration() -> None:
    service = unit("fastxfer.service")["Service"]
    assert service["ExecStart"] == "/usr/local/bin/fastxfer serve --config /etc/fastxfer/server.toml"
    assert service["User"] == "fastxfer" and service["ProtectSystem"] == "strict"
    example = config.load(str(CONTRIB / "server.toml"))
    assert example.get("root") == service["ReadWritePaths"] == "/srv/backup"
    assert example.state_dir() == Path("/var/lib") / service["StateDirectory"]
    backup = unit("fastxfer-backup.service")["Service"]
    assert backup["Environment"] == f"FASTXFER_HOME=/var/lib/{backup['StateDirectory']}"
    assert unit("fastxfer-backup.timer")["Timer"]["Persistent"] == "true"
