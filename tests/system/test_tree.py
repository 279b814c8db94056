"""Folders: every kind of entry round-trips, or is skipped with a reason."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from conftest import files_under, make_file


def build_tree(top: Path) -> None:
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "empty").mkdir()
    make_file(top / "a.bin", 300_000, seed=1)
    make_file(top / "sub" / "with space.txt", 10, seed=2)
    make_file(top / "sub" / "deeper" / "line\nbreak", 100, seed=3)
    make_file(Path(os.fsdecode(bytes(top) + b"/latin1-\xe9t\xe9")), 50, seed=4)
    make_file(top / "skip.tmp", 10, seed=5)
    make_file(top / "private", 20, seed=6)
    os.chmod(top / "private", 0o600)
    os.symlink("sub/with space.txt", top / "inner-link")
    os.symlink("/etc/passwd", top / "outer-link")
    os.mkfifo(top / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(top / "sock"))
    sock.close()
    os.utime(top / "sub", ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))


def snapshot(top: Path) -> dict[str, tuple]:
    """Kind, bytes or target, permission bits and time of every entry."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(top)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(p, os.fsencode(top)))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def test_tree_round_trip(tmp_path: Path, server, client) -> None:
    top = tmp_path / "tree"
    build_tree(top)
    done = client.send(server, top, "--exclude", "*.tmp", "-vv")
    assert done.returncode == 0, done.stderr  # the FIFO and the socket are recorded, not sent
    assert "recorded  tree/fifo  (FIFO, in the snapshot only)" in done.stdout
    assert "recorded  tree/sock  (socket, in the snapshot only)" in done.stdout
    assert "0 skipped" in done.stdout
    want = snapshot(top)
    for skipped in ("fifo", "sock", "skip.tmp"):
        want.pop(skipped, None)
    got = snapshot(server.root / "laptop" / "tree")
    assert got == want
    # the link that points outside is stored as a link and never followed
    assert os.readlink(server.root / "laptop" / "tree" / "outer-link") == "/etc/passwd"


def test_trailing_slash_sends_the_contents(tmp_path: Path, server, client) -> None:
    top = tmp_path / "tree"
    make_file(top / "x" / "y.bin", 1000)
    done = client.send(server, f"{top}/", "--dest", "here")
    assert done.returncode == 0, done.stderr
    assert files_under(server.root) == ["laptop", "laptop/here", "laptop/here/x", "laptop/here/x/y.bin"]


def test_second_send_of_a_tree_moves_no_data(tmp_path: Path, server, client) -> None:
    top = tmp_path / "tree"
    for i in range(30):
        make_file(top / f"d{i % 3}" / f"f{i}.bin", 5000 + i, seed=i)
    first = client.send(server, top)
    assert first.returncode == 0, first.stderr
    assert "30 files stored and verified" in first.stdout
    again = client.send(server, top)
    assert again.returncode == 0, again.stderr
    assert "0 files stored and verified, 30 unchanged" in again.stdout and "sent 0 B" in again.stdout


def test_a_path_that_changed_kind_is_stored_as_its_new_kind(tmp_path: Path, server, client) -> None:
    a = tmp_path / "one" / "name"
    make_file(a / "inside.bin", 10)
    assert client.send(server, a).returncode == 0
    b = make_file(tmp_path / "two" / "name", 8, seed=3)
    done = client.send(server, b)
    assert done.returncode == 0, done.stderr
    assert "both are kept as snapshots of one path" in done.stderr  # another source, same name
    stored = server.root / "laptop" / "name"
    assert stored.is_file() and stored.read_bytes() == b.read_bytes()
    # and back: folder again, the file kept as an older version
    again = client.send(server, a)
    assert again.returncode == 0, again.stderr
    assert (stored / "inside.bin").read_bytes() == (a / "inside.bin").read_bytes()
    kept = [p.read_bytes() for p in (server.root / ".fastxfer" / "versions" / "laptop").glob("name~*")]
    assert kept == [b.read_bytes()]


