"""Faults: killed peers, cut streams, changing files, full disks, slow strangers.

Bytes on the wire are counted by a relay between client and server, not
taken from the client's own report.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import (FX, fx, held_send, make_client, make_file, restart_while, sha256_file, start_send,
                      start_server, wait_for)
from flood import Flood, loopback_sources
from relay import Relay, cut_at, passthrough, throttled

CHUNK = 1 << 20
SIZE = 64 << 20


def recorded_chunks(server) -> int:
    staging = server.root / ".fastxfer" / "staging" / "laptop"
    from fastxfer.protocol import layout

    total = 0
    for rec in staging.glob("*.rec"):
        total += len(layout.parse_record(rec.read_bytes(), 1 << 20))
    return total


def send_via(client, relay: Relay, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return fx(client.home, "send", *args, "--to", f"127.0.0.1:{relay.port}", timeout=timeout)


def resend_counts_only_missing(client, server, src: Path, recorded: int) -> None:
    relay = Relay(server.port, passthrough)
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        done = send_via(client, relay, src, "--streams", "2", "--chunk-size", "1M")
    finally:
        relay.close()
    assert done.returncode == 0, done.stderr
    assert "were already on the server" in done.stdout  # the summary says it resumed
    assert sha256_file(server.root / "laptop" / src.name) == sha256_file(src)
    missing = SIZE - recorded * CHUNK
    assert relay.upstream <= missing * 1.05 + 64 * 1024, (relay.upstream, missing)


def throttled_send(tmp_path: Path, server, client) -> tuple[Path, Relay, subprocess.Popen]:
    """A 64 MiB send over 2 streams through a relay at 40 MiB/s, so a kill lands mid-transfer."""
    src = make_file(tmp_path / "big.bin", SIZE)
    relay = Relay(server.port, throttled(40 << 20))
    fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
    return src, relay, start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M")


def test_resume_after_client_killed(tmp_path: Path, server, client) -> None:
    src, relay, proc = throttled_send(tmp_path, server, client)
    try:
        assert wait_for(lambda: recorded_chunks(server) >= 16)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recorded = recorded_chunks(server)
    finally:
        relay.close()
    assert recorded < SIZE // CHUNK
    assert not (server.root / "laptop" / "big.bin").exists()
    resend_counts_only_missing(client, server, src, recorded)


def test_a_client_killed_costs_only_what_never_arrived(tmp_path: Path, server, client) -> None:
    """Every whole chunk the server received from a client that vanished is made
    durable and recorded before its stream closes: the server loses at most the
    frame each stream had in flight (a chunk and its frame's overhead)."""
    src, relay, proc = throttled_send(tmp_path, server, client)
    try:
        assert wait_for(lambda: recorded_chunks(server) >= 8)
        time.sleep(0.3)  # mid-batch: chunks received and not yet recorded
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # What the relay still held reaches the server, then its streams end.
        counts, deadline = [recorded_chunks(server)], time.monotonic() + 20
        while (len(counts) < 5 or counts[-5:] != [counts[-1]] * 5) and time.monotonic() < deadline:
            time.sleep(0.25)  # stable for a second: every stream has ended
            counts.append(recorded_chunks(server))
        arrived = relay.upstream
    finally:
        relay.close()
    recorded = counts[-1] * CHUNK
    assert recorded < SIZE
    # Lost at most one frame per stream (2) and the control connection's bytes.
    assert arrived - recorded <= 2 * (CHUNK + 64) + 256 * 1024, (arrived, recorded)
    resend_counts_only_missing(client, server, src, counts[-1])


def test_resume_after_server_killed_and_restarted(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "big.bin", SIZE)
    relay = Relay(server.port, throttled(40 << 20))
    fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
    # The server stays down: one reconnection each is enough to see the send give up.
    proc = start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M", env={"FASTXFER_RECONNECTS": "1"})
    try:
        assert wait_for(lambda: recorded_chunks(server) >= 16)
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers at once
        server.proc.wait()
        recorded = recorded_chunks(server)
        _, err = proc.communicate(timeout=60)
    finally:
        relay.close()
    assert proc.returncode == 4, err
    assert "run the same send again" in err
    assert not (server.root / "laptop" / "big.bin").exists()
    again = start_server(server.home, server.root, port=server.port)
    try:
        resend_counts_only_missing(client, again, src, recorded)
    finally:
        again.stop()


def test_cut_stream_is_reopened_in_the_same_invocation(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "big.bin", SIZE)
    relay = Relay(server.port, cut_at(random.randrange(100, 8 << 20)))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        # One stream, so the cut one must be reopened for the send to finish.
        done = send_via(client, relay, src, "--streams", "1", "--chunk-size", "1M")
    finally:
        relay.close()
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.root / "laptop" / "big.bin") == sha256_file(src)
    assert relay.count >= 3  # control, the cut stream, its reopening


