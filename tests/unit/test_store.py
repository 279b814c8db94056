"""The store's manifest queries, on a real root and manifest (no network)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fastxfer.errors import ProtocolError, RefusedError
from fastxfer.protocol import wire
from fastxfer.store.facade import Store

NAMES = [b"a", b"a0", b"a.b", b"a\xff", b"a/\xff", b"a/b0/x", b"a/b/x", b"ab/x", b"\xff\xfe", b"top"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "root"))
    s.init_manifest()
    return s


def bundle(names: list[bytes]) -> list[wire.BundleEntry]:
    out = []
    for i, name in enumerate(names):
        data = name + b"-data"
        out.append(wire.BundleEntry(name, len(data), 1_700_000_000_000_000_000 + i, 0o644,
                                      memoryview(data), hashlib.sha256(data).digest()))
    return out


def test_stores_under_is_exact_about_prefixes(store: Store) -> None:
    assert [r[0] for r in store.commit_bundle("c", bundle([b"a/\xff", b"a/b0/x", b"ab/x", b"a0"]))] == [0] * 4
    assert store.stores_under("c", [b"a"])          # a/... is below a
    assert store.stores_under("c", [b"a/b0"])
    assert not store.stores_under("c", [b"a/b"])    # a/b0 is a sibling, not below a/b
    assert not store.stores_under("c", [b"a.b"])
    assert store.stores_under("c", [b"a0"])         # the file itself
    assert not store.stores_under("c", [b"b", b"a\xff"])
    assert not store.stores_under("other", [b"a"])  # one client never sees another's


def test_probe_answers_each_name_for_itself(store: Store) -> None:
    entries = bundle(NAMES[1:3] + NAMES[4:])  # not "a": it is a folder here
    assert all(r[0] == 0 for r in store.commit_bundle("c", entries))
    asked = [(os.fsdecode(e.path), e.size, e.mtime_ns, None) for e in entries]
    asked.append(("a/b/y", 5, 0, None))                       # never stored, folder exists
    asked.append(("new/x", 5, 0, None))                       # folder missing
    asked.append((os.fsdecode(entries[0].path), 999, entries[0].mtime_ns, None))  # other size
    asked.append(("a0/inside", 1, 0, None))                   # a file is in the way
    got = store.probe_many("c", asked)
    assert got[: len(entries)] == ["unchanged"] * len(entries)
    # Nothing recorded at a/b/y, nor in a folder that is missing or a file: "new"; a file of
    # another size: "send".
    assert got[len(entries) :] == ["new", "new", "send", "new"]
    assert (Path(store.root) / "c" / "a0").is_file()  # a probe changes nothing


def test_a_file_in_the_way_of_a_folder_makes_way_and_is_kept(store: Store) -> None:
    assert [r[0] for r in store.commit_bundle("c", bundle([b"k"]))] == [0]
    assert [r[0] for r in store.commit_bundle("c", bundle([b"k/inside"]))] == [0]
    assert (Path(store.root) / "c" / "k" / "inside").read_bytes() == b"k/inside-data"
    (kept,) = store.version_listing("c", "k")
    assert kept["path"] == "k" and kept["sha256"] == hashlib.sha256(b"k-data").hexdigest()
    assert [e["path"] for e in store.listing("c", "k", None)[0]] == ["k/inside"]


def test_a_path_named_twice_in_one_bundle_fails_alone(store: Store) -> None:
    entries = bundle([b"d/x", b"d/y"]) + bundle([b"d/x"])
    results = store.commit_bundle("c", entries)
    assert [r[0] for r in results] == [0, 0, 2] and "twice" in results[2][2]
    assert (Path(store.root) / "c" / "d" / "x").read_bytes() == b"d/x-data"


def test_a_replaced_file_is_kept_with_what_was_recorded_of_it(store: Store) -> None:
    first = bundle([b"v/x"])
    assert [r[0] for r in store.commit_bundle("c", first)] == [0]
    again = [wire.BundleEntry(b"v/x", 3, first[0].mtime_ns + 1, 0o600, memoryview(b"new"),
                              hashlib.sha256(b"new").digest())]
    assert [r[0] for r in store.commit_bundle("c", again)] == [0]
    (kept,) = store.version_listing("c", "v")
    assert kept["path"] == "v/x" and kept["version"].startswith("x~")
    assert (kept["size"], kept["mtime_ns"], kept["mode"]) == (first[0].size, first[0].mtime_ns, 0o644)
    assert kept["sha256"] == first[0].digest.hex()
    (now,), _ = store.listing("c", "v/x", None)
    assert (now["size"], now["mode"], now["sha256"]) == (3, 0o600, hashlib.sha256(b"new").digest().hex())


def test_a_migration_cut_short_runs_again_on_the_next_start(tmp_path: Path, monkeypatch) -> None:
    import sqlite3

    from fastxfer.store import manifest

    path = str(tmp_path / "manifest.db")
    old = sqlite3.connect(path)  # a root from before snapshots: files only
    old.execute(manifest.FILES)
    old.execute("INSERT INTO files VALUES ('c', X'61', 1, 0, 420, 1, X'00', X'00', 5, 'file', NULL)")
    old.commit()
    old.close()

    def crash(db):
        raise OSError("power cut")
    monkeypatch.setattr(manifest, "migrate", crash)
    with pytest.raises(OSError):
        manifest.Manifest(path).create()
    monkeypatch.undo()
    manifest.Manifest(path).create()
    db = sqlite3.connect(path)
    assert db.execute("SELECT client, id, state, note FROM snapshots").fetchall() == [("c", 1, "complete", "migrated")]
    assert db.execute("SELECT path FROM entries").fetchall() == [(b"a",)]


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_received_chunks_land_whole_with_or_without_o_direct(tmp_path: Path, where: str) -> None:
    """Whole pages go by O_DIRECT where the filesystem takes it (ext4 here), the
    rest through the page cache: the bytes are the same either way, and the
    commit verifies them."""
    import mmap
    import tempfile

    from fastxfer.protocol import layout

    if where == "tmpfs":
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm")
        tmp_path = Path(tempfile.mkdtemp(dir="/dev/shm"))
    store = Store(str(tmp_path / "root"))
    store.init_manifest()
    size, chunk = 3 * (1 << 20) + 1000, 1 << 20  # three whole pages' chunks and an unaligned tail
    data = os.urandom(size)
    reply = store.open_put("c", "f.bin", size, 1_700_000_000_000_000_000, 0o644, chunk)
    receiving = store.receive("c", reply.fid)
    digests = []
    for index in range(layout.chunk_count(size, chunk)):
        offset, length = layout.chunk_span(size, chunk, index)
        page = mmap.mmap(-1, length)  # page-aligned, as a stream's receive buffer
        page[:] = data[offset : offset + length]
        digests.append(hashlib.sha256(page).digest())
        receiving.write(offset, memoryview(page), digests[-1])
    direct = receiving.direct_fd >= 0
    receiving.flush()
    receiving.close()
    assert direct or where == "tmpfs"  # ext4 takes O_DIRECT; tmpfs does since Linux 6.6, or refuses it
    store.commit("c", reply.fid, layout.file_digest(size, chunk, digests), None)
    assert (tmp_path / "root" / "c" / "f.bin").read_bytes() == data


@pytest.mark.parametrize("target", ["\ud800", "ok/\udfff/x"])
def test_a_link_target_no_bytes_decode_to_is_refused_and_nothing_is_made(store: Store, tmp_path: Path,
                                                                         target: str) -> None:
    with pytest.raises(RefusedError, match="link target .* cannot be encoded"):
        store.make_link("c", "d/link", target, 1_700_000_000_000_000_000)
    assert not os.path.lexists(tmp_path / "root" / "c" / "d" / "link")
    stored = store.make_link("c", "d/link", "ok\udcff", 1_700_000_000_000_000_000)  # surrogateescape: byte 0xff
    assert stored.status == "stored"
    assert os.readlink(tmp_path / "root" / "c" / "d" / "link") == "ok\udcff"


def test_data_for_an_unknown_transfer_is_a_protocol_error_before_and_after_any_staging(store: Store) -> None:
    fid = bytes(16)
    with pytest.raises(ProtocolError, match="unknown transfer"):
        store.receive("fresh", fid)  # the client has no staging folder yet
    reply = store.open_put("fresh", "f", size=5, mtime_ns=1, mode=0o644, chunk=1 << 20)
    store.receive("fresh", reply.fid).close()
    with pytest.raises(ProtocolError, match="unknown transfer"):
        store.receive("fresh", fid)
