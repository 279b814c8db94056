"""Snapshots: what each send walked, recorded, and the current view made to match.

A send opens a snapshot naming the paths it sends (begin), reports every
entry it walked once its files are committed (add), and ends it (end).  A
file entry gets the content the current view holds at its path, if its
size and time are those the client walked; otherwise the file was not
stored and the entry is dropped, which makes the snapshot partial.  A
complete snapshot then becomes the current view of the paths it names:
whatever the view holds below them that the snapshot does not leaves it,
its files kept as older versions, since earlier snapshots still refer to
their content.  A partial snapshot removes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from typing import TYPE_CHECKING

from fastxfer.errors import FxError, ProtocolError, RefusedError
from fastxfer.localfs import open_chain
from fastxfer.protocol import snapshot
from fastxfer.store import manifest
from fastxfer.store.diskio import now_ns

if TYPE_CHECKING:
    from fastxfer.store.commit import Versions

OPEN_LIFETIME = 24 * 3600 * 10**9  # a snapshot a send never ended is dropped after this
LIST_PAGE = 2000


class Snapshots:
    def __init__(self, root_fd: int, db: manifest.Manifest, versions: Versions) -> None:
        self.root_fd, self.manifest, self.versions = root_fd, db, versions

    def begin(self, client: str, tops: list[tuple[bytes, str | None]], host: str,
              owner: tuple = (None,) * 4) -> tuple[int, list[str | None]]:
        """A new snapshot's id, and the source each top was last sent from."""
        with self.manifest.connect() as db:
            previous = [manifest.last_sources(db, client, raw) for raw, _source in tops]
            manifest.drop_stale_open(db, client, now_ns() - OPEN_LIFETIME)
            snap = manifest.begin_snapshot(db, client, now_ns(), host, tops, owner)
            db.commit()
        return snap, previous

    def _open(self, db: sqlite3.Connection, client: str, snap: int) -> tuple[str, int]:
        state = manifest.snapshot_state(db, client, snap)
        if state is None or state[0] != "open":
            raise ProtocolError(f"snapshot {snap} is not open")
        return state

    def add(self, client: str, snap: int, rows: list[tuple]) -> list[str]:
        """Record walked entries (snapshot.parse_entry rows); the paths dropped as not stored."""
        dropped: list[str] = []
        with self.manifest.connect() as db:
            self._open(db, client, snap)
            inside = snapshot.within(manifest.snapshot_tops(db, client, snap))
            # A file's later name (its target column) holds the content stored at its first name.
            files = manifest.file_records(db, client, [r[12] or r[0] for r in rows if r[1] == "file"])
            keep = []
            for row in rows:
                for path in (row[0], row[12]) if row[1] == "file" and row[12] else (row[0],):
                    if not inside(path):
                        raise ProtocolError(f"entry {os.fsdecode(path)!r} is outside the snapshot's paths")
                if row[1] == "file":
                    held = files.get(row[12] or row[0])
                    if held is None or held[0] != row[2] or held[1] != row[3]:
                        dropped.append(os.fsdecode(row[0]))
                        continue
                    row = row[:9] + (held[2], held[3], held[4]) + row[12:]
                keep.append(row)
            manifest.add_entries(db, client, snap, keep)
            if dropped:
                manifest.count_dropped(db, client, snap, len(dropped))
            db.commit()
        return dropped

    def end(self, client: str, snap: int, partial: bool) -> dict:
        """Close the snapshot; a complete one becomes the current view of its paths."""
        with self.manifest.connect() as db:
            _state, dropped = self._open(db, client, snap)
            state = "partial" if partial or dropped else "complete"
            removed = 0
            if state == "complete":
                for top in manifest.snapshot_tops(db, client, snap):
                    removed += self._match_view(db, client, snap, top)
            manifest.record_specials(db, client, snap, now_ns())
            manifest.record_owners(db, client, snap)
            manifest.end_snapshot(db, client, snap, state, removed)
            db.commit()
            (row,) = [r for r in manifest.snapshots(db, client) if r[0] == snap]
        return {"id": snap, "state": state, "files": row[4], "bytes": row[5], "removed": removed,
                "dropped": dropped, "changed": row[8]}

    def _match_view(self, db: sqlite3.Connection, client: str, snap: int, top: bytes) -> int:
        """Remove from the current view below *top* what the snapshot does not hold.

        Two steps, so that a crash between them loses nothing: every file
        leaving the view is first kept as a version (committed), then the
        view's entries are removed, deepest first."""
        gone = manifest.not_in_snapshot(db, client, snap, top)
        for raw, kind in gone:
            if kind == "file":
                self._each(client, raw, lambda parent, parts: self.versions.keep_old(db, parent, client, parts, b""))
        db.commit()
        for raw, kind in sorted(gone, reverse=True):
            self._each(client, raw, lambda parent, parts: self._remove(db, parent, client, parts))
            manifest.drop_record(db, client, raw)
        return len(gone)

    def _each(self, client: str, raw: bytes, action) -> None:
        parts = raw.split(b"/")
        try:
            parent = open_chain(self.root_fd, [client.encode()] + parts[:-1], create=False)
        except (OSError, FxError):
            return  # its folder already went
        try:
            action(parent, parts)
            os.fsync(parent)
        finally:
            os.close(parent)

    def _remove(self, db: sqlite3.Connection, parent: int, client: str, parts: list[bytes]) -> None:
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(parts[-1], dir_fd=parent)
            return
        try:
            os.rmdir(parts[-1], dir_fd=parent)
        except OSError:  # something the view never recorded is inside: keep it too
            self.versions.set_aside(db, parent, client, parts)

    # ----------------------------------------------------------- reading

    def resolve(self, client: str, at: int | str) -> int:
        with self.manifest.connect() as db:
            snaps = [(r[0], r[1]) for r in manifest.snapshots(db, client)]
        found = snapshot.pick(snaps, at)
        if found is None:
            raise RefusedError(f"no snapshot {at if isinstance(at, int) else 'at that time'} of {client} "
                               f"(see: fastxfer snapshots)")
        return found

    def listing(self, client: str, snap: int, raw: bytes, after: bytes | None) -> tuple[list[dict], bytes | None]:
        with self.manifest.connect() as db:
            rows = manifest.entry_page(db, client, snap, raw, after, LIST_PAGE + 1)
            (time_ns,) = [r[1] for r in manifest.snapshots(db, client) if r[0] == snap] or [0]
        more = len(rows) > LIST_PAGE
        rows = rows[:LIST_PAGE]
        return [entry_dict(r, time_ns) for r in rows], (bytes(rows[-1][0]) if more else None)

    def list(self, client: str, prefix: bytes) -> list[dict]:
        with self.manifest.connect() as db:
            rows = manifest.snapshots(db, client)
            tops = manifest.snapshot_paths(db, client)
        out = []
        for snap, time_ns, state, host, files, size, note, dropped, changed, removed in rows:
            named = tops.get(snap, [])
            if prefix and not any(p == b"" or p == prefix or prefix.startswith(p + b"/") or p.startswith(prefix + b"/")
                                  for p, _s in named):
                continue
            out.append({"id": snap, "time_ns": time_ns, "state": state, "host": host, "files": files,
                        "bytes": size, "note": note, "dropped": dropped, "changed": changed, "removed": removed,
                        "paths": [os.fsdecode(p) for p, _s in named],
                        "sources": [s for _p, s in named]})
        return out


def entry_dict(r: tuple, time_ns: int) -> dict:
    """A snapshot entry as a listing shows it (the fields of a current listing, and more)."""
    path, kind, size, mtime_ns, mode, uid, gid, owner, grp, chunk, digest, sha256, target, rdev = r
    out = {"path": os.fsdecode(path), "kind": kind, "size": size, "mtime_ns": mtime_ns, "mode": mode,
           "sha256": sha256.hex() if sha256 else None,
           "target": os.fsdecode(target) if target is not None else None, "stored_ns": time_ns,
           "chunk": chunk, "digest": digest.hex() if digest else None,
           "uid": uid, "gid": gid, "user": owner, "group": grp, "rdev": rdev}
    if kind == "file" and digest:
        out["ref"] = "#" + digest.hex()  # what a request names to read this content
    if kind == "file" and target is not None:
        out.update(hardlink=out["target"], target=None)  # another name of the file at that path
    return out
