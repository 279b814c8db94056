"""Snapshots: every send records the tree as it was; the current view follows
the latest; get --at gives an older tree back exactly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import files_under, fx, make_file
from test_tree import snapshot as tree_of


def get(client, server, *args) -> subprocess.CompletedProcess:
    return fx(client.home, "get", *args, "--from", server.address, timeout=300)


def snaps(client, server, *args) -> list[dict]:
    done = fx(client.home, "snapshots", *args, "--json", "--from", server.address)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["snapshots"]


def test_a_deleted_file_leaves_the_view_and_comes_back_from_its_snapshot(tmp_path: Path, server, client) -> None:
    top = tmp_path / "Documents"
    make_file(top / "keep.txt", 100, seed=1)
    make_file(top / "old" / "gone.bin", 300_000, seed=2)  # a whole folder that goes
    make_file(top / "small-gone.txt", 50, seed=3)
    first = client.send(server, top, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["snapshot"], report["snapshot_state"], report["files"]) == (1, "complete", 3)
    was = tree_of(top)

    shutil.rmtree(top / "old")
    (top / "small-gone.txt").unlink()
    make_file(top / "new.txt", 70, seed=4)
    second = client.send(server, top)
    assert second.returncode == 0, second.stderr
    assert "snapshot 2 of laptop: 2 files" in second.stdout and "3 deleted" in second.stdout

    # The current view is the latest snapshot: on disk and in ls.
    assert files_under(server.root / "laptop") == ["Documents", "Documents/keep.txt", "Documents/new.txt"]
    listed = json.loads(fx(client.home, "ls", "Documents", "--json", "--from", server.address).stdout)["entries"]
    assert sorted(e["path"] for e in listed) == ["Documents", "Documents/keep.txt", "Documents/new.txt"]

    # The older tree is still whole, and get --at 1 gives it back exactly.
    at1 = json.loads(fx(client.home, "ls", "Documents", "--at", "1", "--json", "--from", server.address).stdout)["entries"]
    assert "Documents/old/gone.bin" in {e["path"] for e in at1}
    out = tmp_path / "restore"
    done = get(client, server, "Documents", "--at", "1", "-o", out)
    assert done.returncode == 0, done.stderr
    assert tree_of(out) == was
    again = get(client, server, "Documents", "--at", "1", "-o", out)  # run again: same place, nothing moves
    assert again.returncode == 0 and "received 0 B" in again.stdout, again.stderr
    assert not (out / "Documents").exists()  # merged into, never nested into

    listing = snaps(client, server)
    assert [(s["id"], s["state"], s["files"], s["paths"]) for s in listing] == [
        (1, "complete", 3, ["Documents"]), (2, "complete", 2, ["Documents"])]
    assert [(s["changed"], s["removed"]) for s in listing] == [(3, 0), (1, 3)]  # what each send changed
    shown = fx(client.home, "snapshots", "--from", server.address)
    assert shown.returncode == 0 and "Documents" in shown.stdout and "complete" in shown.stdout
    assert shown.stdout.splitlines()[0].split() == ["id", "time", "state", "files", "bytes", "changed", "deleted",
                                                    "paths"]
    assert shown.stdout.splitlines()[2].split()[-3:] == ["1", "3", "Documents"]

    diff = fx(client.home, "diff", "1", "latest", "--from", server.address)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [
        "+  Documents/new.txt", "-  Documents/old", "-  Documents/old/gone.bin", "-  Documents/small-gone.txt",
        "1 added, 3 removed, 0 changed, 0 changed kind, 0 changed mode, owner or time"]
    counts = json.loads(fx(client.home, "diff", "1", "2", "Documents/old", "--json", "--from", server.address).stdout)
    assert counts["counts"]["removed"] == 2 and counts["counts"]["added"] == 0


def test_kind_changes_both_ways_keep_every_snapshot_whole(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    make_file(top / "x" / "inside.bin", 2000, seed=1)  # folder, later a file
    make_file(top / "y", 8, seed=2)                    # file, later a folder
    os.symlink("y", top / "z")                         # link, later a file
    assert client.send(server, top).returncode == 0
    first = tree_of(top)
    shutil.rmtree(top / "x")
    make_file(top / "x", 9, seed=3)
    (top / "y").unlink()
    make_file(top / "y" / "deep.bin", 400, seed=4)
    (top / "z").unlink()
    make_file(top / "z", 10, seed=5)
    done = client.send(server, top)
    assert done.returncode == 0, done.stderr
    assert tree_of(server.root / "laptop" / "t") == tree_of(top)
    again = client.send(server, top)  # and nothing blocks the next send
    assert again.returncode == 0 and "0 files stored" in again.stdout, again.stderr
    for at, want in (("1", first), ("latest", tree_of(top))):
        out = tmp_path / f"at-{at}"
        got = get(client, server, "t", "--at", at, "-o", out)
        assert got.returncode == 0, got.stderr
        assert tree_of(out) == want


def test_specials_are_recorded_and_a_fifo_comes_back(tmp_path: Path, server, client) -> None:
    top = tmp_path / "s"
    make_file(top / "a.txt", 10)
    os.mkfifo(top / "pipe", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(top / "sock"))
    sock.close()
    dry = client.send(server, top, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    done = client.send(server, top)
    assert done.returncode == 0, done.stderr
    at = {e["path"]: e for e in json.loads(fx(client.home, "ls", "s", "--at", "latest", "--json",
                                                  "--from", server.address).stdout)["entries"]}
    assert (at["s/pipe"]["kind"], at["s/pipe"]["mode"], at["s/sock"]["kind"]) == ("fifo", 0o640, "socket")
    assert at["s/a.txt"]["uid"] == os.getuid() and at["s/a.txt"]["size"] == 10
    assert not (server.root / "laptop" / "s" / "pipe").exists()  # recorded in the catalog only
    out = tmp_path / "out"
    got = get(client, server, "s", "--at", "latest", "-o", out)
    assert got.returncode == 0, got.stderr
    assert "1 recorded only" in got.stdout
    assert (out / "pipe").is_fifo() and (out / "pipe").stat().st_mode & 0o777 == 0o640
    assert not (out / "sock").exists()
    assert (out / "a.txt").read_bytes() == (top / "a.txt").read_bytes()


def test_device_nodes_are_made_only_with_devices_by_root(tmp_path: Path, server, client) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root makes device nodes")
    top = tmp_path / "dev"
    top.mkdir()
    null = os.makedev(1, 3)
    os.mknod(top / "null", 0o620 | stat.S_IFCHR, null)  # a copy of /dev/null's node, not the device
    os.chmod(top / "null", 0o620)  # past the umask
    assert client.send(server, top).returncode == 0
    assert not (server.root / "laptop" / "dev" / "null").exists()  # the server never makes one
    plain = tmp_path / "plain"
    got = get(client, server, "dev", "-o", plain)
    assert got.returncode == 0 and "1 recorded only" in got.stdout, got.stdout + got.stderr
    assert not os.path.lexists(plain / "null")
    for at in ("latest", None):  # from a snapshot and from the current view
        out = tmp_path / f"devices-{at}"
        got = get(client, server, "dev", "-o", out, "--devices", *(("--at", at) if at else ()))
        assert got.returncode == 0, got.stdout + got.stderr
        st = os.lstat(out / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == null and stat.S_IMODE(st.st_mode) == 0o620
        again = get(client, server, "dev", "-o", out, "--devices")
        assert again.returncode == 0 and "1 already there" in again.stdout, again.stdout


def test_a_folder_whose_path_is_not_utf8_is_backed_up_twice_without_moving(tmp_path: Path, server, client) -> None:
    """Its source path (a surrogate in Python) is kept by the catalog escaped, and
    compared so on the next send: not an encoding error in the server, not 'moved'."""
    top = tmp_path / os.fsdecode(b"caf\xe9") / "docs"
    make_file(top / os.fsdecode(b"r\xe9sum\xe9.txt"), 3000, seed=4)
    for _ in range(2):
        done = client.send(server, top)
        assert done.returncode == 0 and "was last sent from" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert (server.root / "laptop" / "docs" / os.fsdecode(b"r\xe9sum\xe9.txt")).stat().st_size == 3000
    assert "Traceback" not in server.log_text()


def test_unknown_snapshot_is_a_clear_error(tmp_path: Path, server, client) -> None:
    assert client.send(server, make_file(tmp_path / "f", 10)).returncode == 0
    for at in ("7", "1999-01-01"):
        done = get(client, server, "f", "--at", at, "-o", tmp_path / "o")
        assert done.returncode == 6 and "no snapshot" in done.stderr, done.stderr
    bad = fx(client.home, "ls", "--at", "yesterday-ish", "--from", server.address)
    assert bad.returncode == 2 and "--at" in bad.stderr
    assert get(client, server, "f", "--at", "1", "-o", tmp_path / "o").returncode == 0
    assert (tmp_path / "o").read_bytes() == (tmp_path / "f").read_bytes()


def test_forget_and_prune_on_the_server_while_it_runs_and_not_from_a_client(tmp_path: Path, server, client) -> None:
    top = tmp_path / "docs"
    make_file(top / "a.txt", 100, seed=1)
    make_file(top / "b.bin", 200_000, seed=2)
    assert client.send(server, top).returncode == 0
    (top / "b.bin").unlink()
    assert client.send(server, top).returncode == 0
    kept_copy = list((server.root / ".fastxfer" / "versions" / "laptop" / "docs").glob("b.bin~*"))
    assert len(kept_copy) == 1  # snapshot 1 still holds it

    # From the client: the server's minimum age (7 days) keeps both.
    mine = fx(client.home, "forget", "--from", server.address, "--keep-last", "1", "--prune", "--json")
    assert mine.returncode == 0, mine.stderr
    report = json.loads(mine.stdout)
    assert report["forgotten"] == [] and report["pruned_files"] == 0 and kept_copy[0].exists()
    nothing = fx(client.home, "forget", "--from", server.address)
    assert nothing.returncode == 2 and "--keep-" in nothing.stderr

    # The administrator, on the server, while it runs.
    admin = fx(server.home, "forget", "--root", str(server.root), "--client", "laptop", "--keep-last", "1",
               "--min-age", "0", "--prune")
    assert admin.returncode == 0, admin.stderr
    assert "1 kept, 1 forgotten" in admin.stdout and "pruned 1 older copies (195.31 KiB)" in admin.stdout
    assert not kept_copy[0].exists()
    assert [s["id"] for s in snaps(client, server)] == [2]
    gone = get(client, server, "docs", "--at", "1", "-o", tmp_path / "old")
    assert gone.returncode == 6 and "no snapshot 1" in gone.stderr
    latest = get(client, server, "docs", "-o", tmp_path / "new")
    assert latest.returncode == 0 and tree_of(tmp_path / "new") == tree_of(top)
    # Ids are never used again.
    assert "snapshot 3 of laptop" in client.send(server, top).stdout


def test_the_servers_retention_forgets_after_each_send_but_never_below_its_minimum_age(tmp_path: Path) -> None:
    from conftest import make_client, start_server

    top = tmp_path / "d"
    for policy, min_age, kept in ((("--keep-last", "1"), "0", [3]), (("--keep-last", "1"), "7d", [1, 2, 3])):
        root = tmp_path / f"root-{min_age}"
        server = start_server(tmp_path / f"home-{min_age}", root, extra=(*policy, "--min-age", min_age))
        try:
            client = make_client(tmp_path / f"c-{min_age}", server, "laptop")
            for i in range(3):
                make_file(top / "f.bin", 300_000, seed=10 + i)  # a new copy each time: older ones to prune
                assert client.send(server, top).returncode == 0
            assert [s["id"] for s in snaps(client, server)] == kept
            versions = list((root / ".fastxfer" / "versions" / "laptop" / "d").glob("f.bin~*"))
            assert len(versions) == len(kept) - 1  # what no kept snapshot holds is pruned
        finally:
            server.stop()


def test_sums_check_and_receipts_know_snapshots(tmp_path: Path, server, client) -> None:
    import hashlib

    top = tmp_path / "docs"
    make_file(top / "a.txt", 5000, seed=1)
    make_file(top / "big.bin", 3 << 20, seed=2)  # a large file: its own put and commit
    first_sums = {p: hashlib.sha256((top / p).read_bytes()).hexdigest() for p in ("a.txt", "big.bin")}
    receipts = tmp_path / "receipts.jsonl"
    assert client.send(server, top, "--receipts", receipts).returncode == 0
    bodies = [json.loads(json.loads(line)["body"]) for line in receipts.read_text().splitlines()[1:]]
    assert {b["path"]: b.get("snapshot") for b in bodies} == {"docs/a.txt": 1, "docs/big.bin": 1}
    assert fx(client.home, "receipt", "verify", receipts).returncode == 0
    make_file(top / "a.txt", 6000, seed=3)
    os.utime(top / "a.txt", ns=(10**18, 10**18))
    (top / "big.bin").unlink()
    assert client.send(server, top).returncode == 0

    # sums --at 1 gives the first tree's sums, the replaced and the removed file from their older copies.
    at1 = fx(client.home, "sums", "docs", "--at", "1", "--from", server.address)
    assert at1.returncode == 0, at1.stderr
    assert sorted(at1.stdout.splitlines()) == sorted(f"{sha}  docs/{p}" for p, sha in first_sums.items())
    now = fx(client.home, "sums", "--from", server.address)
    assert now.stdout.split() == [hashlib.sha256((top / "a.txt").read_bytes()).hexdigest(), "docs/a.txt"]

    checked = fx(server.home, "check", "--root", server.root)
    assert checked.returncode == 0 and "3 contents intact, 0 changed, 0 missing" in checked.stdout, checked.stdout
    # Damage an older copy only a snapshot holds: check names it and the snapshot; sums --at says so.
    (old,) = (server.root / ".fastxfer" / "versions" / "laptop" / "docs").glob("big.bin~*")
    data = bytearray(old.read_bytes())
    data[1000] ^= 0xFF
    old.write_bytes(bytes(data))
    checked = fx(server.home, "check", "--root", server.root)
    assert checked.returncode == 5, checked.stdout
    assert "CHANGED: laptop/'docs/big.bin' as snapshot 1 holds it" in checked.stdout
    assert "1 file intact" in checked.stdout  # the current view is whole
    damaged = fx(client.home, "sums", "docs", "--at", "1", "--from", server.address)
    assert damaged.returncode == 5 and "docs/big.bin" in damaged.stderr
    assert damaged.stdout.strip() == f"{first_sums['a.txt']}  docs/a.txt"
