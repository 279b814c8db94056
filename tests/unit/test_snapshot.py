"""Snapshots: the pure rules (protocol/snapshot.py) and the store's record of
them, on a real root and manifest (no network)."""

from __future__ import annotations

import datetime
import hashlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastxfer.errors import ProtocolError, RefusedError, UsageError
from fastxfer.protocol import snapshot, wire
from fastxfer.store.facade import Store

T0 = 1_700_000_000_000_000_000


def entry(path: str, kind: str = "file", size: int = 0, mtime_ns: int = T0, **more) -> dict:
    return {"path": path, "kind": kind, "size": size, "mtime_ns": mtime_ns, "mode": 0o644, "uid": 1234,
            "gid": 99, **more}


def test_an_entry_becomes_a_row_the_server_fills_in() -> None:
    row = snapshot.parse_entry(entry("a/b", size=5, user="ann", group="staff"))
    assert row == (b"a/b", "file", 5, T0, 0o644, 1234, 99, "ann", "staff", None, None, None, None, 0)
    link = snapshot.parse_entry(entry("l", "link", size=77, target="../x"))
    assert (link[2], link[12]) == (0, b"../x")  # a link's size is not the client's to claim
    dev = snapshot.parse_entry(entry("d", "chardev", rdev=(1 << 8) | 3))
    assert dev[1:3] == ("chardev", 0) and dev[13] == 259
    later = snapshot.parse_entry(entry("b/y", size=5, hardlink="a/x"))
    assert later[12] == b"a/x"  # a file's other name: its content is the one stored there


@pytest.mark.parametrize("bad", [
    entry("x", "door"), entry("../x"), entry("/etc/x"), entry("l", "link"), entry("l", "link", target=""),
    entry("x", mode=0o10000), entry("x", uid=-1), entry("x", user="u" * 65), entry("x", user=5),
    entry("x", size=-1), entry("x", mtime_ns="now"), "not an object", entry("x", hardlink="x"),
    entry("x", hardlink="../y"), entry("x", hardlink=7),
])
def test_a_malformed_entry_is_a_protocol_error(bad) -> None:
    with pytest.raises((ProtocolError, RefusedError)):
        snapshot.parse_entry(bad)


def test_at_names_an_id_latest_or_a_time() -> None:
    assert snapshot.parse_at("12") == 12 and snapshot.parse_at(" latest ") == "latest"
    noon = datetime.datetime(2026, 12, 1, 12, 30).timestamp()
    assert snapshot.parse_at("2026-12-01 12:30") == f"time:{int(noon) * 10**9}"
    day_end = int(datetime.datetime(2026, 12, 2).timestamp()) * 10**9
    assert 0 < day_end - int(snapshot.parse_at("2026-12-01")[5:]) <= 1000  # a day is the whole day
    with pytest.raises(UsageError):
        snapshot.parse_at("last tuesday")


def test_pick_finds_the_snapshot_at_named() -> None:
    snaps = [(3, 100), (5, 200), (9, 300)]
    assert snapshot.pick(snaps, "latest") == 9
    assert snapshot.pick(snaps, 5) == 5 and snapshot.pick(snaps, 4) is None
    assert snapshot.pick(snaps, "time:250") == 5 and snapshot.pick(snaps, "time:200") == 5
    assert snapshot.pick(snaps, "time:99") is None and snapshot.pick([], "latest") is None
    with pytest.raises(ProtocolError):
        snapshot.pick(snaps, "time:soon")


# ------------------------------------------------------------------ store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "root"))
    s.init_manifest()
    return s


def put(store: Store, names: dict[bytes, bytes]) -> None:
    entries = [wire.BundleEntry(name, len(data), T0, 0o644, memoryview(data), hashlib.sha256(data).digest())
               for name, data in names.items()]
    assert [r[0] for r in store.commit_bundle("c", entries)] == [0] * len(entries)
    folders = sorted({name.rsplit(b"/", 1)[0].decode() for name in names if b"/" in name})
    store.finish_dirs("c", [(f, 0o755, T0) for f in folders])  # as a send's folders are recorded


