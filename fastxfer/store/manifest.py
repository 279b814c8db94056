"""The manifest: what each client has stored, in SQLite.  The schema, the
connection pool, and every SQL statement of the store, each a named
function, so that another catalog (a shared database) is one module to
write and a query is found by what it asks.

Functions taking *db* run inside the caller's connection and transaction:
they never commit, the caller does, so that what lands together is decided
where the files are moved.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
from collections.abc import Iterator

from fastxfer.protocol import snapshot

POOL = 4  # idle manifest connections a worker keeps
RECORDS_PER_QUERY = 500  # names in one lookup (SQLite allows 32,766 variables)

FILES = (
    "CREATE TABLE IF NOT EXISTS files (client TEXT, path BLOB, size INT,"
    " mtime_ns INT, mode INT, chunk INT, digest BLOB, sha256 BLOB,"
    " stored_ns INT, kind TEXT DEFAULT 'file', target BLOB,"
    " PRIMARY KEY (client, path))"
)
VERSIONS = (
    "CREATE TABLE IF NOT EXISTS versions (client TEXT, path BLOB,"
    " version TEXT, size INT, digest BLOB, sha256 BLOB, replaced_ns INT,"
    " chunk INT, mtime_ns INT, mode INT)"
)
# A snapshot: what one send walked below the paths it named.  Its id counts
# per client; a forgotten snapshot keeps its row (state 'forgotten') so that
# an id is never given twice.  state: 'open' while the send adds entries,
# then 'complete' or 'partial' (something walked was not stored).
SNAPSHOTS = (
    "CREATE TABLE IF NOT EXISTS snapshots (client TEXT, id INT, time_ns INT, state TEXT,"
    " host TEXT, files INT DEFAULT 0, bytes INT DEFAULT 0, note TEXT, dropped INT DEFAULT 0,"
    " PRIMARY KEY (client, id))"
)
# Columns added to snapshots after its first form (ALTER TABLE on older roots):
# the owner most of a send's files have (the files it stores naming its
# snapshot join it with this owner; the others are reported with theirs) ...
SNAPSHOT_OWNER = ("uid INT", "gid INT", "owner TEXT", "grp TEXT")
# ... and what it changed: files it stored with new content, entries that
# left the current view when it became it.
SNAPSHOT_CHANGES = ("changed INT DEFAULT 0", "removed INT DEFAULT 0")
SNAP_PATHS = (
    "CREATE TABLE IF NOT EXISTS snap_paths (client TEXT, snap INT, path BLOB, source TEXT,"
    " PRIMARY KEY (client, snap, path))"
)
ENTRIES = (
    "CREATE TABLE IF NOT EXISTS entries (client TEXT, snap INT, path BLOB, kind TEXT, size INT,"
    " mtime_ns INT, mode INT, uid INT, gid INT, owner TEXT, grp TEXT, chunk INT, digest BLOB,"
    " sha256 BLOB, target BLOB, rdev INT, PRIMARY KEY (client, snap, path)) WITHOUT ROWID"
)
# Who owns each path of the current view (and a device's numbers), as the
# latest snapshot naming it walked it: commits carry neither.
OWNERS = (
    "CREATE TABLE IF NOT EXISTS owners (client TEXT, path BLOB, uid INT, gid INT, owner TEXT, grp TEXT,"
    " rdev INT, PRIMARY KEY (client, path)) WITHOUT ROWID"
)
SAME_SIZE_FLOOR = 262144  # the partial indexes' bound: only larger files are looked up by size
SAME_SIZE_MAX = 4  # contents of one size offered to a client to compare with
INDEXES = (
    "DROP INDEX IF EXISTS files_digest",  # of every file: see holders()
    f"CREATE INDEX IF NOT EXISTS files_large_digest ON files (client, digest) WHERE size > {SAME_SIZE_FLOOR}",
    "CREATE INDEX IF NOT EXISTS versions_digest ON versions (client, digest)",
    # No index of entries by digest: one per stored file made every send pay
    # (~35 % of an entry's insert) for what only a prune asks, once per run.
    "DROP INDEX IF EXISTS entries_digest",
    # Large files by size: what a new file may be a copy of (partial: bundles never ask).
    f"CREATE INDEX IF NOT EXISTS files_size ON files (client, size) WHERE size > {SAME_SIZE_FLOOR}",
    f"CREATE INDEX IF NOT EXISTS versions_size ON versions (client, size) WHERE size > {SAME_SIZE_FLOOR}",
)
SPECIAL_KINDS = "('fifo','socket','chardev','blockdev')"  # protocol.snapshot.SPECIAL, as SQL
# What the view holds as records only, with nothing under ROOT: the special
# kinds, and a hard-linked file's later names (kind 'hardlink', target: its first name).
RECORD_KINDS = "('fifo','socket','chardev','blockdev','hardlink')"
RECORD_ENTRY = f"(e.kind IN {SPECIAL_KINDS} OR (e.kind='file' AND e.target IS NOT NULL))"
ENTRY_COLUMNS = "path, kind, size, mtime_ns, mode, uid, gid, owner, grp, chunk, digest, sha256, target, rdev"
RECORD_FILE = "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,'file',NULL)"


class Manifest:
    """One file, many connections: one per thread at a time, from a small pool."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()

    def create(self) -> None:
        """Create the manifest once, in the master, before workers open it."""
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # The tables and the migration commit together: a crash between them would
            # leave an empty snapshots table, and the migration would never run again.
            db.execute("BEGIN IMMEDIATE")
            db.execute(FILES)
            db.execute(VERSIONS)
            new = db.execute("SELECT 1 FROM sqlite_master WHERE name='snapshots'").fetchone() is None
            for statement in (SNAPSHOTS, SNAP_PATHS, ENTRIES, OWNERS, *INDEXES):
                db.execute(statement)
            have = {r[1] for r in db.execute("PRAGMA table_info(snapshots)")}
            for column in SNAPSHOT_OWNER + SNAPSHOT_CHANGES:
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE snapshots ADD COLUMN {column}")
            if new:
                migrate(db)
            db.commit()
        finally:
            db.close()

    def close(self) -> None:
        """Close the pooled connections (a process about to fork must not pass them on)."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection from the pool: threads come and go, descriptors must not."""
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        if self._pool.qsize() < POOL:
            self._pool.put(db)
        else:
            db.close()


