"""The pre-forking server: workers replaced, clean stops, no orphans."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from conftest import make_client, make_file, sha256_file, start_server, wait_for


def test_killed_worker_is_replaced_and_serving_goes_on(tmp_path: Path, server, client) -> None:
    before = server.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(server.worker_pids()) == 2 and before[0] not in server.worker_pids())
    for i in range(3):  # enough connections to reach every worker, the new one included
        f = make_file(tmp_path / f"after{i}.bin", (3 << 20) + i, seed=i)
        done = client.send(server, f)
        assert done.returncode == 0, done.stderr
        assert sha256_file(server.root / "laptop" / f.name) == sha256_file(f)
    assert "died" in server.log_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_leave_no_process_behind(tmp_path: Path, sig: int) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=3)
    c = make_client(tmp_path, srv, "laptop")
    assert c.send(srv, make_file(tmp_path / "a.bin", 1 << 20)).returncode == 0
    family = [srv.proc.pid] + srv.worker_pids()
    assert len(family) == 4
    started = time.monotonic()
    assert srv.stop(sig, timeout=40) == 0
    assert time.monotonic() - started < 35
    assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                    for p in family), 5)


def test_workers_leave_when_the_master_is_killed(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2)
    workers = srv.worker_pids()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    try:
        assert wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                        for p in workers), 10)
    finally:
        for pid in workers:  # ours: never leave them behind, even when the test fails
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_port_in_use_is_a_clear_error(tmp_path: Path, server) -> None:
    from conftest import fx

    done = fx(tmp_path / "h2", "serve", "--root", tmp_path / "r2", "--bind", "127.0.0.1",
              "--port", server.port, timeout=30)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr and "Traceback" not in done.stderr