def row(path: bytes, kind: str = "file", size: int = 0, mtime_ns: int = T0) -> tuple:
    return snapshot.parse_entry(entry(path.decode(), kind, size, mtime_ns))


def test_a_file_not_stored_as_walked_makes_the_snapshot_partial_and_removes_nothing(store: Store) -> None:
    put(store, {b"d/a": b"aaa", b"d/b": b"bb"})
    snap, previous = store.begin_snapshot("c", [(b"d", "/src/d")], "host")
    assert (snap, previous) == (1, [None])
    # d/b is gone at the source; d/a was walked with another time than stored
    dropped = store.add_entries("c", snap, [row(b"d", "dir"), row(b"d/a", size=3, mtime_ns=T0 + 1)])
    assert dropped == ["d/a"]
    ended = store.end_snapshot("c", snap, partial=False)
    assert (ended["state"], ended["removed"], ended["dropped"]) == ("partial", 0, 1)
    assert (Path(store.root) / "c" / "d" / "b").read_bytes() == b"bb"  # a partial snapshot deletes nothing


def test_a_complete_snapshot_becomes_the_view_and_keeps_what_left_it(store: Store) -> None:
    put(store, {b"d/a": b"aaa", b"d/b": b"bb", b"d/e/f": b"f"})
    first, _ = store.begin_snapshot("c", [(b"d", "/src/d")], "host")
    store.add_entries("c", first, [row(b"d", "dir"), row(b"d/e", "dir"), row(b"d/a", size=3),
                                   row(b"d/b", size=2), row(b"d/e/f", size=1)])
    assert store.end_snapshot("c", first, False)["state"] == "complete"
    second, previous = store.begin_snapshot("c", [(b"d", "/src/d")], "host")
    assert (second, previous) == (2, ["/src/d"])
    store.add_entries("c", second, [row(b"d", "dir"), row(b"d/a", size=3)])
    ended = store.end_snapshot("c", second, False)
    assert (ended["state"], ended["removed"], ended["files"]) == ("complete", 3, 1)  # d/b, d/e, d/e/f
    assert sorted(p.name for p in (Path(store.root) / "c" / "d").iterdir()) == ["a"]
    # The first snapshot still reads every file it holds, wherever the content now is.
    listed, more = store.snapshot_listing("c", first, b"d", None)
    assert more is None and sorted(e["path"] for e in listed) == ["d", "d/a", "d/b", "d/e", "d/e/f"]
    b = next(e for e in listed if e["path"] == "d/b")
    into = memoryview(bytearray(2))
    store.read_chunk("c", "d/b\x00" + b["ref"], 2, T0, 0, into)
    assert bytes(into) == b"bb"
    with pytest.raises(ProtocolError):
        store.add_entries("c", second, [row(b"d/x", size=1)])  # an ended snapshot takes no more


def test_entries_outside_the_snapshots_paths_are_refused(store: Store) -> None:
    snap, _ = store.begin_snapshot("c", [(b"d", None)], "")
    with pytest.raises(ProtocolError, match="outside"):
        store.add_entries("c", snap, [row(b"other/x", "dir")])
    with pytest.raises(ProtocolError, match="outside"):
        store.add_entries("c", snap, [row(b"dd", "dir")])  # a sibling whose name starts alike


def bundle(names: dict[bytes, bytes]) -> list[wire.BundleEntry]:
    return [wire.BundleEntry(name, len(data), T0, 0o640, memoryview(data), hashlib.sha256(data).digest())
            for name, data in names.items()]


