"""The whole story of a backup, as a user lives it: a tree with every kind of
entry is sent, changed in every way, sent again; each snapshot comes back
exactly, and forgetting the first makes it unreachable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from conftest import fx, make_file


def tree(top: Path) -> dict:
    """Everything get must give back: kind, content or target, mode, time,
    owner of each entry, which names share a file, and which files are sparse."""
    out: dict = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            owner = (st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), owner)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, owner)
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", stat.S_IMODE(st.st_mode), owner)
            else:
                with open(p, "rb") as f:
                    data = f.read()
                sparse = st.st_blocks * 512 < st.st_size // 2
                out[rel] = ("file", data, stat.S_IMODE(st.st_mode), st.st_mtime_ns, owner, sparse)
                inodes.setdefault(st.st_ino, []).append(rel)
    out["(shared)"] = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return out


def first_tree(top: Path) -> None:
    make_file(top / "keep.txt", 100, seed=1)
    make_file(top / "gone.txt", 50, seed=2)
    make_file(top / "to-folder", 300_000, seed=3)
    make_file(top / "to-file" / "inside.txt", 10, seed=4)
    os.symlink("keep.txt", top / "relative-link")
    os.symlink("../elsewhere/x", top / "climbing-link")
    os.symlink("/etc/hostname", top / "absolute-link")
    make_file(top / "pair-a", 400_000, seed=5)
    os.link(top / "pair-a", top / "pair-b")
    with open(top / "sparse.img", "wb") as f:
        f.write(b"start")
        f.truncate(48 << 20)
    make_file(top / "owned.txt", 20, seed=6)
    if os.geteuid() == 0:
        os.chown(top / "owned.txt", 1234, 4321)
    os.mkfifo(top / "fifo")
    os.utime(top / "to-file", ns=(1_500_000_000 * 10**9,) * 2)


def second_tree(top: Path) -> None:
    (top / "gone.txt").unlink()
    (top / "to-folder").unlink()
    make_file(top / "to-folder" / "now-inside.bin", 1000, seed=7)
    (top / "to-file" / "inside.txt").unlink()
    (top / "to-file").rmdir()
    make_file(top / "to-file", 30, seed=8)
    make_file(top / "keep.txt", 120, seed=9)  # changed content


def get(client, server, *args) -> subprocess.CompletedProcess:
    return fx(client.home, "get", *args, "--from", server.address, timeout=300)


def test_every_kind_of_change_comes_back_exactly_and_forget_ends_it(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    first_tree(top)
    done = client.send(server, top, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["snapshot"] == 1
    want1 = tree(top)
    assert want1["(shared)"] == [["pair-a", "pair-b"]] and want1["sparse.img"][5]
    second_tree(top)
    done = client.send(server, top, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["snapshot"] == 2
    want2 = tree(top)

    first = tmp_path / "first"
    done = get(client, server, "t", "--at", "1", "-o", first)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree(first) == want1
    latest = tmp_path / "latest"
    for _ in range(2):  # the same get twice: the same tree, nothing nested
        done = get(client, server, "t", "-o", latest)
        assert done.returncode == 0, done.stdout + done.stderr
        assert tree(latest) == want2

    forget = fx(server.home, "forget", "--root", str(server.root), "--client", "laptop", "--keep-last", "1",
                "--min-age", "0", "--prune", timeout=120)
    assert forget.returncode == 0, forget.stdout + forget.stderr
    listed = json.loads(fx(client.home, "snapshots", "--json", "--from", server.address).stdout)["snapshots"]
    assert [s["id"] for s in listed] == [2]
    gone = get(client, server, "t", "--at", "1", "-o", tmp_path / "too-late")
    assert gone.returncode == 6 and "no snapshot 1" in gone.stderr, gone.stderr
    after = tmp_path / "after-forget"  # what the kept snapshot needs is all still there
    assert get(client, server, "t", "-o", after).returncode == 0 and tree(after) == want2
