"""A worker that hangs (stopped, or stuck) is killed and replaced by the
master within --worker-timeout plus a second, and the send it was serving
finishes on the workers left (docs/RELIABILITY.md, "A worker that hangs")."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import fx, make_client, make_file, sha256_file, start_send, start_server, wait_for
from relay import Relay, throttled

SILENCE = 2.0  # --worker-timeout for these tests (the default is 10 s)
MARGIN = 2.0  # the master's wake-up (0.5 s), the reap and the fork, on a loaded machine


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def holds(pid: int, server_port: int, relay_port: int) -> bool:
    """Whether the worker holds the server's end of the relay's connection from *relay_port*."""
    return any(c.laddr and c.laddr.port == server_port and c.raddr and c.raddr.port == relay_port
               for c in psutil.Process(pid).net_connections(kind="tcp"))


@pytest.mark.parametrize("held", ["a stream", "the control connection"])
def test_a_stopped_worker_is_killed_and_replaced_and_the_send_finishes(tmp_path: Path, held: str) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2,
                       extra=("--worker-timeout", str(SILENCE)))
    target, proc = 0, None
    try:
        client = make_client(tmp_path, srv, "laptop")
        src = make_file(tmp_path / "big.bin", 32 << 20)
        relay = Relay(srv.port, throttled(8 << 20))  # per stream: the send takes about 2 s unharmed
        try:
            fx(client.home, "pin", f"127.0.0.1:{relay.port}", srv.fingerprint, check=True)
            proc = start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M")
            assert wait_for(lambda: relay.upstream > 2 << 20)
            control = relay.open[1].getsockname()[1]  # the relay's first upstream end: the control connection
            workers = srv.worker_pids()
            assert len(workers) == 2
            with_control = [p for p in workers if holds(p, srv.port, control)]
            assert len(with_control) == 1
            target = with_control[0] if held == "the control connection" else (set(workers) - set(with_control)).pop()
            if held == "a stream":
                assert any(c.laddr.port == srv.port for c in psutil.Process(target).net_connections(kind="tcp"))
            other = (set(workers) - {target}).pop()
            os.kill(target, signal.SIGSTOP)
            stopped = time.monotonic()
            assert wait_for(lambda: gone(target) and len(srv.worker_pids()) == 2, SILENCE + MARGIN + 2), \
                srv.log_text()
            took = time.monotonic() - stopped
            _, err = proc.communicate(timeout=120)
        finally:
            relay.close()
        print(f"replaced {took:.2f} s after SIGSTOP")
        assert took <= SILENCE + MARGIN, took
        after = srv.worker_pids()
        assert target not in after and other in after  # the one that beats is left alone
        assert proc.returncode == 0, err
        if held == "the control connection":
            assert "lost and opened again" in err
        assert sha256_file(srv.root / "laptop" / "big.bin") == sha256_file(src)
        log = srv.log_text()
        assert f"(pid {target}) sent no heartbeat" in log and f"(pid {target}) killed for its silence" in log
    finally:
        # Ours: never leave a stopped worker or a waiting send behind, even when the test fails.
        if target and not gone(target):
            os.kill(target, signal.SIGKILL)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.stop()


@pytest.mark.parametrize("burst", [0, 640], ids=["late", "late, its channel full"])
def test_a_silent_worker_gets_no_new_connection_and_never_stalls_the_master(tmp_path: Path, burst: int) -> None:
    """While a stopped worker waits to be killed: once it is late it gets no
    new connection, and filling its channel with sockets does not stop the master."""
    timeout = 6.0  # long enough for the sends below to finish while the worker is still there
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2,
                       extra=("--worker-timeout", str(timeout)))
    target, opened = 0, []
    try:
        client = make_client(tmp_path, srv, "laptop")
        assert wait_for(lambda: len(srv.worker_pids()) == 2)
        target = srv.worker_pids()[0]
        os.kill(target, signal.SIGSTOP)
        stopped = time.monotonic()
        # Round-robin hands every other one to the stopped worker: more than its
        # channel holds (278 with Linux's default buffer), from many addresses
        # so that no per-address limit drops those the other worker takes.
        for i in range(burst):
            opened.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5,
                                                  source_address=(f"127.0.0.{2 + i // 16}", 0)))
        time.sleep(max(0.0, stopped + 2.5 - time.monotonic()))  # past HEARTBEAT_LATE
        for i in range(2):
            f = make_file(tmp_path / f"f{i}.bin", (2 << 20) + i, seed=i)
            done = client.send(srv, f, "--streams", "2", "--chunk-size", "1M", timeout=60)
            assert done.returncode == 0, done.stderr
            assert sha256_file(srv.root / "laptop" / f.name) == sha256_file(f)
        assert time.monotonic() - stopped < timeout and not gone(target)  # served without waiting for the kill
        assert wait_for(lambda: gone(target) and len(srv.worker_pids()) == 2, timeout + MARGIN)
    finally:
        for sock in opened:
            sock.close()
        if target and not gone(target):
            os.kill(target, signal.SIGKILL)
        srv.stop()


# Injected by gdb into one worker thread: a regular expression that backtracks
# for hours inside the re module, which never lets go of the GIL meanwhile, so
# no other thread of the worker runs (a pure Python loop would be preempted).
RUNAWAY = "import re; re.match(r'(a+)+$', 'a' * 64 + 'b')"


@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb to make a worker stuck")
def test_a_worker_stuck_holding_the_gil_is_killed_and_replaced(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2,
                       extra=("--worker-timeout", str(SILENCE)))
    gdb = None
    try:
        client = make_client(tmp_path, srv, "laptop")
        assert wait_for(lambda: len(srv.worker_pids()) == 2)
        target, other = srv.worker_pids()
        gdb = subprocess.Popen(["gdb", "-p", str(target), "-batch", "-ex", "call (int)PyGILState_Ensure()",
                                "-ex", f'call (int)PyRun_SimpleString("{RUNAWAY}")'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        replaced = wait_for(lambda: gone(target) and len(srv.worker_pids()) == 2, SILENCE + MARGIN + 8)
        if not replaced and gdb.poll() is not None:
            pytest.skip(f"gdb could not make the worker stuck: {gdb.stdout.read()[-300:]}")
        assert replaced, srv.log_text()
        print(f"replaced {time.monotonic() - started:.2f} s after gdb started")
        assert other in srv.worker_pids()
        assert f"(pid {target}) sent no heartbeat" in srv.log_text()
        f = make_file(tmp_path / "after.bin", 6 << 20)  # two streams: both workers, the new one included
        done = client.send(srv, f, "--streams", "2", "--chunk-size", "1M")
        assert done.returncode == 0, done.stderr
        assert sha256_file(srv.root / "laptop" / "after.bin") == sha256_file(f)
    finally:
        if gdb is not None:
            if gdb.poll() is None:
                gdb.kill()
            gdb.wait()
        srv.stop()


def test_a_worker_timeout_below_the_least_is_refused(tmp_path: Path) -> None:
    done = fx(tmp_path / "home", "serve", "--root", tmp_path / "root", "--bind", "127.0.0.1", "--port", "0",
              "--worker-timeout", "1.5", timeout=30)
    assert done.returncode == 2
    assert "--worker-timeout must be at least 2 seconds" in done.stderr
    assert not (tmp_path / "root").exists()
