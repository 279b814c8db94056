"""Space is not a weapon: a declared size takes nothing, shares and quotas hold,
and an administrator sees and clears unfinished transfers."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import fx, make_client, make_file, sha256_file, start_server
from test_hostile import control_session

MIB = 1 << 20


@pytest.fixture
def ext4_disk(tmp_path: Path):
    """A small real ext4 (loop-mounted): a memory filesystem is never preallocated."""
    mkfs = shutil.which("mkfs.ext4", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")  # a bare PATH lacks sbin
    if mkfs is None:
        pytest.skip("no mkfs.ext4 here")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(96 * MIB)
    made = subprocess.run([mkfs, "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    if made.returncode or done.returncode:
        pytest.skip(f"cannot mount a small ext4 here: {made.stderr.strip()} {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def put_raw(client, srv, path: str, size: int) -> dict:
    control, _ = control_session(client, srv)
    try:
        return control.call({"t": "put", "files": [
            {"path": path, "size": size, "mtime_ns": 1, "mode": 0o644, "chunk": MIB}]}, "put_ok")["files"][0]
    finally:
        control.close()


def test_a_declared_size_takes_no_space_from_other_clients(tmp_path: Path, ext4_disk: Path) -> None:
    """The review's attack: one client declares nearly all the free space and
    sends nothing.  Before, the server preallocated it at once and every other
    client's send was refused for lack of space, across a restart."""
    srv = start_server(tmp_path / "server-home", ext4_disk / "root")
    try:
        greedy = make_client(tmp_path, srv, "greedy")
        other = make_client(tmp_path, srv, "other")
        before = free(ext4_disk)
        whole = put_raw(greedy, srv, "all.bin", before - 128 * 1024)
        assert whole["t"] == "error" and "more than one client may hold" in whole["message"], whole
        assert "MiB" in whole["message"]
        most = put_raw(greedy, srv, "most.bin", int(before * 0.8))
        assert most["t"] == "ok", most
        assert free(ext4_disk) > before - 4 * MIB  # declared, not taken
        src = make_file(tmp_path / "mine.bin", int(before * 0.5))
        done = other.send(srv, src)
        assert done.returncode == 0, done.stderr
        assert sha256_file(srv.root / "other" / "mine.bin") == sha256_file(src)
    finally:
        srv.stop()
    srv = start_server(tmp_path / "server-home", ext4_disk / "root", port=srv.port)
    try:
        again = make_file(tmp_path / "again.bin", 8 * MIB, seed=2)
        assert other.send(srv, again).returncode == 0  # nothing was held across the restart either
    finally:
        srv.stop()


def test_a_quota_bounds_what_a_client_holds(tmp_path: Path, server, client) -> None:
    assert fx(server.home, "trust", "quota", "laptop", "5M", check=True).stdout.strip() == "quota of laptop: 5.00 MiB"
    assert "quota 5.00 MiB" in fx(server.home, "trust", "list", check=True).stdout
    first = make_file(tmp_path / "a.bin", 3 * MIB)
    assert client.send(server, first).returncode == 0
    second = make_file(tmp_path / "b.bin", 3 * MIB, seed=1)
    done = client.send(server, second)
    assert done.returncode == 6, done.stderr
    assert "b.bin: over this client's quota: 3.00 MiB needed, 2.00 MiB left of 5.00 MiB" in done.stderr
    assert not (server.root / "laptop" / "b.bin").exists()
    # Small files travel in bundles: counted too.
    tree = tmp_path / "small"
    for i in range(40):
        make_file(tree / f"f{i}.bin", 100 * 1024, seed=10 + i)
    done = client.send(server, tree)
    # exit 9: the folder itself is stored, its files are not
    assert done.returncode == 9 and "a bundle of 40 small files: over this client's quota" in done.stderr
    assert not list((server.root / "laptop" / "small").iterdir())
    fx(server.home, "trust", "quota", "laptop", "none", check=True)
    done = client.send(server, second)
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.root / "laptop" / "b.bin") == sha256_file(second)


def test_trust_add_takes_a_quota(tmp_path: Path, server) -> None:
    other = make_client(tmp_path, server, "desk", trust=False)
    fp = fx(other.home, "id", check=True).stdout.strip()
    out = fx(server.home, "trust", "add", fp, "--name", "desk", "--quota", "1M", check=True).stdout
    assert "quota of desk: 1.00 MiB" in out
    done = other.send(server, make_file(tmp_path / "big.bin", 2 * MIB))
    assert done.returncode == 6 and "over this client's quota" in done.stderr
    bad = fx(server.home, "trust", "quota", "desk", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr


def test_staging_lists_and_clears_unfinished_transfers(tmp_path: Path, server, client) -> None:
    from fastxfer.client.connect import open_stream
    from test_commit_fence import acked, put, send_chunk

    control, welcome = control_session(client, server)
    try:
        fid = put(control, "half.bin", 4 * MIB)
        held = put(control, "held.bin", 2 * MIB)
        fc = open_stream("127.0.0.1", server.port, welcome)
        from fastxfer.protocol import wire
        send_chunk(fc, fid, 0, os.urandom(MIB))
        send_chunk(fc, fid, MIB, os.urandom(MIB))
        fc.send(wire.SYNC)
        acked(fc, 2)
        fc.close()
    finally:
        control.close()
    listed = fx(server.home, "staging", "--root", str(server.root), check=True).stdout
    assert "laptop\thalf.bin\t2.00 MiB of 4.00 MiB received" in listed, listed
    assert "laptop\theld.bin\t0 B of 2.00 MiB received" in listed or "held.bin" in listed
    assert "2 unfinished transfers" in listed
    staging = server.root / ".fastxfer" / "staging" / "laptop"
    # A transfer a stream holds right now (the lock a stream takes) is left alone.
    fd = os.open(staging / (held.hex() + ".data"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        cleared = fx(server.home, "staging", "--root", str(server.root), "--client", "laptop", "--clear",
                     check=True).stdout
    finally:
        os.close(fd)
    assert "cleared 1 unfinished transfer," in cleared and "left alone" in cleared and "held.bin" in cleared
    assert not (staging / (fid.hex() + ".data")).exists()
    fx(server.home, "staging", "--root", str(server.root), "--clear", check=True)
    assert list(staging.iterdir()) == []
    assert "0 unfinished transfers" in fx(server.home, "staging", "--root", str(server.root), check=True).stdout
    # The server serves on: the file is sent again from the start.
    src = make_file(tmp_path / "half.bin", 4 * MIB)
    assert client.send(server, src).returncode == 0
    nothing = fx(server.home, "staging", "--root", str(tmp_path / "nowhere"))
    assert nothing.returncode == 2 and "not a fastxfer root" in nothing.stderr