def mixed_tree(top: Path) -> Path:
    """A big file of many chunks and 300 small files (bundles) in 3 folders."""
    make_file(top / "big.bin", 32 << 20, seed=1)
    for i in range(300):
        make_file(top / f"d{i % 3}" / f"f{i}.bin", 3000 + i, seed=i)
    return top


def assert_stored(server, top: Path) -> None:
    for p in top.rglob("*"):
        if p.is_file():
            assert sha256_file(server.root / "laptop" / top.name / p.relative_to(top)) == sha256_file(p), p


@pytest.mark.parametrize("outage", ["every connection cut at once", "a server restart"])
def test_a_send_survives(tmp_path: Path, server, client, outage: str) -> None:
    top = mixed_tree(tmp_path / "data")
    relay = Relay(server.port, throttled(40 << 20))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_send(client, relay, top, "--streams", "2", "--chunk-size", "1M")
        assert wait_for(lambda: relay.upstream > 8 << 20)
        if outage == "a server restart":
            err = restart_while(server, proc)  # its tickets die with it
        else:
            assert relay.cut_all() >= 2  # the control connection and the streams
            _, err = proc.communicate(timeout=120)
    finally:
        relay.close()
    assert proc.returncode == 0, err
    assert "lost and opened again" in err
    assert_stored(server, top)