def test_files_stored_naming_an_open_snapshot_join_it_with_its_usual_owner(store: Store) -> None:
    put(store, {b"d/same": b"kept"})
    snap, _ = store.begin_snapshot("c", [(b"d", None)], "", (1234, 99, "ann", "staff"))
    results = store.commit_bundle("c", bundle({b"d/new": b"fresh", b"d/same": b"kept", b"other/x": b"x"}), snap)
    assert [r[0] for r in results] == [0, 1, 0]  # stored, unchanged, stored (outside the snapshot)
    store.add_entries("c", snap, [row(b"d", "dir")])
    ended = store.end_snapshot("c", snap, False)
    assert (ended["state"], ended["files"], ended["dropped"]) == ("partial", 2, 1)  # other/x is not its own
    listed = {e["path"]: e for e in store.snapshot_listing("c", snap, b"", None)[0]}
    assert sorted(listed) == ["d", "d/new", "d/same"]
    new = listed["d/new"]
    assert (new["size"], new["mode"], new["uid"], new["gid"], new["user"], new["group"]) == (5, 0o640, 1234, 99,
                                                                                          "ann", "staff")
    assert new["sha256"] == hashlib.sha256(b"fresh").hexdigest()  # what the server stored
    into = memoryview(bytearray(4))
    store.read_chunk("c", "d/same\x00" + listed["d/same"]["ref"], 4, T0, 0, into)
    assert bytes(into) == b"kept"


def test_a_file_stored_naming_a_snapshot_that_is_not_open_joins_nothing(store: Store) -> None:
    snap, _ = store.begin_snapshot("c", [(b"", None)], "")
    store.end_snapshot("c", snap, False)
    assert [r[0] for r in store.commit_bundle("c", bundle({b"late": b"x"}), snap)] == [0]
    assert [r[0] for r in store.commit_bundle("c", bundle({b"stray": b"y"}), snap + 7)] == [0]
    assert store.snapshot_listing("c", snap, b"", None)[0] == []
    assert store.snapshot_list("c", b"")[0]["files"] == 0


# -------------------------------------------------------------- retention

DAY = 86400 * 10**9


def test_retention_keeps_by_count_and_by_calendar_per_group() -> None:
    from fastxfer.protocol import retention

    now = int(datetime.datetime(2026, 12, 5, 12).timestamp()) * 10**9
    # Documents: one snapshot at 11:00 of each of the last 20 days; Photos: one, long ago.
    snaps = [(i, now - (20 - i) * DAY - 3600 * 10**9, ("Documents",)) for i in range(1, 21)]
    snaps.append((21, now - 400 * DAY, ("Photos",)))
    kept = retention.keep(snaps, retention.Policy(last=2, min_age_ns=0), now)
    assert set(kept) == {19, 20, 21}  # the newest two of Documents, and Photos' only one
    daily = retention.keep(snaps, retention.Policy(daily=5, min_age_ns=0), now)
    assert set(daily) == {16, 17, 18, 19, 20, 21} and daily[20] == ["daily"]
    two_today = snaps + [(22, now - 60 * 10**9, ("Documents",))]
    assert set(retention.keep(two_today, retention.Policy(daily=1, min_age_ns=0), now)) == {22, 21}
    weekly = retention.keep(snaps, retention.Policy(weekly=2, min_age_ns=0), now)
    assert len([s for s in weekly if s <= 20]) == 2
    young = retention.keep(snaps, retention.Policy(last=1, min_age_ns=3 * DAY), now)
    assert set(young) == {18, 19, 20, 21} and young[18] == ["younger than the minimum age"]


def test_ages_read_as_a_user_writes_them() -> None:
    from fastxfer.protocol import retention

    assert retention.parse_age("7d") == 7 * DAY and retention.parse_age("36h") == 36 * 3600 * 10**9
    assert retention.parse_age("0") == 0 and retention.parse_age("2w") == 14 * DAY
    for bad in ("", "-1d", "7y", "soon"):
        with pytest.raises(UsageError):
            retention.parse_age(bad)


