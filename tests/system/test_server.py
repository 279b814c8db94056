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


def serve_cmd(root: Path) -> list[str]:
    from conftest import FX

    return FX + ["serve", "--root", str(root), "--bind", "127.0.0.1", "--port", "0", "--workers", "2"]


@pytest.mark.parametrize("delay", [None, 0.0, 0.01, 0.02, 0.05, 0.1])
def test_sigterm_at_any_moment_stops_an_idle_server_within_a_second(tmp_path: Path, delay) -> None:
    """None: right after spawn, before "listening"; else that long after it."""
    import subprocess

    from conftest import fx

    home = tmp_path / "server-home"
    fx(home, "id", check=True)
    proc = subprocess.Popen(serve_cmd(tmp_path / "root"), env=dict(os.environ, FASTXFER_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        if delay is not None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("listening on "):
                    break
            time.sleep(delay)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        took = time.monotonic() - sent
        assert took < 1.0, f"stopped {took:.2f} s after SIGTERM"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                                 if str(tmp_path / "root") in (p.info["cmdline"] or [])], 5)


def test_a_worker_sighup_is_not_the_masters_and_serving_goes_on(tmp_path: Path, server, client) -> None:
    before = server.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGHUP)
    time.sleep(0.5)
    assert server.worker_pids() == before  # none died (an inherited handler made them exit)
    for i in range(3):  # enough connections to reach both workers
        f = make_file(tmp_path / f"after-hup{i}.bin", (1 << 20) + i, seed=i)
        assert client.send(server, f).returncode == 0
        assert sha256_file(server.root / "laptop" / f.name) == sha256_file(f)
    assert "died" not in server.log_text()


def test_workers_hold_none_of_the_masters_store_descriptors(server) -> None:
    state = str(server.root / ".fastxfer")
    for pid in server.worker_pids():
        held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        manifests = [h for h in held if h.startswith(os.path.join(state, "manifest"))]
        assert manifests == [], manifests  # a SQLite connection must never cross a fork
        folders = [h for h in held if h in (str(server.root), state)]
        assert len(folders) <= 2, folders  # the worker's own store: one root, one state folder


def held_paths(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:  # a descriptor closed while we looked: the caller looks again
        return set()


def test_a_worker_that_cannot_boot_stops_the_server_with_its_own_exit_code(tmp_path: Path) -> None:
    from fastxfer.errors import BootError

    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2)
    def booted(pid: int) -> bool:  # a booted worker holds its store's root folder open
        return str(srv.root) in held_paths(pid)

    try:
        assert wait_for(lambda: len(srv.worker_pids()) == 2 and all(map(booted, srv.worker_pids())))
        os.rename(srv.root, tmp_path / "root-gone")  # the root's disk went away...
        srv.root.write_text("not a folder")
        os.kill(srv.worker_pids()[0], signal.SIGKILL)  # ...and a worker must be started again
        srv.proc.wait(timeout=15)
    finally:
        code = srv.stop(signal.SIGKILL)
    assert code == BootError.exit_code == 11
    log = srv.log_text()
    assert "could not start" in log and log.count("cannot start") == 1  # no respawn loop
