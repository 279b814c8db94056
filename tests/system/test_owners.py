"""Owners and groups: recorded by every send, given back by a get run as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import fx, make_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to other users")


def owners(top: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), top)] = (st.st_uid, st.st_gid)
    return out


def test_owners_come_back_as_recorded_from_the_view_and_from_a_snapshot(tmp_path: Path, server, client) -> None:
    top = tmp_path / "d"
    make_file(top / "a", 1000, seed=1)
    make_file(top / "big", 400_000, seed=2)  # a large file, placed as a bundle's are not
    make_file(top / "sub" / "b", 10, seed=3)
    os.symlink("a", top / "l")
    os.mkfifo(top / "fifo")
    for name, ids in {"a": (1234, 1234), "big": (1234, 99), "sub": (4321, 4321), "l": (1234, 99),
                      "fifo": (777, 778)}.items():
        os.chown(top / name, *ids, follow_symlinks=False)
    assert client.send(server, top).returncode == 0
    want = owners(top)
    assert want["sub/b"] == (0, 0) and want["l"] == (1234, 99)

    done = fx(client.home, "get", "d", "--from", server.address, "-o", str(tmp_path / "now"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert owners(tmp_path / "now") == want

    os.chown(top / "a", 5555, 5555)  # a change of owner only: the next snapshot records it
    assert client.send(server, top).returncode == 0
    done = fx(client.home, "get", "d", "--from", server.address, "--at", "1", "-o", str(tmp_path / "then"),
              timeout=120)
    assert done.returncode == 0, done.stderr
    assert owners(tmp_path / "then") == want
    done = fx(client.home, "get", "d", "--from", server.address, "-o", str(tmp_path / "later"), timeout=120)
    assert done.returncode == 0 and owners(tmp_path / "later")["a"] == (5555, 5555)