def test_forget_then_prune_frees_only_what_no_kept_snapshot_holds(store: Store) -> None:
    from fastxfer.protocol import retention

    contents = [b"first", b"second!", b"third..."]
    for n, data in enumerate(contents):
        put(store, {b"d/f": data})
        snap, _ = store.begin_snapshot("c", [(b"d", None)], "")
        store.add_entries("c", snap, [row(b"d", "dir"), row(b"d/f", size=len(data))])
        assert store.end_snapshot("c", snap, False)["state"] == "complete"
    versions = Path(store.root) / ".fastxfer" / "versions" / "c" / "d"
    assert sorted(p.read_bytes() for p in versions.iterdir()) == [b"first", b"second!"]
    now = time.time_ns()  # the snapshots were taken just now
    young = store.forget("c", retention.Policy(last=1), now, dry_run=False, prune=True)
    assert young.forgotten == [] and young.pruned_files == 0  # every snapshot is younger than 7 days
    dry = store.forget("c", retention.Policy(last=2, min_age_ns=0), now, dry_run=True, prune=True)
    assert [f[0] for f in dry.forgotten] == [1] and (dry.pruned_files, dry.pruned_bytes) == (0, 0)
    assert len(list(versions.iterdir())) == 2  # a dry run changes nothing
    done = store.forget("c", retention.Policy(last=2, min_age_ns=0), now, dry_run=False, prune=True)
    assert [f[0] for f in done.forgotten] == [1] and (done.pruned_files, done.pruned_bytes) == (1, 5)
    assert [p.read_bytes() for p in versions.iterdir()] == [b"second!"]  # snapshot 2 still holds it
    assert (Path(store.root) / "c" / "d" / "f").read_bytes() == b"third..."  # the current view stays
    assert [s["id"] for s in store.snapshot_list("c", b"")] == [2, 3]
    with pytest.raises(RefusedError):
        store.resolve_snapshot("c", 1)


def test_a_snapshot_never_ended_is_not_listed_and_is_dropped_after_its_lifetime(store: Store, monkeypatch) -> None:
    import sqlite3

    from fastxfer.store import snapshots

    def states() -> list[tuple[int, str, int]]:
        db = sqlite3.connect(store.manifest.path)
        try:
            return db.execute("SELECT id, state, (SELECT COUNT(*) FROM entries e WHERE e.snap=s.id)"
                              " FROM snapshots s ORDER BY id").fetchall()
        finally:
            db.close()

    put(store, {b"d/a": b"aaa"})
    snap, _ = store.begin_snapshot("c", [(b"d", "/src/d")], "host")
    store.add_entries("c", snap, [row(b"d", "dir"), row(b"d/a", size=3)])  # then the client died
    assert store.snapshot_list("c", b"") == [] and states() == [(1, "open", 2)]
    with pytest.raises(RefusedError):
        store.resolve_snapshot("c", 1)  # nothing can be restored from it
    store.begin_snapshot("c", [(b"d", "/src/d")], "host")  # younger than its lifetime: kept
    assert states() == [(1, "open", 2), (2, "open", 0)]
    monkeypatch.setattr(snapshots, "OPEN_LIFETIME", -10**9)  # as if a day had passed
    third, _ = store.begin_snapshot("c", [(b"d", "/src/d")], "host")
    assert states() == [(1, "forgotten", 0), (2, "forgotten", 0), (3, "open", 0)]  # ids never reused
    assert (Path(store.root) / "c" / "d" / "a").read_bytes() == b"aaa"  # the view is untouched


def test_the_special_kinds_in_sql_are_the_protocols() -> None:
    from fastxfer.store import manifest

    assert manifest.SPECIAL_KINDS == "(" + ",".join(f"'{k}'" for k in snapshot.SPECIAL) + ")"