def test_file_changed_while_sent_is_read_again_and_stored_as_it_is_now(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "moving.bin", 8 << 20)
    with held_send(client, server, src, "--streams", "1", "--chunk-size", "1M") as (proc, gate):
        with open(src, "r+b") as f:
            f.seek(5 << 20)
            f.write(b"new bytes in the middle of the file")
        os.utime(src, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        gate.set()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # the first read was torn: it is read and sent again
    assert sha256_file(server.root / "laptop" / "moving.bin") == sha256_file(src)


def test_a_file_that_never_stops_changing_fails_unless_allowed(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "live.db", 32 << 20, seed=4)
    small = make_file(tmp_path / "live.log", 1000, seed=5)
    stop = threading.Event()

    def touch() -> None:  # a new time every millisecond, the bytes the same
        stamp = time.time_ns()
        while not stop.is_set():
            stamp += 10**6
            for p in (src, small):
                os.utime(p, ns=(stamp, stamp))
            time.sleep(0.001)

    toucher = threading.Thread(target=touch, daemon=True)
    toucher.start()
    try:
        failed = client.send(server, src, small)
        allowed = client.send(server, src, small, "--allow-changing", "--json")
    finally:
        stop.set()
        toucher.join()
    assert failed.returncode == 7, failed.stdout + failed.stderr
    assert "changed while it was sent" in failed.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(json.loads(allowed.stdout)["changed_while_read"]) == ["live.db", "live.log"]
    assert "changed while it was read, stored as last read" in allowed.stderr
    assert sha256_file(server.root / "laptop" / "live.db") == sha256_file(src)
    assert (server.root / "laptop" / "live.log").read_bytes() == small.read_bytes()


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_send_larger_than_free_space_is_refused_up_front(tmp_path: Path, small_disk: Path) -> None:
    srv = start_server(tmp_path / "server-home", small_disk / "root")
    try:
        c = make_client(tmp_path, srv, "laptop")
        done = c.send(srv, make_file(tmp_path / "huge.bin", 64 << 20))
        assert done.returncode == 6
        assert "not enough space on the server" in done.stderr
        assert list((srv.root / ".fastxfer" / "staging" / "laptop").iterdir()) == []
        small = make_file(tmp_path / "small.bin", 1 << 20)
        assert c.send(srv, small).returncode == 0
    finally:
        srv.stop()


def test_disk_full_midway_fails_cleanly_and_serving_goes_on(tmp_path: Path, small_disk: Path) -> None:
    srv = start_server(tmp_path / "server-home", small_disk / "root")
    filler = small_disk / "filler"
    try:
        c = make_client(tmp_path, srv, "laptop")
        src = make_file(tmp_path / "mid.bin", 16 << 20)
        with held_send(c, srv, src, "--streams", "1", "--chunk-size", "1M") as (proc, gate):
            with open(filler, "wb") as f:  # take every byte that is left
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError:
                    pass
            gate.set()
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 6, err
        assert "disk full" in err
        assert not (srv.root / "laptop" / "mid.bin").exists()
        # The failed file's staging is released at once, its space with it.
        staging = srv.root / ".fastxfer" / "staging" / "laptop"
        assert wait_for(lambda: not list(staging.glob("*.data")), 10), list(staging.iterdir())
        filler.unlink()
        done = c.send(srv, src)  # the same server, still serving; the file is sent again
        assert done.returncode == 0, done.stderr
        assert sha256_file(srv.root / "laptop" / "mid.bin") == sha256_file(src)
        assert list((srv.root / ".fastxfer" / "staging" / "laptop").iterdir()) == []
    finally:
        srv.stop()


def test_slowloris_is_dropped_while_others_keep_going(tmp_path: Path, server, client) -> None:
    from fastxfer.protocol import limits

    s = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0))
    s.settimeout(1)
    opened = time.monotonic()
    hello = b"\x16\x03\x01\x02\x00" + os.urandom(512)
    dropped_after = None
    results = []
    sender = threading.Thread(target=lambda: results.append(
        client.send(server, make_file(tmp_path / "meanwhile.bin", 16 << 20))))
    sender.start()
    for i in range(int(limits.OPENING_DEADLINE) + 10):
        try:
            s.send(hello[i : i + 1])
            if s.recv(1) == b"":
                dropped_after = time.monotonic() - opened
                break
        except socket.timeout:
            continue
        except OSError:
            dropped_after = time.monotonic() - opened
            break
    s.close()
    sender.join(120)
    assert dropped_after is not None and dropped_after < limits.OPENING_DEADLINE + 3
    assert results and results[0].returncode == 0, results and results[0].stderr


def test_one_stranger_cannot_lock_others_out(tmp_path: Path, server, client) -> None:
    from fastxfer.protocol import limits

    idle = []
    try:
        for _ in range(limits.UNAUTH_PER_ADDRESS * 2 + 20):  # more than both workers allow it
            idle.append(socket.create_connection(("127.0.0.1", server.port),
                                                 source_address=("127.0.0.2", 0)))
        time.sleep(0.5)
        closed = 0
        for s in idle:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (socket.timeout, OSError):
                pass
        assert closed >= 20
        f = make_file(tmp_path / "still.bin", 4 << 20)
        done = client.send(server, f)
        assert done.returncode == 0, done.stderr
    finally:
        for s in idle:
            s.close()


def test_strangers_from_many_addresses_cannot_lock_a_client_out(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "through.bin", 4 << 20)
    # 40 addresses x 64 idle connections, each reopened as soon as it is cut:
    # 2,560 at once against the 2 x 512 slots of both workers.
    with Flood(server.port, loopback_sources(40), 64, seconds=15, max_opens=60_000) as flood:
        assert wait_for(lambda: flood.held == 40 * 64 and flood.cuts >= 500, timeout=10), (flood.held, flood.cuts)
        before = flood.cuts
        # No retry allowed: a reset of any of the client's connections ends the send (exit 4).
        done = fx(client.home, "send", f, "--to", server.address, env={"FASTXFER_RECONNECTS": "0"}, timeout=60)
        during = flood.cuts - before
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.root / "laptop" / "through.bin") == sha256_file(f)
    assert during > 100  # the flood went on cycling all along the send
    log = server.log_text()
    assert "to make room for" in log
    assert not re.search(r"(cut|dropped|refused) 127\.0\.0\.1:\d", log)  # the client was never cut


