"""Filters and standard input against a real server: what is stored is
exactly what the rules leave in, byte for byte; what a filter now leaves
out leaves the view and is said so; standard input is stored whole."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FX, files_under, fx, make_file, sha256_file, wait_for

TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n"


def build(top: Path) -> None:
    make_file(top / "main.c", 1000, seed=1)
    make_file(top / "main.o", 300_000, seed=2)
    make_file(top / "keep.o", 2000, seed=3)
    make_file(top / "lib" / "util.c", 500, seed=4)
    make_file(top / "lib" / "util.o", 600, seed=5)
    make_file(top / "build" / "out.bin", 400_000, seed=6)
    make_file(top / "logs" / "app.log", 100, seed=7)
    make_file(top / "logs" / "keep.log", 110, seed=8)
    make_file(top / "docs" / "build", 120, seed=9)  # a file named like an excluded folder
    make_file(top / ".cache" / "blob", 500_000, seed=10)
    make_file(top / ".cache" / "sub" / "more", 10, seed=11)
    (top / ".cache" / "CACHEDIR.TAG").write_bytes(TAG)


KEPT = ["src", "src/.cache", "src/.cache/CACHEDIR.TAG", "src/docs", "src/docs/build", "src/keep.o", "src/lib",
        "src/lib/util.c", "src/logs", "src/logs/keep.log", "src/main.c"]


def test_the_filters_choose_exactly_what_is_stored(tmp_path: Path, server, client) -> None:
    top = tmp_path / "src"
    build(top)
    rules = tmp_path / "excludes"
    rules.write_text("# logs but the one we keep\n+ keep.log\n\n*.log\n")
    filters = ["--exclude-from", rules, "--include", "keep.o", "--exclude", "*.o", "--exclude", "build/",
               "--exclude-caches"]
    dry = client.send(server, top, *filters, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "filters: 6 entries excluded" in dry.stdout and "1 cache folder sent as its tag only" in dry.stdout

    done = client.send(server, top, *filters)
    assert done.returncode == 0, done.stderr
    assert files_under(server.root / "laptop") == KEPT
    for rel in KEPT:
        local, stored = top.parent / rel, server.root / "laptop" / rel
        if local.is_file():
            assert sha256_file(stored) == sha256_file(local), rel
    # app.log, main.o, util.o, build/ (once, with what it holds), and .cache's blob and sub
    assert "filters: 6 entries excluded" in done.stdout, done.stdout
    assert "1 cache folder sent as its tag only" in done.stdout
    assert done.stderr.count("a cache (CACHEDIR.TAG): only its tag is sent") == 1
    report = json.loads(client.send(server, top, *filters, "--json").stdout)
    assert report["excluded"] == 6 and report["stored"] == 0 and report["deleted"] == 0


def test_what_a_filter_now_leaves_out_leaves_the_view_and_is_said_so(tmp_path: Path, server, client) -> None:
    top = tmp_path / "src"
    build(top)
    first = client.send(server, top)
    assert first.returncode == 0, first.stderr
    assert "deleted or" not in first.stderr and "filters:" not in first.stdout
    second = client.send(server, top, "--exclude", "*.o")
    assert second.returncode == 0, second.stderr
    assert "3 deleted" in second.stdout and "filters: 3 entries excluded" in second.stdout
    assert "note: of the 3 deleted, some may still be at the source" in second.stderr
    assert not (server.root / "laptop" / "src" / "main.o").exists()
    # the earlier snapshot keeps it
    out = tmp_path / "back"
    got = fx(client.home, "get", "src/main.o", "--at", "1", "-o", out, "--from", server.address)
    assert got.returncode == 0, got.stderr
    assert sha256_file(out) == sha256_file(top / "main.o")


def send_stdin(client, server, data: bytes, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(FX + ["send", "-", *args, "--to", server.address], input=data, capture_output=True,
                          timeout=120, env=dict(os.environ, FASTXFER_HOME=str(client.home), **(env or {})))


def test_standard_input_is_stored_whole_under_its_name(tmp_path: Path, server, client) -> None:
    data = os.urandom(5 << 20) + b"tail"
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    before = time.time_ns()
    done = send_stdin(client, server, data, "--name", "db.dump", "--dest", "dumps", "--sha256",
                      env={"TMPDIR": str(spool_dir)})
    assert done.returncode == 0, done.stderr
    stored = server.root / "laptop" / "dumps" / "db.dump"
    assert sha256_file(stored) == hashlib.sha256(data).hexdigest()
    assert f"{hashlib.sha256(data).hexdigest()}  -" in done.stdout.decode()
    st = stored.stat()
    assert st.st_mode & 0o777 == 0o600 and before - 10**9 <= st.st_mtime_ns <= time.time_ns()
    assert list(spool_dir.iterdir()) == []  # the spool is gone

    again = send_stdin(client, server, b"second\n", "--name", "dumps/db.dump", "--mode", "0640",
                       "--mtime", "@1700000000")
    assert again.returncode == 0, again.stderr
    st = stored.stat()
    assert stored.read_bytes() == b"second\n" and st.st_mode & 0o777 == 0o640
    assert st.st_mtime_ns == 1_700_000_000 * 10**9
    versions = fx(client.home, "ls", "dumps/db.dump", "--versions", "--from", server.address)
    assert versions.returncode == 0 and "dumps/db.dump" in versions.stdout  # the first copy is kept
    snaps = json.loads(fx(client.home, "snapshots", "--json", "--from", server.address).stdout)["snapshots"]
    assert [s["files"] for s in snaps] == [1, 1]


@pytest.mark.parametrize("args, message", [
    (["-", "other", "--name", "x", "--to", "127.0.0.1:1"], "must be the only PATH"),
    (["-", "--to", "127.0.0.1:1"], "needs --name"),
    (["-", "--name", "../up", "--to", "127.0.0.1:1"], "--name '../up'"),
    (["-", "--name", "x", "--exclude", "*.o", "--to", "127.0.0.1:1"], "standard input is one file"),
    (["f", "--name", "x", "--to", "127.0.0.1:1"], "--name is for standard input only"),
    (["-", "--name", "x", "--mode", "9", "--to", "127.0.0.1:1"], "--mode '9'"),
    (["-", "--name", "x", "--mtime", "soon", "--to", "127.0.0.1:1"], "--mtime 'soon'"),
    (["f", "--exclude-from", "/nonexistent/rules", "--to", "127.0.0.1:1"], "--exclude-from /nonexistent/rules"),
])
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = fx(tmp_path / "home", "send", *args, input="")
    assert done.returncode == 2 and message in done.stderr, done.stderr


def mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_one_file_system_keeps_a_mount_point_empty(tmp_path: Path, server, client) -> None:
    top = tmp_path / "src"
    make_file(top / "here.bin", 1000, seed=1)
    mounts = [top / "mnt", top / "deep" / "mnt2"]
    if not mount_tmpfs(mounts[0]):
        pytest.skip("mounting a tmpfs needs root and the right to mount")
    try:
        assert mount_tmpfs(mounts[1])
        for i, m in enumerate(mounts):
            make_file(m / "inside.bin", 2000, seed=2 + i)
            make_file(m / "sub" / "more.bin", 10, seed=4 + i)
        done = client.send(server, top, "-x")
        assert done.returncode == 0, done.stderr
        assert files_under(server.root / "laptop") == ["src", "src/deep", "src/deep/mnt2", "src/here.bin", "src/mnt"]
        for m in mounts:
            assert done.stderr.count(f"note: {m}: another filesystem, not entered") == 1
        assert "filters: 2 other filesystems not entered" in done.stdout
        whole = client.send(server, top)  # without -x: everything below
        assert whole.returncode == 0, whole.stderr
        assert "src/mnt/sub/more.bin" in files_under(server.root / "laptop")
        assert sha256_file(server.root / "laptop" / "src" / "mnt" / "inside.bin") == sha256_file(mounts[0] / "inside.bin")
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", str(m)], capture_output=True)


def test_standard_input_cut_short_resumes_with_the_same_mtime_and_leaves_no_spool(tmp_path: Path, server,
                                                                                   client) -> None:
    from relay import Relay, passthrough, throttled

    chunk, size = 1 << 20, 64 << 20
    data = make_file(tmp_path / "dump", size).read_bytes()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    args = ["--name", "db.dump", "--mtime", "@1700000000", "--streams", "2", "--chunk-size", "1M"]
    env = dict(os.environ, FASTXFER_HOME=str(client.home), TMPDIR=str(spool_dir))
    staging = server.root / ".fastxfer" / "staging" / "laptop"

    def recorded() -> int:
        from fastxfer.protocol import layout

        return sum(len(layout.parse_record(r.read_bytes(), chunk)) for r in staging.glob("*.rec"))

    slow = Relay(server.port, throttled(6 << 20))
    try:
        fx(client.home, "pin", f"127.0.0.1:{slow.port}", server.fingerprint, check=True)
        proc = subprocess.Popen(FX + ["send", "-", *args, "--to", f"127.0.0.1:{slow.port}"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.stdin.write(data)
        proc.stdin.close()
        assert wait_for(lambda: recorded() >= 1)
        os.kill(proc.pid, 9)  # no clean-up runs: the spool must still be gone
        proc.wait()
    finally:
        slow.close()
    assert list(spool_dir.iterdir()) == []
    have = recorded()
    assert 1 <= have < size // chunk
    counting = Relay(server.port, passthrough)
    try:
        fx(client.home, "pin", f"127.0.0.1:{counting.port}", server.fingerprint, check=True)
        done = subprocess.run(FX + ["send", "-", *args, "--to", f"127.0.0.1:{counting.port}"], env=env,
                              input=data, capture_output=True, timeout=120)
    finally:
        counting.close()
    assert done.returncode == 0, done.stderr
    assert b"were already on the server" in done.stdout
    assert sha256_file(server.root / "laptop" / "db.dump") == hashlib.sha256(data).hexdigest()
    assert counting.upstream <= (size - have * chunk) * 1.05 + 64 * 1024


def test_a_spool_that_does_not_fit_is_a_local_error_and_sends_nothing(tmp_path: Path, server, client) -> None:
    small = tmp_path / "small"
    if not mount_tmpfs(small):
        pytest.skip("mounting a tmpfs needs root and the right to mount")
    try:
        done = send_stdin(client, server, os.urandom(6 << 20), "--name", "big.dump", env={"TMPDIR": str(small)})
        assert done.returncode == 7, done.stderr
        assert f"standard input could not be spooled to {small}: No space left on device".encode() in done.stderr
        assert list(small.iterdir()) == [] and not (server.root / "laptop" / "big.dump").exists()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
