"""A server root written by the previous release (6e1161a, before snapshots)
opens with the current code: each client's stored state becomes its
snapshot 1 (note 'migrated'), and everything kept is still there."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Client, Server, fx, make_file, start_server
from test_tree import snapshot as tree_of

RELEASE = "6e1161a"  # the last commit before snapshots
REPO = Path(__file__).resolve().parents[2]


def extract_release(dest: Path, release: str = RELEASE) -> Path:
    """The fastxfer package of commit *release* under *dest*, or a skip when git or the commit is missing."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot extract the previous release")
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{release}^{{commit}}"],
                           capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"commit {release} is not in this clone (shallow?): cannot extract the previous release")
    dest.mkdir()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", release, "fastxfer"], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True)
    assert archive.stdout is not None
    archive.stdout.close()
    assert archive.wait() == 0 and untar.returncode == 0, untar.stderr
    return dest


def old_env(release: Path, home: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(release), FASTXFER_HOME=str(home))


def old_fx(release: Path, home: Path, *args) -> subprocess.CompletedProcess:
    """The release's fastxfer, run from its own folder: `-m` puts the current
    folder first on the path, so the worktree's package must not be there."""
    done = subprocess.run([sys.executable, "-m", "fastxfer", *map(str, args)], cwd=release,
                          env=old_env(release, home), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"release fastxfer {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def start_old_server(release: Path, home: Path, root: Path) -> Server:
    """conftest.start_server, with the release's code."""
    return start_server(home, root, code=release)


def test_a_root_of_the_release_before_snapshots_is_migrated(tmp_path: Path) -> None:
    release = extract_release(tmp_path / "release")
    assert (release / "fastxfer" / "server" / "master.py").is_file()
    assert not (release / "fastxfer" / "store" / "snapshots.py").exists()  # really the code before snapshots

    # The release: identities, trust and pin as conftest does them, one tree sent twice.
    server_home, root, client_home = tmp_path / "server-home", tmp_path / "root", tmp_path / "client-laptop"
    top = tmp_path / "docs"
    make_file(top / "a.txt", 100, seed=1)
    make_file(top / "sub" / "b.bin", 300_000, seed=2)  # above the bundle size
    make_file(top / "sub" / "deep" / "c.txt", 50, seed=3)
    plan = top / "plan.txt"
    plan.write_text("first plan\n")
    os.utime(plan, ns=(10**18, 10**18))
    os.symlink("sub/b.bin", top / "link")
    old = start_old_server(release, server_home, root)
    try:
        client_fp = old_fx(release, client_home, "id").stdout.strip()
        old_fx(release, server_home, "trust", "add", client_fp, "--name", "laptop")
        old_fx(release, client_home, "pin", old.address, old.fingerprint)
        first = old_fx(release, client_home, "send", top, "--to", old.address)
        plan.write_text("second plan, longer\n")  # the older copy becomes a version
        second = old_fx(release, client_home, "send", top, "--to", old.address)
    finally:
        assert old.stop() == 0, old.log_text()
    assert "snapshot" not in (first.stdout + second.stdout + old.log_text()).lower()
    with sqlite3.connect(root / ".fastxfer" / "manifest.sqlite") as db:  # written without snapshots
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "versions"} <= tables and "snapshots" not in tables
    was = tree_of(top)

    # The current code on the same root, homes, identities and port (so the release's pin still holds).
    server = start_server(server_home, root, port=old.port)
    try:
        assert server.fingerprint == old.fingerprint
        client = Client(client_home, "laptop", client_fp)

        def js(*args) -> list[dict]:
            done = fx(client.home, *args, "--json", "--from", server.address)
            assert done.returncode == 0, done.stderr
            doc = json.loads(done.stdout)
            return doc["snapshots"] if args[0] == "snapshots" else doc["entries"]

        def get(*args) -> subprocess.CompletedProcess:
            return fx(client.home, "get", *args, "--from", server.address, timeout=60)

        [snap] = js("snapshots")
        assert (snap["id"], snap["state"], snap["note"], snap["files"]) == (1, "complete", "migrated", 4)
        assert snap["bytes"] == 100 + 300_000 + 50 + len("second plan, longer\n")
        assert snap["paths"] == ["docs"]

        at1 = {e["path"]: e for e in js("ls", "--at", "1")}
        assert sorted(at1) == ["docs", "docs/a.txt", "docs/link", "docs/plan.txt", "docs/sub",
                               "docs/sub/b.bin", "docs/sub/deep", "docs/sub/deep/c.txt"]
        assert at1["docs/link"]["kind"] == "link" and at1["docs/sub/b.bin"]["size"] == 300_000

        out = tmp_path / "restore-1"
        done = get("docs", "--at", "1", "-o", out)
        assert done.returncode == 0, done.stderr
        assert tree_of(out) == was  # bytes, link target, modes and times
        assert os.readlink(out / "link") == "sub/b.bin"

        [version] = js("ls", "docs/plan.txt", "--versions")
        assert version["size"] == len("first plan\n")
        older = tmp_path / "old-plan.txt"
        done = get("docs/plan.txt", "--version", version["version"], "-o", older)
        assert done.returncode == 0, done.stderr
        assert older.read_text() == "first plan\n" and older.stat().st_mtime_ns == 10**18

        # A new send records snapshot 2; what it no longer has leaves the view, not snapshot 1.
        (top / "sub" / "deep" / "c.txt").unlink()
        sent = client.send(server, top)
        assert sent.returncode == 0, sent.stderr
        assert "snapshot 2 of laptop: 3 files" in sent.stdout and "1 deleted" in sent.stdout, sent.stdout
        assert [(s["id"], s["state"], s["files"], s["note"]) for s in js("snapshots")] == [
            (1, "complete", 4, "migrated"), (2, "complete", 3, None)]
        assert "docs/sub/deep/c.txt" not in {e["path"] for e in js("ls", "docs")}
        assert "docs/sub/deep/c.txt" in {e["path"] for e in js("ls", "docs", "--at", "1")}
        again = tmp_path / "restore-1-again"
        done = get("docs", "--at", "1", "-o", again)
        assert done.returncode == 0, done.stderr
        assert tree_of(again) == was
        assert (again / "sub" / "deep" / "c.txt").read_bytes() == (out / "sub" / "deep" / "c.txt").read_bytes()
    finally:
        assert server.stop() == 0, server.log_text()