def test_many_small_files_travel_in_bundles(tmp_path: Path, server, client) -> None:
    top = tmp_path / "many"
    for i in range(600):
        make_file(top / f"d{i % 7}" / f"f{i}", 100 + i, seed=i)
    done = client.send(server, top)
    assert done.returncode == 0, done.stderr
    assert "600 files stored and verified" in done.stdout
    assert "small files" in server.log_text()  # they went the bundle way
    for i in range(600):
        rel = Path(f"d{i % 7}") / f"f{i}"
        assert (server.root / "laptop" / "many" / rel).read_bytes() == (top / rel).read_bytes()
    # one changed file: only it moves, and its older copy is kept
    (top / "d0" / "f0").write_bytes(b"changed")
    again = client.send(server, top)
    assert again.returncode == 0, again.stderr
    assert "1 file stored and verified, 599 unchanged" in again.stdout
    assert (server.root / "laptop" / "many" / "d0" / "f0").read_bytes() == b"changed"
    kept = list((server.root / ".fastxfer" / "versions" / "laptop" / "many" / "d0").glob("f0~*"))
    assert len(kept) == 1 and kept[0].stat().st_size == 100


def test_first_backup_beside_stored_folders_skips_only_what_is_below_its_tops(tmp_path: Path, server, client) -> None:
    stored, beside = tmp_path / "proj", tmp_path / "proj2"  # "proj2/..." sorts just after "proj/..."
    # More files than the first probe asks about (the first batch is always asked).
    for i in range(300):
        make_file(stored / f"f{i}", 100 + i, seed=i)
    for i in range(40):
        make_file(beside / f"f{i}", 100 + i, seed=1000 + i)
    assert client.send(server, stored).returncode == 0
    first = client.send(server, beside)  # nothing below proj2 yet: sent without per-file questions
    assert first.returncode == 0, first.stderr
    assert "40 files stored and verified, 0 unchanged" in first.stdout
    (stored / "f0").write_bytes(b"new")
    (beside / "f1").write_bytes(b"newer")
    both = client.send(server, stored, beside)  # two tops, both with files below: asked file by file
    assert both.returncode == 0, both.stderr
    assert "2 files stored and verified, 338 unchanged" in both.stdout
    assert "sent 8 B " in both.stdout  # only the two changed files moved: none was sent to be found unchanged
    for top in (stored, beside):
        for f in top.iterdir():
            assert (server.root / "laptop" / top.name / f.name).read_bytes() == f.read_bytes()


def test_a_bundled_file_with_a_bad_name_fails_alone(tmp_path: Path, server, client) -> None:
    top = tmp_path / "mixed"
    make_file(top / "good", 10)
    make_file(top / ("x" * 200) / ("y" * 200) / ("z" * 200) / "deep", 10)  # fine locally
    (server.root / "laptop" / "mixed").mkdir(parents=True)
    (server.root / "laptop" / "mixed" / ("x" * 200)).write_bytes(b"a file in the way")
    done = client.send(server, top)
    # The file where a folder now is makes way (kept as an older version).
    assert done.returncode == 0, done.stderr
    for rel in ("good", Path("x" * 200) / ("y" * 200) / ("z" * 200) / "deep"):
        assert (server.root / "laptop" / "mixed" / rel).read_bytes() == (top / rel).read_bytes()
    kept = list((server.root / ".fastxfer" / "versions" / "laptop" / "mixed").iterdir())
    assert [p.read_bytes() for p in kept] == [b"a file in the way"]


def test_dry_run_sends_nothing_and_checksum_finds_same_time_changes(tmp_path: Path, server, client) -> None:
    top = tmp_path / "t"
    make_file(top / "small.txt", 100, seed=1)
    make_file(top / "large.bin", 2 << 20, seed=2)
    dry = client.send(server, top, "--dry-run", "-v")
    assert dry.returncode == 0, dry.stderr
    assert "new       t/small.txt  (100 B, would be stored)" in dry.stdout and "nothing was sent" in dry.stdout
    assert files_under(server.root) == []
    assert client.send(server, top).returncode == 0
    # change content but keep size and time: only --checksum notices
    for name in ("small.txt", "large.bin"):
        p = top / name
        st = p.stat()
        data = bytearray(p.read_bytes())
        data[10] ^= 0xFF
        p.write_bytes(bytes(data))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    plain = client.send(server, top)
    assert "0 files stored and verified, 2 unchanged" in plain.stdout
    checked = client.send(server, top, "--checksum")
    assert checked.returncode == 0, checked.stderr
    assert "2 files stored and verified, 0 unchanged" in checked.stdout
    for name in ("small.txt", "large.bin"):
        assert (server.root / "laptop" / "t" / name).read_bytes() == (top / name).read_bytes()
    again = client.send(server, top, "--checksum")
    assert "0 files stored and verified, 2 unchanged" in again.stdout and "sent 0 B" in again.stdout


