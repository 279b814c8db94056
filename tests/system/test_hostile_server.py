"""A hostile server against get: a real server whose catalog was rewritten
behind its back (as a compromised server would), so that what it lists is
designed to reach outside DEST.  get must create, change and follow nothing
outside DEST, whatever it is told."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from conftest import fx, make_file


def latest_snapshot(server) -> tuple[sqlite3.Connection, int]:
    db = sqlite3.connect(server.root / ".fastxfer" / "manifest.sqlite", timeout=30)
    (snap,) = db.execute("SELECT MAX(id) FROM snapshots WHERE client='laptop' AND state='complete'").fetchone()
    return db, snap


def plant(db: sqlite3.Connection, snap: int, path: str, kind: str, like: str | None = None,
          target: str | None = None, mode: int = 0o644, rdev: int = 0) -> None:
    """An entry in the snapshot; a file takes the content of the stored entry *like*."""
    chunk = digest = sha256 = None
    size = 0
    if like is not None:
        size, chunk, digest, sha256 = db.execute(
            "SELECT size, chunk, digest, sha256 FROM entries WHERE client='laptop' AND snap=? AND path=?",
            (snap, like.encode())).fetchone()
    db.execute("INSERT OR REPLACE INTO entries VALUES ('laptop',?,?,?,?,?,?,0,0,NULL,NULL,?,?,?,?,?)",
               (snap, path.encode(), kind, size, 1_700_000_000 * 10**9, mode, chunk, digest, sha256,
                target.encode() if target is not None else None, rdev))
    db.commit()


def test_nothing_outside_dest_is_created_changed_or_followed(tmp_path: Path, server, client) -> None:
    top = tmp_path / "d"
    make_file(top / "x", 5000, seed=1)
    make_file(top / "big", 400_000, seed=2)  # through put and chunk reads, not a bundle
    assert client.send(server, top).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    os.chmod(outside, 0o755)
    victim = outside / "victim"
    victim.write_bytes(b"keep me")
    os.chmod(victim, 0o600)
    before = {p.name: (p.stat().st_mode, p.stat().st_mtime_ns, p.stat().st_uid, p.stat().st_gid) for p in [outside, victim]}

    db, snap = latest_snapshot(server)
    plant(db, snap, "d/evil", "link", target=str(outside))           # a link, then files through it
    plant(db, snap, "d/evil/x", "file", like="d/x")
    plant(db, snap, "d/evil/big", "file", like="d/big")
    plant(db, snap, "d/evil/sub", "dir", mode=0o777)                 # a folder through it
    plant(db, snap, "d/over", "link", target=str(victim))            # a link, then a file at its name
    plant(db, snap, "d/zz-dev", "chardev", rdev=os.makedev(1, 3))    # a device node: never made
    plant(db, snap, "d/hl", "file", like="d/x", target="d/evil")     # a hard link to the planted link
    # Owned by someone else (get, as root, restores owners): neither the link's
    # nor anything's outside DEST may change (lchown only, never through a link).
    db.execute("UPDATE entries SET uid=4242, gid=4242 WHERE client='laptop' AND snap=? AND path IN (?, ?)",
               (snap, b"d/evil", b"d/hl"))
    db.commit()
    db.close()

    dest = tmp_path / "restored"
    dest.mkdir(mode=0o700)
    os.chmod(dest, 0o700)
    done = fx(client.home, "get", "d", "--from", server.address, "--at", str(snap), "-o", str(dest / "d"),
              timeout=120)
    assert done.returncode == 9, done.stdout + done.stderr  # what went through the link failed; the rest came
    assert "link is in the way" in done.stderr or "symlink is in the way" in done.stderr
    assert (dest / "d" / "x").read_bytes() == (top / "x").read_bytes()
    assert os.readlink(dest / "d" / "evil") == str(outside)        # made exactly as listed, never followed
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert victim.read_bytes() == b"keep me"
    assert {p.name: (p.stat().st_mode, p.stat().st_mtime_ns, p.stat().st_uid, p.stat().st_gid) for p in [outside, victim]} == before
    assert not os.path.lexists(dest / "d" / "zz-dev") and "1 recorded only" in done.stdout
    hl = dest / "d" / "hl"  # fetched as a file of its own: get links only to a file it restored
    assert not hl.is_symlink() and hl.read_bytes() == (top / "x").read_bytes()
    assert os.lstat(hl).st_nlink == 1

    # Forced over what is there: the link at "over" is replaced, never written through.
    db, snap = latest_snapshot(server)
    plant(db, snap, "d/over", "file", like="d/x")
    db.close()
    done = fx(client.home, "get", "d", "--from", server.address, "--at", str(snap), "-o", str(dest / "d"),
              "--force", timeout=120)
    assert (dest / "d" / "over").read_bytes() == (top / "x").read_bytes()
    assert not (dest / "d" / "over").is_symlink()
    assert victim.read_bytes() == b"keep me" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_an_existing_folder_is_never_opened_wider(tmp_path: Path, server, client) -> None:
    top = tmp_path / "d"
    make_file(top / "sub" / "x", 100, seed=3)
    os.chmod(top / "sub", 0o755)
    assert client.send(server, top).returncode == 0
    db, snap = latest_snapshot(server)
    plant(db, snap, "d/sub", "dir", mode=0o777)  # the server says: world-writable
    db.close()
    dest = tmp_path / "mine"
    (dest / "sub").mkdir(parents=True)
    os.chmod(dest / "sub", 0o700)
    done = fx(client.home, "get", "d", "--from", server.address, "--at", str(snap), "-o", str(dest), timeout=120)
    assert done.returncode == 0, done.stderr
    assert (dest / "sub" / "x").read_bytes() == (top / "sub" / "x").read_bytes()
    assert stat.S_IMODE((dest / "sub").stat().st_mode) == 0o700  # narrowed at most, never widened
    fresh = tmp_path / "fresh"
    done = fx(client.home, "get", "d", "--from", server.address, "--at", str(snap), "-o", str(fresh), timeout=120)
    assert done.returncode == 0 and stat.S_IMODE((fresh / "sub").stat().st_mode) == 0o777  # a folder it made


def test_a_listing_with_impossible_fields_is_exit_8_and_nothing_is_made(tmp_path: Path, server, client) -> None:
    top = tmp_path / "d"
    make_file(top / "x", 5000, seed=3)
    assert client.send(server, top).returncode == 0
    db, snap = latest_snapshot(server)
    plant(db, snap, "d/neg", "file", like="d/x")
    db.execute("UPDATE entries SET size=-5 WHERE client='laptop' AND snap=? AND path=?", (snap, b"d/neg"))
    db.commit()
    db.close()
    dest = tmp_path / "restored"
    done = fx(client.home, "get", "d", "--from", server.address, "--at", str(snap), "-o", str(dest), timeout=120)
    assert done.returncode == 8, done.stdout + done.stderr
    assert "the server listed 'd/neg' with size -5" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.lexists(dest)