def test_a_file_turned_fifo_leaves_the_view_kept_and_the_fifo_is_listed(store: Store) -> None:
    put(store, {b"d/p": b"pp", b"d/q": b"q"})
    first, _ = store.begin_snapshot("c", [(b"d", None)], "host")
    store.add_entries("c", first, [row(b"d", "dir"), row(b"d/p", size=2), row(b"d/q", size=1)])
    store.end_snapshot("c", first, False)
    second, _ = store.begin_snapshot("c", [(b"d", None)], "host")
    store.add_entries("c", second, [row(b"d", "dir"), row(b"d/p", "fifo"), row(b"d/q", size=1)])
    ended = store.end_snapshot("c", second, False)
    assert (ended["state"], ended["removed"]) == ("complete", 1)
    assert not (Path(store.root) / "c" / "d" / "p").exists()  # nothing is made under ROOT for a FIFO
    listed, _ = store.listing("c", "d", None)
    assert [(e["path"], e["kind"], e["uid"]) for e in listed] == [
        ("d", "dir", 1234), ("d/p", "fifo", 1234), ("d/q", "file", 1234)]
    old, _ = store.snapshot_listing("c", first, b"d/p", None)
    into = memoryview(bytearray(2))
    store.read_chunk("c", "d/p\x00" + old[0]["ref"], 2, T0, 0, into)  # the file it was is kept
    assert bytes(into) == b"pp"


def test_diff_names_each_kind_of_change_in_path_order() -> None:
    def e(path, kind="file", **more):
        return {"path": path, "kind": kind, "size": 1, "mtime_ns": T0, "mode": 0o644, "uid": 1, "gid": 1,
                "digest": "aa", "target": None, **more}
    before = [e("d", "dir"), e("d/same"), e("d/gone"), e("d/edited"), e("d/turned"), e("d/chmod"),
              e("d/touched"), e("l", "link", target="x")]
    after = [e("d", "dir", mtime_ns=T0 + 5), e("d/same"), e("d/edited", digest="bb"), e("d/turned", "dir"),
             e("d/chmod", mode=0o600), e("d/touched", mtime_ns=T0 + 1), e("d/new"), e("l", "link", target="y")]
    assert snapshot.diff(before, after) == [
        ("meta", "d/chmod"), ("changed", "d/edited"), ("removed", "d/gone"), ("added", "d/new"),
        ("meta", "d/touched"), ("kind", "d/turned"), ("changed", "l")]
    assert snapshot.diff(after, after) == []


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
                    st.text(max_size=70), st.sampled_from(["a/b", "../x", "/abs", "a//b", "a/./b", "ok\x00", "\ud800",
                                                           "é" * 20, "x" * 64, "x" * 65]),
                    st.lists(st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["file", "dir", "link", "fifo", "door", None]),
       fields=st.dictionaries(st.sampled_from(["path", "size", "mtime_ns", "mode", "uid", "gid", "user", "group",
                                               "target", "hardlink", "rdev"]), _VALUES, max_size=11))
def test_the_fast_parse_takes_and_refuses_exactly_what_the_checked_one_does(kind, fields) -> None:
    base = entry("a/b", "file" if kind is None else kind, size=5)
    value = {**base, **fields} if kind is not None else {**fields}

    def outcome(parse):
        try:
            return ("row", parse(value))
        except (ProtocolError, RefusedError) as exc:
            return ("refused", type(exc))
    assert outcome(snapshot.parse_entry) == outcome(snapshot.parse_entry_checked)


def test_within_and_ref_digest() -> None:
    inside = snapshot.within([b"d", b"e/f"])
    assert [inside(p) for p in (b"d", b"d/x", b"dd", b"e", b"e/f/g", b"e/fg")] == [True, True, False, False, True,
                                                                                   False]
    assert snapshot.within([b""])(b"anything/at/all")
    digest = bytes(range(32))
    assert snapshot.ref_digest("#" + digest.hex()) == digest
    assert [snapshot.ref_digest(r) for r in ("", digest.hex(), "#" + digest.hex()[:-2], "#" + "zz" * 32)] == [None] * 4


def test_storable_escapes_surrogates_and_keeps_the_rest() -> None:
    assert snapshot.storable("/home/ann/docs") == "/home/ann/docs"
    assert snapshot.storable("caf\udce9") == "caf\\udce9"  # b"caf\xe9" as the client's walk names it
    assert snapshot.storable("\ud800") == "\\ud800"
    assert snapshot.storable("caf\udce9").encode("utf-8")
    assert snapshot.parse_owner({"uid": 1, "gid": 2, "user": "a\udcff", "group": "g"}) == (1, 2, "a\\udcff", "g")
