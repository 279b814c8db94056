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
            db.execute(FILES)
            db.execute(VERSIONS)
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
    """(path, kind, size, mtime_ns, mode, sha256, target, stored_ns, chunk, digest) at or
    below *raw* (everything when empty), after *after*, in path order."""
    where, args = "client=?", [client]
    if raw:
        where += " AND (path=? OR (path>? AND path<?))"
        args += [raw, raw + b"/", raw + b"0"]  # '0' follows '/' in byte order
    if after is not None:
        where += " AND path>?"
        args.append(after)
    return db.execute(
        f"SELECT path, kind, size, mtime_ns, mode, sha256, target, stored_ns, chunk, digest FROM files"
        f" WHERE {where} ORDER BY path LIMIT ?", args + [limit]).fetchall()


def check_fields(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, int, bytes, bytes | None] | None:
    """(size, chunk, digest, sha256) of a stored file, to check it at rest."""
    return db.execute("SELECT size, chunk, digest, sha256 FROM files WHERE client=? AND path=?"
                      " AND kind='file'", (client, raw)).fetchone()


def set_sha256(db: sqlite3.Connection, client: str, raw: bytes, sha256: bytes) -> None:
    """Known once the verified bytes were read whole."""
    db.execute("UPDATE files SET sha256=? WHERE client=? AND path=?", (sha256, client, raw))


def receipt_fields(db: sqlite3.Connection, client: str, raw: bytes) -> tuple[int, bytes, int]:
    """(size, digest, stored_ns) of a stored file."""
    return db.execute("SELECT size, digest, stored_ns FROM files WHERE client=? AND path=?",
                      (client, raw)).fetchone()


def stored_files(db: sqlite3.Connection, client: str | None) -> list[tuple[str, bytes]]:
    """(client, path) of every stored file, of one client or all."""
    if client is None:
        return db.execute("SELECT client, path FROM files WHERE kind='file' ORDER BY client, path").fetchall()
    return db.execute("SELECT client, path FROM files WHERE kind='file' AND client=? ORDER BY path",
                      (client,)).fetchall()


# --------------------------------------------------------------- versions

def add_version(db: sqlite3.Connection, client: str, raw: bytes, version: str, size: int, old: tuple,
                replaced_ns: int) -> None:
    """*old*: (digest, sha256, chunk, mtime_ns, mode) of the copy kept."""
    db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?)",
               (client, raw, version, size, old[0], old[1], replaced_ns, old[2], old[3], old[4]))


def versions_newest_first(db: sqlite3.Connection, client: str, raw: bytes) -> list[tuple[int, str]]:
    """(rowid, version) of the copies kept of one path."""
    return db.execute("SELECT rowid, version FROM versions WHERE client=? AND path=? ORDER BY replaced_ns DESC",
                      (client, raw)).fetchall()


def drop_version(db: sqlite3.Connection, rowid: int) -> None:
    db.execute("DELETE FROM versions WHERE rowid=?", (rowid,))


def list_versions(db: sqlite3.Connection, client: str, raw: bytes, limit: int) -> list[tuple]:
    """(path, version, size, sha256, replaced_ns, chunk, digest, mtime_ns, mode) at or
    below *raw* (everything when empty), newest first per path."""
    return db.execute(
        "SELECT path, version, size, sha256, replaced_ns, chunk, digest, mtime_ns, mode FROM versions"
        " WHERE client=? AND (?=X'' OR path=? OR (path>? AND path<?)) ORDER BY path, replaced_ns DESC"
        " LIMIT ?", (client, raw, raw, raw + b"/", raw + b"0", limit)).fetchall()