def test_serve_connections_sets_the_slots_and_half_of_them_for_strangers(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=1, extra=("--connections", "16"))
    idle = []
    try:
        for _ in range(9):  # one more than 16 / 2, from one address well under its own limit
            idle.append(socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.2", 0)))
        assert wait_for(lambda: "holding the most of 8 unauthenticated connections" in srv.log_text(), timeout=5)
        ends = []
        for s in idle:
            s.settimeout(0.2)
            try:
                ends.append(s.recv(1) == b"")
            except socket.timeout:
                ends.append(False)
            except OSError:
                ends.append(True)
        assert sum(ends) == 1, ends  # one cut to make room, the newest served
        assert not ends[-1]
    finally:
        for s in idle:
            s.close()
        srv.stop()


def test_a_refused_first_connection_is_tried_again_until_the_server_listens(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "early.bin", 1 << 20)
    server.stop()  # the port refuses connections until the server is back
    proc = subprocess.Popen(FX + ["send", str(f), "--to", server.address],
                            env=dict(os.environ, FASTXFER_HOME=str(client.home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # still trying
        again = start_server(server.home, server.root, port=server.port)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            again.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert sha256_file(server.root / "laptop" / "early.bin") == sha256_file(f)


def test_a_refused_first_connection_gives_up_after_the_backoff(tmp_path: Path, server, client) -> None:
    from fastxfer.client import retry

    server.stop()
    start = time.monotonic()
    done = fx(client.home, "ls", "--from", server.address, env={"FASTXFER_RECONNECTS": "2"}, timeout=60)
    took = time.monotonic() - start
    assert done.returncode == 4, done.stderr
    assert "refused" in done.stderr
    waits = retry.Backoff.delay(1) + retry.Backoff.delay(2)
    assert waits <= took < waits + 10


def test_random_bytes_at_the_port_for_a_while(tmp_path: Path, server, client) -> None:
    pids = sorted(server.worker_pids())
    rng = random.Random(1234)
    deadline = time.monotonic() + 3.0
    sent = 0
    while time.monotonic() < deadline and sent < 300:
        kind = rng.randrange(4)
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 4096))
        elif kind == 1:
            data = b"\x16\x03\x01" + rng.randbytes(rng.randrange(0, 600))
        elif kind == 2:
            data = b"FXS1" + rng.randbytes(rng.randrange(0, 700))
        else:
            data = b"FXS1\x00\x40" + rng.randbytes(64 + 32) + rng.randbytes(rng.randrange(0, 64))
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
                s.sendall(data)
        except OSError:
            pass
        sent += 1
    f = make_file(tmp_path / "after.bin", 4 << 20)
    done = client.send(server, f)
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.root / "laptop" / "after.bin") == sha256_file(f)
    assert sorted(server.worker_pids()) == pids


def test_sigterm_lets_running_transfers_finish_and_refuses_new(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "draining.bin", 32 << 20)
    relay = Relay(server.port, throttled(16 << 20))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M")
        assert wait_for(lambda: recorded_chunks(server) >= 1 or relay.upstream > 4 << 20)
        stopped_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = client.send(server, make_file(tmp_path / "late.bin", 1000))
        _, err = proc.communicate(timeout=60)
        code = server.proc.wait(timeout=40)
    finally:
        relay.close()
    assert late.returncode in (4, 10), late.stderr  # refused: busy, or already gone
    assert proc.returncode == 0, err
    assert sha256_file(server.root / "laptop" / "draining.bin") == sha256_file(src)
    assert not (server.root / "laptop" / "late.bin").exists()
    assert code == 0 and time.monotonic() - stopped_at < 35


def test_sixteen_clients_four_streams_two_workers(tmp_path: Path, server) -> None:
    from fastxfer.trust import identity
    from fastxfer.trust.clients import ClientList
    from fastxfer.trust.pins import PinList, parse_address

    workers = [psutil.Process(p) for p in server.worker_pids()]
    warm = make_client(tmp_path, server, "warm")
    assert warm.send(server, make_file(tmp_path / "warm.bin", 8 << 20)).returncode == 0
    time.sleep(0.5)
    fds_idle = sum(w.num_fds() for w in workers)
    rss_idle = sum(w.memory_info().rss for w in workers)
    homes, sources = [], []
    host, port = parse_address(server.address)
    for i in range(16):
        home = tmp_path / f"c{i}"
        ident = identity.load_or_create(home)
        ClientList(server.home).add(ident.fingerprint, f"c{i}")
        PinList(home).add(host, port, identity.parse_fp(server.fingerprint))
        homes.append(home)
        sources.append(make_file(tmp_path / f"src{i}" / "data.bin", 16 << 20, seed=i))
    procs = [subprocess.Popen(FX + ["send", str(s), "--to", server.address, "--streams", "4",
                                    "--chunk-size", "1M"],
                              env=dict(os.environ, FASTXFER_HOME=str(h)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h, s in zip(homes, sources)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for i, s in enumerate(sources):
        assert sha256_file(server.root / f"c{i}" / "data.bin") == sha256_file(s)
    def fds() -> list[str]:
        return sorted(os.readlink(f"/proc/{w.pid}/fd/{fd}") for w in workers for fd in os.listdir(f"/proc/{w.pid}/fd"))

    # Idle level: what the workers held before, plus at most a full pool of
    # manifest connections (database and WAL descriptors) each.
    from fastxfer.store.manifest import POOL

    bound = fds_idle + 3 * POOL * len(workers)
    assert wait_for(lambda: sum(w.num_fds() for w in workers) <= bound, 10), "\n".join(fds())
    assert sum(w.memory_info().rss for w in workers) < rss_idle + (64 << 20)
    assert all(c.status() != psutil.STATUS_ZOMBIE for c in psutil.Process(server.proc.pid).children())


def test_keep_versions_is_keep_last_and_frees_what_no_kept_snapshot_holds(tmp_path: Path) -> None:
    home, root = tmp_path / "server-home", tmp_path / "root"
    fx(home, "id", check=True)
    srv = subprocess.Popen(FX + ["serve", "--root", str(root), "--bind", "127.0.0.1", "--port", "0",
                                 "--keep-versions", "2", "--min-age", "0"],
                           env=dict(os.environ, FASTXFER_HOME=str(home)),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           start_new_session=True)
    try:
        port = int(next(line for line in srv.stdout if line.startswith("listening")).rsplit(":", 1)[1])

        class S:  # just what make_client and send need
            pass

        s = S()
        s.home, s.address, s.fingerprint = home, f"127.0.0.1:{port}", fx(home, "id").stdout.strip()
        c = make_client(tmp_path, s, "laptop")
        f = tmp_path / "doc.txt"
        for n in range(5):
            f.write_text(f"version {n}\n")
            os.utime(f, ns=(n * 10**9, n * 10**9))
            assert c.send(s, f).returncode == 0
        kept = sorted(p.read_text() for p in (root / ".fastxfer" / "versions" / "laptop").glob("doc.txt~*"))
        # The two newest snapshots are kept (5: version 4, in the view; 4: version 3, an older copy).
        assert kept == ["version 3\n"]
        assert (root / "laptop" / "doc.txt").read_text() == "version 4\n"
        listed = json.loads(fx(c.home, "snapshots", "--from", s.address, "--json").stdout)["snapshots"]
        assert [snap["id"] for snap in listed] == [4, 5]
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)


def test_abandoned_staging_is_cleaned_at_start(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "left.bin", 4 << 20)
    relay = Relay(server.port, cut_at(1 << 20, times=10**9))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_send(client, relay, src, "--streams", "1", "--chunk-size", "1M")
        time.sleep(1.5)
        proc.kill()
        proc.wait()
    finally:
        relay.close()
    staging = server.root / ".fastxfer" / "staging" / "laptop"
    assert list(staging.glob("*.meta"))
    server.stop()
    old = time.time() - 8 * 24 * 3600
    for p in staging.iterdir():
        os.utime(p, (old, old))
    again = start_server(server.home, server.root)
    try:
        assert list(staging.iterdir()) == []
    finally:
        again.stop()


def test_a_second_send_of_a_file_another_send_commits_meanwhile_says_so_at_once(tmp_path: Path, server,
                                                                                 client) -> None:
    # Two sends of one file share its transfer (same client, path, size and
    # time). The first one's streams are held in a relay after their opening,
    # so its put is made and none of its chunks has arrived when the second,
    # direct, sends the whole file and commits it, taking the staging with it.
    src = make_file(tmp_path / "shared.bin", 32 << 20, seed=8)
    with held_send(client, server, src, "--streams", "2", "--chunk-size", "1M", "-vv") as (held, gate):
        other = client.send(server, src, "--streams", "2", "--chunk-size", "1M", "-v", timeout=60)
        other_end = time.monotonic()
        gate.set()
        out, err = held.communicate(timeout=60)
        held_end = time.monotonic()
    assert other.returncode == 0 and "new       shared.bin  (32.00 MiB)" in other.stdout, other.stderr
    assert held.returncode == 0, err  # not 38 s of reconnects to an unknown transfer and exit 4
    assert ("unchanged shared.bin  (stored meanwhile by another send of it: the server holds this very "
            "content)") in out, out
    assert "0 files stored and verified, 1 unchanged, 0 failed" in out
    assert held_end - other_end < 5, held_end - other_end
    assert sha256_file(server.root / "laptop" / "shared.bin") == sha256_file(src)
    sums = fx(client.home, "sums", "shared.bin", "--from", server.address, check=True)
    assert sums.stdout.split()[0] == sha256_file(src)


def test_a_commit_after_another_send_committed_the_file_is_unchanged(tmp_path: Path, server, client) -> None:
    # The first send's every chunk reaches the server; its commit is held in
    # the relay while a second, direct, send resumes the same transfer and
    # commits it; released, the first one's commit names a transfer gone.
    size = 32 << 20
    src = make_file(tmp_path / "late.bin", size, seed=10)
    gate, held = threading.Event(), threading.Event()
    streamed: dict[int, int] = {}

    def hold_the_commit(index: int, first: bytes, offset: int, data: bytes) -> bytes:
        if first[:4] == b"FXS1":
            streamed[index] = offset + len(data)
        elif sum(streamed.values()) >= size:  # every chunk has gone by: this is the commit
            held.set()
            gate.wait(30)
        return data

    relay = Relay(server.port, hold_the_commit)
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        first = start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M", "-vv")
        assert held.wait(60)
        other = client.send(server, src, "--streams", "2", "--chunk-size", "1M", "-v", timeout=60)
        gate.set()
        out, err = first.communicate(timeout=60)
    finally:
        gate.set()
        relay.close()
    assert other.returncode == 0 and "new       late.bin  (32.00 MiB)" in other.stdout, other.stderr
    assert first.returncode == 0, err  # not exit 6, "unknown transfer"
    assert "unchanged late.bin  (stored meanwhile by another send of it" in out, out
    assert sha256_file(server.root / "laptop" / "late.bin") == sha256_file(src)


def test_two_sends_of_one_file_at_once_both_end_stored_or_unchanged(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "twice.bin", 64 << 20, seed=9)
    args = [*FX, "send", str(src), "--to", server.address, "--streams", "2", "--chunk-size", "1M", "-vv"]
    env = dict(os.environ, FASTXFER_HOME=str(client.home))
    sends = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done, ends = [], []
    for proc in sends:
        done.append(proc.communicate(timeout=60))
        ends.append(time.monotonic())
    assert [p.returncode for p in sends] == [0, 0], done
    assert abs(ends[1] - ends[0]) < 5, ends
    outs = sorted(out for out, _ in done)  # which one stores it is a race; one does
    assert "new       twice.bin  (64.00 MiB)" in outs[0] + outs[1], outs
    # The other found it stored meanwhile, or sent it too: the same content, stored again.
    assert any(line.startswith(("unchanged twice.bin  (", "touched   twice.bin  ("))
               for out in outs for line in out.splitlines()), outs
    assert sha256_file(server.root / "laptop" / "twice.bin") == sha256_file(src)
