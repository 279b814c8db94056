"""Hard links and copies: a file with several names is sent once and comes
back as one file with several names; a copy of a file the server already
holds is not sent again; a sparse file's holes are neither sent nor written."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import fx, make_file, sha256_file
from test_tree import snapshot as tree_of


def get(client, server, *args) -> subprocess.CompletedProcess:
    return fx(client.home, "get", *args, "--from", server.address, timeout=300)


def inode(path: Path) -> int:
    return os.lstat(path).st_ino


def test_a_hard_linked_file_is_sent_once_and_comes_back_linked(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    make_file(top / "a" / "x", 400_000, seed=1)  # large: put and chunks
    (top / "b").mkdir()
    os.link(top / "a" / "x", top / "b" / "y")
    os.link(top / "a" / "x", top / "b" / "z")
    make_file(top / "s", 100, seed=2)  # small: a bundle
    os.link(top / "s", top / "s2")
    done = client.send(server, top, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes_sent"] < 400_000 + 100 + 64_000, report  # each content once
    assert report["recorded"] == 3 and report["snapshot_state"] == "complete"

    out = tmp_path / "out"
    done = get(client, server, "t", "-o", out)
    assert done.returncode == 0, done.stderr
    assert tree_of(out) == tree_of(top)
    assert inode(out / "a" / "x") == inode(out / "b" / "y") == inode(out / "b" / "z")
    assert inode(out / "s") == inode(out / "s2") != inode(out / "a" / "x")
    done = get(client, server, "t", "-o", out)  # again: everything already there, nothing relinked
    assert done.returncode == 0 and "5 already there" in done.stdout, done.stdout
    assert inode(out / "a" / "x") == inode(out / "b" / "z")

    only = tmp_path / "only-b"  # its first name is not in this restore: each later name is fetched
    done = get(client, server, "t/b", "-o", only)
    assert done.returncode == 0, done.stderr
    assert (only / "y").read_bytes() == (top / "a" / "x").read_bytes() == (only / "z").read_bytes()

    sums = fx(client.home, "sums", "t", "--from", server.address)
    lines = dict(line.split("  ", 1)[::-1] for line in sums.stdout.splitlines())
    assert sums.returncode == 0 and lines["t/b/y"] == lines["t/a/x"] == lines["t/b/z"]

    os.unlink(top / "b" / "y")  # the link broken: an independent file of its own
    make_file(top / "b" / "y", 5000, seed=3)
    assert client.send(server, top).returncode == 0
    latest = tmp_path / "latest"
    assert get(client, server, "t", "-o", latest).returncode == 0
    assert tree_of(latest) == tree_of(top) and inode(latest / "b" / "y") != inode(latest / "a" / "x")
    first = tmp_path / "first"
    assert get(client, server, "t", "--at", "1", "-o", first).returncode == 0
    assert inode(first / "a" / "x") == inode(first / "b" / "y")


def test_a_copy_of_a_stored_file_is_linked_on_the_server_not_sent(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    make_file(top / "a.bin", 32 << 20, seed=5)
    assert client.send(server, top).returncode == 0
    copy = top / "sub" / "b.bin"
    copy.parent.mkdir()
    copy.write_bytes((top / "a.bin").read_bytes())  # a new name and a new time, the same bytes
    make_file(top / "c.bin", 32 << 20, seed=6)  # the same size, other bytes: sent in full
    done = client.send(server, top, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["linked_bytes"] == 32 << 20, report
    assert report["bytes_sent"] < (32 << 20) + (8 << 20), report  # c.bin, and nothing of b.bin
    stored = server.root / "laptop" / "t"
    assert inode(stored / "sub" / "b.bin") == inode(stored / "a.bin")  # one copy on the server's disk
    assert sha256_file(stored / "c.bin") == sha256_file(top / "c.bin")

    out = tmp_path / "out"
    assert get(client, server, "t", "-o", out).returncode == 0
    assert tree_of(out) == tree_of(top)  # each name with its own time and mode
    check = fx(server.home, "check", "--root", str(server.root), timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_sparse_file_stays_sparse_on_the_server_and_on_restore(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    top.mkdir()
    sparse = top / "disk.img"
    with open(sparse, "wb") as f:  # 64 MiB: data at the start, in the middle and at the end; holes between
        f.write(os.urandom(1 << 20))
        f.seek(30 << 20)
        f.write(os.urandom(1 << 20))
        f.truncate(64 << 20)
        f.seek((64 << 20) - 4096)
        f.write(b"end" * 1000)
    if os.stat(sparse).st_blocks * 512 > 8 << 20:
        pytest.skip("this filesystem does not keep holes")
    done = client.send(server, top, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes_sent"] < 16 << 20, report  # the holes travel as a list of chunk numbers
    stored = server.root / "laptop" / "t" / "disk.img"
    assert sha256_file(stored) == sha256_file(sparse)
    assert os.stat(stored).st_blocks * 512 < 16 << 20  # holes are not written on the server

    out = tmp_path / "out"
    restored = get(client, server, "t", "-o", out)
    assert restored.returncode == 0, restored.stderr
    assert sha256_file(out / "disk.img") == sha256_file(sparse)
    assert os.stat(out / "disk.img").st_blocks * 512 < 16 << 20  # nor on restore
    received = re.search(r"received ([\d.]+) (B|KiB|MiB|GiB)", restored.stdout)
    assert received and float(received[1]) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[
        received[2]] < 16 << 20, restored.stdout  # nor sent back: the server answers a hole with ZEROS
    again = client.send(server, top, "--checksum")  # the stored copy reads back as the same content
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout


def test_a_hole_punched_in_a_stored_file_is_caught_not_restored_as_zeros(tmp_path: Path, server, client) -> None:
    """The server answers a chunk in a hole with ZEROS: a stored copy whose data
    became a hole (a damaged disk, a hostile server) fails its digest check."""
    import shutil

    if shutil.which("fallocate") is None:
        pytest.skip("no fallocate to punch a hole with")
    top = tmp_path / "t"
    make_file(top / "data.bin", 8 << 20, seed=5)
    assert client.send(server, top, "--chunk-size", "1M").returncode == 0
    stored = server.root / "laptop" / "t" / "data.bin"
    punched = subprocess.run(["fallocate", "--punch-hole", "--keep-size", "--offset", str(2 << 20),
                              "--length", str(1 << 20), str(stored)], capture_output=True, text=True)
    if punched.returncode != 0 or os.stat(stored).st_blocks * 512 > 7 << 20:
        pytest.skip(f"this filesystem cannot punch holes: {punched.stderr.strip()}")
    out = tmp_path / "out"
    done = get(client, server, "t", "-o", out)
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert "data.bin" in done.stderr and not (out / "data.bin").exists()
    assert [p.name for p in out.iterdir()] == []  # no temporary left behind either