# ------------------------------------------------------------------ files

def lookup(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, int, bytes] | None:
    """(size, mtime_ns, digest) of what is recorded at the path."""
    return db.execute("SELECT size, mtime_ns, digest FROM files WHERE client=? AND path=?",
                      (client, raw)).fetchone()


def replaced(db: sqlite3.Connection, client: str, raw: bytes) -> tuple | None:
    """(size, digest, sha256, chunk, mtime_ns, mode) of the entry about to be replaced."""
    return db.execute("SELECT size, digest, sha256, chunk, mtime_ns, mode FROM files WHERE client=? AND path=?",
                      (client, raw)).fetchone()


def record_file(db: sqlite3.Connection, client: str, raw: bytes, meta: dict, digest: bytes,
                sha256: bytes | None, stored_ns: int) -> None:
    db.execute(RECORD_FILE, (client, raw, meta["size"], meta["mtime_ns"], meta["mode"], meta["chunk"],
                             digest, sha256, stored_ns))


def record_files(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Rows of (client, path, size, mtime_ns, mode, chunk, digest, sha256, stored_ns)."""
    db.executemany(RECORD_FILE, rows)


def record_dir(db: sqlite3.Connection, client: str, raw: bytes, mtime_ns: int, mode: int, stored_ns: int) -> None:
    db.execute("INSERT OR REPLACE INTO files VALUES (?,?,0,?,?,0,NULL,NULL,?,'dir',NULL)",
               (client, raw, mtime_ns, mode, stored_ns))


def dir_record(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, int] | None:
    """(mtime_ns, mode) recorded for the folder at the path, None if none is."""
    row = db.execute("SELECT mtime_ns, mode FROM files WHERE client=? AND path=? AND kind='dir'",
                     (client, raw)).fetchone()
    return (row[0], row[1]) if row else None


def record_link(db: sqlite3.Connection, client: str, raw: bytes, mtime_ns: int, stored_ns: int,
                target: bytes) -> None:
    db.execute("INSERT OR REPLACE INTO files VALUES (?,?,0,?,511,0,NULL,NULL,?,'link',?)",
               (client, raw, mtime_ns, stored_ns, target))


def retouch(db: sqlite3.Connection, client: str, raw: bytes, mtime_ns: int, mode: int) -> None:
    """The same content stored again: only its time and mode change."""
    db.execute("UPDATE files SET mtime_ns=?, mode=? WHERE client=? AND path=?", (mtime_ns, mode, client, raw))


def file_sizes(db: sqlite3.Connection, client: str, raws: list[bytes]) -> dict[bytes, tuple[int, int]]:
    """{path: (size, mtime_ns)} of those of *raws* recorded as files."""
    found: dict[bytes, tuple[int, int]] = {}
    for start in range(0, len(raws), RECORDS_PER_QUERY):
        part = raws[start : start + RECORDS_PER_QUERY]
        rows = db.execute(
            f"SELECT path, size, mtime_ns FROM files WHERE client=? AND kind='file'"
            f" AND path IN ({','.join('?' * len(part))})", (client, *part)).fetchall()
        found.update((bytes(path), (size, mtime_ns)) for path, size, mtime_ns in rows)
    return found


def any_file_under(db: sqlite3.Connection, client: str, top: bytes) -> bool:
    """Whether a file is recorded at *top* or below it."""
    return db.execute("SELECT 1 FROM files WHERE client=? AND kind='file'"
                      " AND (path=? OR (path >= ? AND path < ?)) LIMIT 1",
                      (client, top, top + b"/", top + b"0")).fetchone() is not None  # '0' follows '/'


def list_page(db: sqlite3.Connection, client: str, raw: bytes, after: bytes | None, limit: int) -> list[tuple]:
    """(path, kind, size, mtime_ns, mode, sha256, target, stored_ns, chunk, digest, uid, gid,
    owner, group, rdev) at or below *raw* (everything when empty), after *after*, in path order."""
    where, args = "f.client=?", [client]
    if raw:
        where += " AND (f.path=? OR (f.path>? AND f.path<?))"
        args += [raw, raw + b"/", raw + b"0"]  # '0' follows '/' in byte order
    if after is not None:
        where += " AND f.path>?"
        args.append(after)
    return db.execute(
        f"SELECT f.path, kind, size, mtime_ns, mode, sha256, target, stored_ns, chunk, digest,"
        f" o.uid, o.gid, o.owner, o.grp, o.rdev FROM files f LEFT JOIN owners o ON o.client=f.client AND o.path=f.path"
        f" WHERE {where} ORDER BY f.path LIMIT ?", args + [limit]).fetchall()


def check_fields(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, int, bytes, bytes | None] | None:
    """(size, chunk, digest, sha256) of a stored file, to check it at rest."""
    return db.execute("SELECT size, chunk, digest, sha256 FROM files WHERE client=? AND path=?"
                      " AND kind='file'", (client, raw)).fetchone()


def set_sha256(db: sqlite3.Connection, client: str, raw: bytes, sha256: bytes, digest: bytes) -> None:
    """Known once the verified bytes were read whole: recorded on the row of that content."""
    db.execute("UPDATE files SET sha256=? WHERE client=? AND path=? AND digest=?", (sha256, client, raw, digest))


def entry_digest(db: sqlite3.Connection, client: str, snap: int, raw: bytes) -> bytes | None:
    """The digest of the content snapshot *snap* holds at *raw* (a file), if any."""
    row = db.execute("SELECT digest FROM entries WHERE client=? AND snap=? AND path=? AND kind='file'",
                     (client, snap, raw)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else None


def receipt_fields(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, bytes, int]:
    """(size, digest, stored_ns) of a stored file."""
    return db.execute("SELECT size, digest, stored_ns FROM files WHERE client=? AND path=?",
                      (client, raw)).fetchone()


def stored_files(db: sqlite3.Connection, client: str | None) -> list[tuple[str, bytes, bytes]]:
    """(client, path, digest) of every stored file, of one client or all."""
    if client is None:
        return db.execute("SELECT client, path, digest FROM files WHERE kind='file' ORDER BY client, path").fetchall()
    return db.execute("SELECT client, path, digest FROM files WHERE kind='file' AND client=? ORDER BY path",
                      (client,)).fetchall()


# --------------------------------------------------------------- versions

def add_version(db: sqlite3.Connection, client: str, raw: bytes, version: str, size: int, old: tuple,
                replaced_ns: int) -> None:
    """*old*: (digest, sha256, chunk, mtime_ns, mode) of the copy kept."""
    db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?)",
               (client, raw, version, size, old[0], old[1], replaced_ns, old[2], old[3], old[4]))


def drop_version(db: sqlite3.Connection, rowid: int) -> None:
    db.execute("DELETE FROM versions WHERE rowid=?", (rowid,))


def list_versions(db: sqlite3.Connection, client: str, raw: bytes, limit: int) -> list[tuple]:
    """(path, version, size, sha256, replaced_ns, chunk, digest, mtime_ns, mode) at or
    below *raw* (everything when empty), newest first per path."""
    return db.execute(
        "SELECT path, version, size, sha256, replaced_ns, chunk, digest, mtime_ns, mode FROM versions"
        " WHERE client=? AND (?=X'' OR path=? OR (path>? AND path<?)) ORDER BY path, replaced_ns DESC"
        " LIMIT ?", (client, raw, raw, raw + b"/", raw + b"0", limit)).fetchall()


# -------------------------------------------------------------- snapshots

def migrate(db: sqlite3.Connection) -> None:
    """A root written before snapshots: what each client holds becomes its first snapshot."""
    for (client,) in db.execute("SELECT DISTINCT client FROM files").fetchall():
        (time_ns,) = db.execute("SELECT MAX(stored_ns) FROM files WHERE client=?", (client,)).fetchone()
        db.execute("INSERT INTO snapshots (client, id, time_ns, state, host, note) VALUES (?,1,?,'complete','','migrated')",
                   (client, time_ns or 0))
        db.execute("INSERT INTO entries SELECT client, 1, path, kind, size, mtime_ns, mode, NULL, NULL, NULL,"
                   " NULL, chunk, digest, sha256, target, NULL FROM files WHERE client=?", (client,))
        tops = {bytes(p).split(b"/")[0] for (p,) in db.execute("SELECT path FROM files WHERE client=?", (client,))}
        db.executemany("INSERT INTO snap_paths VALUES (?,1,?,NULL)", [(client, t) for t in sorted(tops)])
        count_snapshot(db, client, 1)


def begin_snapshot(db: sqlite3.Connection, client: str, time_ns: int, host: str,
                   tops: list[tuple[bytes, str | None]], owner: tuple = (None,) * 4) -> int:
    """A new open snapshot of *client* naming *tops* (path, source), its files'
    usual *owner* (uid, gid, owner, group); its id."""
    # One statement: two sends of one client cannot both take the same id.
    db.execute("INSERT INTO snapshots (client, id, time_ns, state, host, uid, gid, owner, grp)"
               " SELECT ?, COALESCE(MAX(id), 0) + 1, ?, 'open', ?, ?, ?, ?, ? FROM snapshots WHERE client=?",
               (client, time_ns, host, *owner, client))
    (snap,) = db.execute("SELECT MAX(id) FROM snapshots WHERE client=?", (client,)).fetchone()
    db.executemany("INSERT OR REPLACE INTO snap_paths VALUES (?,?,?,?)",
                   [(client, snap, raw, source) for raw, source in tops])
    return snap


def last_sources(db: sqlite3.Connection, client: str, raw: bytes) -> str | None:
    """The source folder the latest kept snapshot naming *raw* was sent from."""
    row = db.execute("SELECT p.source FROM snap_paths p JOIN snapshots s ON s.client=p.client AND s.id=p.snap"
                     " WHERE p.client=? AND p.path=? AND s.state IN ('complete','partial')"
                     " ORDER BY p.snap DESC LIMIT 1", (client, raw)).fetchone()
    return row[0] if row else None


def snapshot_state(db: sqlite3.Connection, client: str, snap: int) -> tuple[str, int] | None:
    """(state, entries dropped because they were not stored)."""
    return db.execute("SELECT state, dropped FROM snapshots WHERE client=? AND id=?", (client, snap)).fetchone()


def count_dropped(db: sqlite3.Connection, client: str, snap: int, count: int) -> None:
    db.execute("UPDATE snapshots SET dropped=dropped+? WHERE client=? AND id=?", (count, client, snap))


def join_snapshot(db: sqlite3.Connection, client: str, snap: int, raws: list[bytes], stored: int) -> int:
    """Files just stored or found unchanged at *raws* become entries of the open
    snapshot *snap*, as the current view now records them (size, time, mode and
    content: what the server stored, never what a client claims) and with the
    snapshot's usual owner; *stored* of them had new content.  Returns how many
    were refused (outside the snapshot's paths: counted as dropped, which makes it
    partial); a snapshot that is not open records nothing."""
    owner = db.execute("SELECT uid, gid, owner, grp FROM snapshots WHERE client=? AND id=? AND state='open'",
                       (client, snap)).fetchone()
    if owner is None or not raws:
        return 0
    inside = list(filter(snapshot.within(snapshot_tops(db, client, snap)), raws))
    # One statement per slice, the rows copied inside SQLite: half the cost of binding each.
    for start in range(0, len(inside), RECORDS_PER_QUERY):
        part = inside[start : start + RECORDS_PER_QUERY]
        db.execute("INSERT OR REPLACE INTO entries SELECT client, ?, path, 'file', size, mtime_ns, mode, ?, ?, ?, ?,"
                   " chunk, digest, sha256, NULL, 0 FROM files WHERE client=? AND kind='file'"
                   f" AND path IN ({','.join('?' * len(part))})", (snap, *owner, client, *part))
    if len(inside) < len(raws):
        count_dropped(db, client, snap, len(raws) - len(inside))
    if stored:
        db.execute("UPDATE snapshots SET changed=changed+? WHERE client=? AND id=?", (stored, client, snap))
    return len(raws) - len(inside)


def snapshot_tops(db: sqlite3.Connection, client: str, snap: int) -> list[bytes]:
    return [bytes(r[0]) for r in db.execute("SELECT path FROM snap_paths WHERE client=? AND snap=? ORDER BY path",
                                            (client, snap))]


def add_entries(db: sqlite3.Connection, client: str, snap: int, rows: list[tuple]) -> None:
    """Rows in ENTRY_COLUMNS order."""
    db.executemany(f"INSERT OR REPLACE INTO entries VALUES (?,?,{','.join('?' * 14)})",
                   [(client, snap, *r) for r in rows])


def file_records(db: sqlite3.Connection, client: str, raws: list[bytes]) -> dict[bytes, tuple]:
    """{path: (size, mtime_ns, chunk, digest, sha256)} of those of *raws* the current view holds as files."""
    found: dict[bytes, tuple] = {}
    for start in range(0, len(raws), RECORDS_PER_QUERY):
        part = raws[start : start + RECORDS_PER_QUERY]
        rows = db.execute(
            f"SELECT path, size, mtime_ns, chunk, digest, sha256 FROM files WHERE client=? AND kind='file'"
            f" AND path IN ({','.join('?' * len(part))})", (client, *part)).fetchall()
        found.update((bytes(r[0]), tuple(r[1:])) for r in rows)
    return found


def end_snapshot(db: sqlite3.Connection, client: str, snap: int, state: str, removed: int) -> None:
    db.execute("UPDATE snapshots SET state=?, removed=? WHERE client=? AND id=?", (state, removed, client, snap))
    count_snapshot(db, client, snap)


def count_snapshot(db: sqlite3.Connection, client: str, snap: int) -> None:
    db.execute("UPDATE snapshots SET files=(SELECT COUNT(*) FROM entries WHERE client=? AND snap=? AND kind='file'),"
               " bytes=(SELECT COALESCE(SUM(size), 0) FROM entries WHERE client=? AND snap=? AND kind='file')"
               " WHERE client=? AND id=?", (client, snap, client, snap, client, snap))


def drop_stale_open(db: sqlite3.Connection, client: str, before_ns: int) -> None:
    """Snapshots a send opened and never ended (it died): their entries go."""
    for (snap,) in db.execute("SELECT id FROM snapshots WHERE client=? AND state='open' AND time_ns<?",
                              (client, before_ns)).fetchall():
        forget_snapshot(db, client, snap)


def forget_snapshot(db: sqlite3.Connection, client: str, snap: int) -> None:
    db.execute("DELETE FROM entries WHERE client=? AND snap=?", (client, snap))
    db.execute("DELETE FROM snap_paths WHERE client=? AND snap=?", (client, snap))
    db.execute("UPDATE snapshots SET state='forgotten' WHERE client=? AND id=?", (client, snap))


def snapshots(db: sqlite3.Connection, client: str) -> list[tuple]:
    """(id, time_ns, state, host, files, bytes, note, dropped, changed, removed) of every kept
    snapshot, oldest first."""
    return db.execute("SELECT id, time_ns, state, host, files, bytes, note, dropped, COALESCE(changed, 0),"
                      " COALESCE(removed, 0) FROM snapshots WHERE client=?"
                      " AND state IN ('complete','partial') ORDER BY id", (client,)).fetchall()


def snapshot_paths(db: sqlite3.Connection, client: str) -> dict[int, list[tuple[bytes, str | None]]]:
    out: dict[int, list[tuple[bytes, str | None]]] = {}
    for snap, path, source in db.execute("SELECT snap, path, source FROM snap_paths WHERE client=?"
                                         " ORDER BY snap, path", (client,)):
        out.setdefault(snap, []).append((bytes(path), source))
    return out


def entry_page(db: sqlite3.Connection, client: str, snap: int, raw: bytes, after: bytes | None,
               limit: int) -> list[tuple]:
    """Entries of one snapshot at or below *raw*, after *after*, in path order (ENTRY_COLUMNS)."""
    where, args = "client=? AND snap=?", [client, snap]
    if raw:
        where += " AND (path=? OR (path>? AND path<?))"
        args += [raw, raw + b"/", raw + b"0"]
    if after is not None:
        where += " AND path>?"
        args.append(after)
    return db.execute(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {where} ORDER BY path LIMIT ?",
                      args + [limit]).fetchall()


def not_in_snapshot(db: sqlite3.Connection, client: str, snap: int, raw: bytes) -> list[tuple[bytes, str]]:
    """(path, kind) the current view holds at or below *raw* that the snapshot does not,
    or holds as a file, folder or link where the snapshot has only a record (a FIFO,
    socket or device, or a file's later name)."""
    where, args = "f.client=?", [client]
    if raw:
        where += " AND (f.path=? OR (f.path>? AND f.path<?))"
        args += [raw, raw + b"/", raw + b"0"]
    return [(bytes(p), k) for p, k in db.execute(
        f"SELECT f.path, f.kind FROM files f WHERE {where} AND NOT EXISTS (SELECT 1 FROM entries e"
        f" WHERE e.client=f.client AND e.snap=? AND e.path=f.path AND NOT ({RECORD_ENTRY}"
        f" AND f.kind NOT IN {RECORD_KINDS})) ORDER BY f.path", args + [snap])]


def record_specials(db: sqlite3.Connection, client: str, snap: int, time_ns: int) -> None:
    """The FIFOs, sockets, devices and later names of files a snapshot walked join
    the current view as records only (nothing is made under ROOT), where the view
    holds nothing else at their path."""
    db.execute("INSERT OR REPLACE INTO files (client, path, size, mtime_ns, mode, chunk, digest, sha256,"
               " stored_ns, kind, target)"
               " SELECT e.client, e.path, e.size, e.mtime_ns, e.mode, COALESCE(e.chunk, 0), e.digest, e.sha256, ?,"
               " CASE WHEN e.kind='file' THEN 'hardlink' ELSE e.kind END, e.target FROM entries e"
               f" WHERE e.client=? AND e.snap=? AND {RECORD_ENTRY} AND NOT EXISTS (SELECT 1 FROM files f"
               f" WHERE f.client=e.client AND f.path=e.path AND f.kind NOT IN {RECORD_KINDS})",
               (time_ns, client, snap))


def drop_record(db: sqlite3.Connection, client: str, raw: bytes) -> None:
    """The current view's records at and below *raw* (it left the view)."""
    for table in ("files", "owners"):
        db.execute(f"DELETE FROM {table} WHERE client=? AND (path=? OR (path>? AND path<?))",
                   (client, raw, raw + b"/", raw + b"0"))


def record_owners(db: sqlite3.Connection, client: str, snap: int) -> None:
    """The owners a snapshot walked become the current view's (only those that changed are written)."""
    db.execute("INSERT OR REPLACE INTO owners SELECT e.client, e.path, e.uid, e.gid, e.owner, e.grp, e.rdev"
               " FROM entries e WHERE e.client=? AND e.snap=? AND e.uid IS NOT NULL AND NOT EXISTS (SELECT 1"
               " FROM owners o WHERE o.client=e.client AND o.path=e.path AND o.uid IS e.uid AND o.gid IS e.gid"
               " AND o.owner IS e.owner AND o.grp IS e.grp AND o.rdev IS e.rdev)", (client, snap))


def same_size(db: sqlite3.Connection, client: str, raw: bytes, size: int) -> list[tuple[bytes, int]]:
    """(digest, chunk) of up to a few stored contents of this size at other paths:
    what a new file there may be a copy of."""
    if size <= SAME_SIZE_FLOOR:
        return []
    found: dict[bytes, int] = {}
    for table, kind in (("files", " AND kind='file'"), ("versions", "")):
        for digest, chunk in db.execute(
                f"SELECT digest, chunk FROM {table} WHERE client=? AND size=? AND size > {SAME_SIZE_FLOOR}"
                f" AND path<>? AND digest IS NOT NULL{kind} LIMIT ?", (client, size, raw, SAME_SIZE_MAX)):
            if chunk and len(found) < SAME_SIZE_MAX:
                found.setdefault(bytes(digest), chunk)
    return list(found.items())


def holders(db: sqlite3.Connection, client: str, digest: bytes, path: bytes | None = None,
            size: int | None = None) -> list[tuple[bytes, str | None, int, int]]:
    """(path, version name or None, size, chunk) of the stored copies with this digest:
    at *path* in the current view first (the common case: the file did not change),
    then among the older copies, then elsewhere in the view.

    Only large files are indexed by digest in the view (an index of every file
    cost ~3 % of a 10,000-file send); a small file's content is at its own path
    or, once replaced or removed, an older copy, so the scan of the view that
    finds it elsewhere is the rare case of a small file held under another name
    only (a hard link's later name)."""
    rows = []
    if path is not None:
        rows += db.execute("SELECT path, NULL, size, chunk FROM files WHERE client=? AND path=? AND digest=?"
                           " AND kind='file'", (client, path, digest)).fetchall()
    rows += db.execute("SELECT path, version, size, chunk FROM versions WHERE client=? AND digest=?",
                       (client, digest)).fetchall()
    if not rows:
        rows = db.execute(f"SELECT path, NULL, size, chunk FROM files WHERE client=? AND digest=? AND kind='file'"
                          f" AND size > {SAME_SIZE_FLOOR}", (client, digest)).fetchall()
    if not rows and (size is None or size <= SAME_SIZE_FLOOR):
        rows = db.execute("SELECT path, NULL, size, chunk FROM files WHERE client=? AND digest=?"
                          " AND kind='file' LIMIT 4", (client, digest)).fetchall()
    return [(bytes(p), v, n, chunk) for p, v, n, chunk in rows if size is None or n == size]


def snapshot_contents(db: sqlite3.Connection, client: str) -> list[tuple[bytes, bytes, list[int]]]:
    """(digest, a path naming it, the snapshot ids naming it) of every content the
    kept snapshots of *client* refer to."""
    rows = db.execute(
        "SELECT e.digest, MIN(e.path), GROUP_CONCAT(DISTINCT e.snap) FROM entries e JOIN snapshots s"
        " ON s.client=e.client AND s.id=e.snap WHERE e.client=? AND s.state IN ('complete','partial')"
        " AND e.kind='file' AND e.digest IS NOT NULL GROUP BY e.digest ORDER BY MIN(e.path)", (client,)).fetchall()
    return [(bytes(d), bytes(p), sorted(int(i) for i in str(ids).split(","))) for d, p, ids in rows]


def snapshot_clients(db: sqlite3.Connection) -> list[str]:
    return [c for (c,) in db.execute("SELECT DISTINCT client FROM snapshots ORDER BY client")]


def unreferenced_versions(db: sqlite3.Connection, client: str) -> list[tuple[int, bytes, str, int]]:
    """(rowid, path, version, size) of the older copies no snapshot's entry refers to."""
    return db.execute(
        "SELECT rowid, path, version, size FROM versions WHERE client=? AND (digest IS NULL OR digest NOT IN"
        " (SELECT digest FROM entries WHERE client=? AND digest IS NOT NULL))", (client, client)).fetchall()


def held_bytes(db: sqlite3.Connection, client: str) -> int:
    """What counts against a client's quota: its stored files and every older copy kept,
    by size (a hard link's record holds no bytes of its own)."""
    files = db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE client=? AND kind='file'"
                       " AND target IS NULL", (client,)).fetchone()[0]
    versions = db.execute("SELECT COALESCE(SUM(size), 0) FROM versions WHERE client=?", (client,)).fetchone()[0]
    return int(files) + int(versions)