def test_a_file_that_vanishes_before_it_is_read_fails_alone(tmp_path: Path, server, client) -> None:
    from conftest import held_send

    top = tmp_path / "v"
    # Ahead of the bundle in the one stream's queue: more than the socket
    # buffers hold while the relay stalls, so the bundle is read only after
    # the unlink, however slowly the test itself runs.
    make_file(top / "big.bin", 16 << 20)
    for i in range(5):
        make_file(top / f"small{i}", 1000, seed=i)
    with held_send(client, server, top, "--streams", "1", "--chunk-size", "64K") as (proc, gate):
        (top / "small3").unlink()  # listed, not yet read
        gate.set()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 9, err
    assert "small3" in err and "No such file" in err
    assert "5 files stored and verified, 0 unchanged, 1 failed" in out
    assert not (server.root / "laptop" / "v" / "small3").exists()
    assert (server.root / "laptop" / "v" / "small4").read_bytes() == (top / "small4").read_bytes()


def test_follow_links_sends_what_they_point_to(tmp_path: Path, server, client) -> None:
    real = tmp_path / "real"
    make_file(real / "small.txt", 100, seed=1)
    make_file(real / "large.bin", 1 << 20, seed=2)
    top = tmp_path / "linked"
    top.mkdir()
    os.symlink(real / "small.txt", top / "small.txt")
    os.symlink(real / "large.bin", top / "large.bin")
    done = client.send(server, top, "--follow-links")
    assert done.returncode == 0, done.stderr
    for name in ("small.txt", "large.bin"):
        stored = server.root / "laptop" / "linked" / name
        assert not stored.is_symlink() and stored.read_bytes() == (real / name).read_bytes()


def test_touched_file_with_same_content_moves_once(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "same.bin", 2 << 20)
    assert client.send(server, f).returncode == 0
    os.utime(f, ns=(3 * 10**18, 3 * 10**18))
    os.chmod(f, 0o600)
    first = client.send(server, f)
    assert first.returncode == 0 and "unchanged" in first.stdout
    stored = server.root / "laptop" / "same.bin"
    assert stored.stat().st_mtime_ns == 3 * 10**18 and stored.stat().st_mode & 0o777 == 0o600
    again = client.send(server, f)
    assert "sent 0 B" in again.stdout  # the new time was recorded: nothing moves now


def test_follow_links_skips_loops_once_and_stores_every_real_file_once(tmp_path: Path, server, client) -> None:
    import json
    import time

    from conftest import fx, sha256_file

    src = tmp_path / "src"  # the tree's parent holds only the tree and its sibling: `up` leads here
    top = src / "tree"
    make_file(top / "loop" / "f.txt", 100, seed=1)
    make_file(top / "big.bin", 1 << 20, seed=2)
    make_file(src / "other" / "o.txt", 200, seed=3)
    make_file(src / "other" / "o.bin", 600_000, seed=4)
    os.symlink(".", top / "loop" / "self")
    os.symlink("..", top / "up")
    os.symlink("../other", top / "sib")  # not a loop: followed, its files stored
    started = time.monotonic()
    done = client.send(server, top, "--follow-links", timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 9, done.stderr  # skipped entries make a send partial, as any skip does
    assert elapsed < 30, elapsed
    warnings = [line for line in done.stderr.splitlines() if "loop" in line]
    assert warnings == [
        f"WARNING: {top / 'loop' / 'self'}: a loop: leads back to {top / 'loop'}, a folder that holds it; "
        f"not followed",
        f"WARNING: {top / 'up'}: a loop: leads back to {src}, a folder that holds it; not followed",
    ], done.stderr
    assert "4 files stored and verified, 0 unchanged, 0 failed, 2 skipped" in done.stdout, done.stdout

    listed = fx(client.home, "ls", "--json", "--from", server.address, check=True)
    stored = {e["path"]: e for e in json.loads(listed.stdout)["entries"]}
    want = {"tree/loop/f.txt": top / "loop" / "f.txt", "tree/big.bin": top / "big.bin",
            "tree/sib/o.txt": src / "other" / "o.txt", "tree/sib/o.bin": src / "other" / "o.bin"}
    assert sorted(p for p, e in stored.items() if e.get("kind", "file") == "file") == sorted(want)
    assert set(stored) == set(want) | {"tree", "tree/loop", "tree/sib"}, sorted(stored)
    sums = fx(client.home, "sums", "tree", "--from", server.address, check=True)  # hashed on the server
    held = dict(line.split("  ", 1)[::-1] for line in sums.stdout.splitlines())
    assert held == {path: sha256_file(local) for path, local in want.items()}, sums.stdout
    assert not any((server.root / "laptop" / path).is_symlink() for path in want)
