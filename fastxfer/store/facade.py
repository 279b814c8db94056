"""The server's disk: staging files, chunk records, commit, versions, manifest.

    ROOT/<client>/<path as sent>          committed files, nothing else
    ROOT/.fastxfer/staging/<client>/<fid>.data   bytes being received
    ROOT/.fastxfer/staging/<client>/<fid>.meta   JSON: path, size, mtime, mode, chunk
    ROOT/.fastxfer/staging/<client>/<fid>.rec    chunk record (layout.py)
    ROOT/.fastxfer/versions/<client>/<path>~<UTC time>   replaced copies
    ROOT/.fastxfer/manifest.sqlite        what each client has stored

Every folder below a client's is opened with O_NOFOLLOW from its parent's
descriptor, so no symlink (stored, or planted by someone on the server) can
lead a write outside the client's folder.  A file appears at its path only
by rename after its hash list is verified and it is fsynced, so a reader of
the backup never sees a half-written file; a replaced file is first
hard-linked into versions/, so no update destroys the only copy.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import hmac
import json
import os
import sqlite3
import stat
import queue
from collections.abc import Iterator
from dataclasses import dataclass

from fastxfer.protocol import layout
from fastxfer.protocol import paths
from fastxfer.store.catalog import Catalog
from fastxfer.localfs import DIR_FLAGS, open_chain
from fastxfer.store.diskio import (MEMORY_FILESYSTEMS, current_umask, filesystem_type, now_ns, read_file, space_error,
                                   unlink_quietly, write_all)
from fastxfer.errors import FxError, ProtocolError, RefusedError, VerifyError
from fastxfer.store.bundles import SmallFiles

STATE = ".fastxfer"
POOL = 4  # idle manifest connections a worker keeps


@dataclass(frozen=True)
class PutReply:
    fid: bytes
    chunk: int
    status: str  # "new", "resume" or "unchanged"
    have: dict[int, bytes]


@dataclass(frozen=True)
class Stored:
    path: str
    status: str  # "stored" or "unchanged"
    version: str | None  # name of the older version kept, if any


def file_id(secret: bytes, client: str, path: bytes, size: int, mtime_ns: int) -> bytes:
    """Same file, same sender -> same staging, which is what makes resume find it.

    Keyed with a secret that never leaves the server, because the id travels
    in clear stream headers: an eavesdropper must not be able to confirm a
    guessed name.
    """
    msg = b"\x00".join([client.encode(), path, b"%d" % size, b"%d" % mtime_ns])
    return hmac.new(secret, msg, hashlib.sha256).digest()[:16]


class StagingFile:
    """One file being received, as a stream worker holds it."""

    def __init__(self, store: Store, client: str, fid: bytes) -> None:
        self.fid = fid
        base = store.staging_fd(client, create=False)
        try:
            name = fid.hex().encode()
            meta = json.loads(read_file(base, name + b".meta"))
            self.size: int = meta["size"]
            self.chunk: int = meta["chunk"]
            self.count = layout.chunk_count(self.size, self.chunk)
            self.data_fd = os.open(name + b".data", os.O_WRONLY | os.O_NOFOLLOW, dir_fd=base)
            try:
                self.rec_fd = os.open(name + b".rec", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW, dir_fd=base)
            except OSError:
                os.close(self.data_fd)
                raise
        except (OSError, ValueError, KeyError):
            raise ProtocolError(f"unknown transfer {fid.hex()}") from None
        finally:
            os.close(base)
        self.pending: list[bytes] = []

    def write(self, offset: int, data: memoryview, digest: bytes) -> None:
        index, rem = divmod(offset, self.chunk)
        if rem or index >= self.count or layout.chunk_span(self.size, self.chunk, index)[1] != len(data):
            raise ProtocolError("chunk does not fit the file's layout")
        try:
            write_all(self.data_fd, data, offset)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RefusedError("not enough space on the server (disk full)") from None
            raise
        self.pending.append(layout.record_entry(index, digest))

    def flush(self) -> None:
        """Data first on stable storage, then the record that vouches for it."""
        if not self.pending:
            return
        try:
            os.fdatasync(self.data_fd)
            entries = b"".join(self.pending)
            # One write: O_APPEND keeps entries whole even when several
            # streams append to the same record.  A short write (disk full)
            # leaves a torn entry, which parse_record ignores.
            if os.write(self.rec_fd, entries) != len(entries):
                raise OSError(errno.ENOSPC, "short write of the chunk record")
            os.fdatasync(self.rec_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RefusedError("not enough space on the server (disk full)") from None
            raise
        self.pending.clear()

    def close(self) -> None:
        for fd in (self.data_fd, self.rec_fd):
            if fd >= 0:
                os.close(fd)
        self.data_fd = self.rec_fd = -1


@dataclass(frozen=True)
class Policy:
    """What the server keeps, per client (``fastxfer serve`` options)."""

    keep_versions: int = 10  # older copies kept per path, newest first
    max_staging_bytes: int = 1 << 40  # bytes of unfinished transfers
    max_staging_files: int = 100_000  # unfinished transfers
    staging_max_age: float = 7 * 24 * 3600.0  # an abandoned transfer is removed after this


class Store(SmallFiles, Catalog):
    """One per worker process (the manifest connection is per thread).

    Staging, commit, versions and the manifest are here; small files and
    probes in smallfiles.py, the read side in catalog.py."""

    def __init__(self, root: str, policy: Policy = Policy()) -> None:
        self.policy = policy
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, STATE, "staging"), exist_ok=True)
        os.makedirs(os.path.join(self.root, STATE, "versions"), exist_ok=True)
        self.root_fd = os.open(self.root, DIR_FLAGS)
        self.state_fd = os.open(STATE, DIR_FLAGS, dir_fd=self.root_fd)
        self.fid_secret = self._secret()
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self.umask = current_umask()
        # Reserving a file's space at put costs a disk filesystem next to
        # nothing and keeps the file in one piece.  On a memory filesystem it
        # allocates every page up front, before any stream may start: the same
        # work the writes would do in parallel, made serial (0.27 s a GiB here).
        self.preallocate = filesystem_type(self.root) not in MEMORY_FILESYSTEMS

    # ------------------------------------------------------------- plumbing

    def _secret(self) -> bytes:
        """A random key kept with the state, made once, the same for every worker."""
        try:
            fd = os.open("fid.key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.state_fd)
        except FileNotFoundError:
            tmp = f"fid.key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=self.state_fd)
            try:
                os.write(fd, os.urandom(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, "fid.key", src_dir_fd=self.state_fd, dst_dir_fd=self.state_fd)
            except FileExistsError:
                pass  # another process made it first: use theirs
            os.unlink(tmp, dir_fd=self.state_fd)
            fd = os.open("fid.key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.state_fd)
        try:
            secret = os.read(fd, 64)
        finally:
            os.close(fd)
        if len(secret) != 32:
            raise OSError(errno.EINVAL, "damaged fid.key in the state folder")
        return secret

    def _manifest_path(self) -> str:
        return os.path.join(self.root, STATE, "manifest.sqlite")

    def init_manifest(self) -> None:
        """Create the manifest once, in the master, before workers open it."""
        db = sqlite3.connect(self._manifest_path(), timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (client TEXT, path BLOB, size INT,"
                " mtime_ns INT, mode INT, chunk INT, digest BLOB, sha256 BLOB,"
                " stored_ns INT, kind TEXT DEFAULT 'file', target BLOB,"
                " PRIMARY KEY (client, path))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS versions (client TEXT, path BLOB,"
                " version TEXT, size INT, digest BLOB, sha256 BLOB, replaced_ns INT,"
                " chunk INT, mtime_ns INT, mode INT)"
            )
            db.commit()
        finally:
            db.close()

    @contextlib.contextmanager
    def _manifest(self) -> Iterator[sqlite3.Connection]:
        """A manifest connection from a small pool: threads come and go, descriptors must not."""
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            db = sqlite3.connect(self._manifest_path(), timeout=60, check_same_thread=False)
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

    def staging_fd(self, client: str, create: bool) -> int:
        return open_chain(self.state_fd, [b"staging", client.encode()], create)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root_fd)
        return st.f_bavail * st.f_frsize

    def lookup(self, client: str, path: bytes) -> tuple | None:
        with self._manifest() as db:
            return db.execute(
                "SELECT size, mtime_ns, digest FROM files WHERE client=? AND path=?", (client, path)
            ).fetchone()

    # ------------------------------------------------------------------ put

    def open_put(self, client: str, path: str, size: int, mtime_ns: int, mode: int,
                 chunk: int, usage: list[int] | None = None, force: bool = False) -> PutReply:
        """*usage*: [files, bytes] of the client's staging, shared across one batch
        so that a batch of thousands is not a scan of the staging per file."""
        parts = paths.split(path)
        raw = b"/".join(parts)
        fid = file_id(self.fid_secret, client, raw, size, mtime_ns)
        self._check_parents(client, parts)
        row = None if force else self.lookup(client, raw)
        if row and row[0] == size and row[1] == mtime_ns and self._is_file(client, parts):
            return PutReply(fid, chunk, "unchanged", {})
        base = self.staging_fd(client, create=True)
        try:
            existing = self._resume(base, fid, size, mtime_ns)
            if existing is not None:
                return existing
            if not layout.valid_layout(size, chunk):
                raise RefusedError(f"chunk size {chunk} is not allowed for {size} bytes")
            free = self.free_bytes()
            if size > free:
                raise space_error(size, free)
            if usage is None:
                usage = []
            if not usage:
                usage.extend(self.staging_usage(base))
            files, used = usage
            if files >= self.policy.max_staging_files or used + size > self.policy.max_staging_bytes:
                raise RefusedError(
                    f"{path}: too many unfinished transfers for this client on the server "
                    f"({files} files, {used} bytes); finish or wait for them"
                )
            self._create_staging(base, fid, {
                "client": client, "path": path, "size": size,
                "mtime_ns": mtime_ns, "mode": mode, "chunk": chunk,
            })
            usage[0] += 1
            usage[1] += size
        finally:
            os.close(base)
        return PutReply(fid, chunk, "new", {})

    @staticmethod
    def staging_usage(base: int) -> tuple[int, int]:
        """(files, bytes) of one client's unfinished transfers."""
        files = used = 0
        for entry in os.scandir(base):
            if entry.name.endswith(".data"):
                files += 1
                used += entry.stat(follow_symlinks=False).st_size
        return files, used

    def clean_staging(self, now: float) -> int:
        """Remove transfers abandoned longer than the policy allows; at start only."""
        removed = 0
        top = os.path.join(self.root, STATE, "staging")
        for client in os.scandir(top):
            if not client.is_dir(follow_symlinks=False):
                continue
            entries = {e.name: e for e in os.scandir(client.path)}
            for name, entry in entries.items():
                stem = name.split(".", 1)[0]
                meta = entries.get(stem + ".meta")
                # Age from the last sign of life: every durable chunk touches the record.
                last = max(e.stat(follow_symlinks=False).st_mtime
                           for e in (entry, meta, entries.get(stem + ".rec")) if e is not None)
                # No meta: creation was cut short, the client was never told of it.
                if meta is None or now - last > self.policy.staging_max_age:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    # ------------------------------------------------------ folders, links

    def make_dir(self, client: str, path: str) -> str:
        """Create the folder (and its parents); its mode and time come with finish_dirs."""
        parts = paths.split(path)
        self._check_parents(client, parts)
        fd = open_chain(self.root_fd, [client.encode()] + parts, create=True)
        os.close(fd)
        return "stored"

    def finish_dirs(self, client: str, items: list[tuple[str, int, int]]) -> None:
        """Mode and time of folders, set once everything inside them is in place,
        and recorded in the manifest so that a restore can set them too."""
        with self._manifest() as db:
            for path, mode, mtime_ns in items:
                try:
                    parts = paths.split(path)
                    fd = open_chain(self.root_fd, [client.encode()] + parts, create=False)
                except (OSError, FxError):
                    continue  # its creation failed and was reported then
                try:
                    os.fchmod(fd, (mode & 0o777) | 0o700)  # the server must still be able to write inside
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                db.execute("INSERT OR REPLACE INTO files VALUES (?,?,0,?,?,0,NULL,NULL,?,'dir',NULL)",
                           (client, b"/".join(parts), mtime_ns, mode & 0o777, now_ns()))
            db.commit()

    def make_link(self, client: str, path: str, target: str, mtime_ns: int) -> Stored:
        """A symlink stored as a link: created aside, renamed into place."""
        parts = paths.split(path)
        raw = b"/".join(parts)
        link_target = os.fsencode(target)
        if not link_target or b"\x00" in link_target or len(link_target) > paths.MAX_TOTAL:
            raise RefusedError(f"{path}: link target refused")
        self._check_parents(client, parts)
        parent = open_chain(self.root_fd, [client.encode()] + parts[:-1], create=True)
        try:
            try:
                if os.readlink(parts[-1], dir_fd=parent) == link_target:
                    return Stored(path, "unchanged", None)
            except OSError:
                pass
            tmp = b".fastxfer-link-" + os.urandom(8).hex().encode()
            os.symlink(link_target, tmp, dir_fd=parent)
            try:
                os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
                # One transaction: the kept version and the new entry land together.
                with self._manifest() as db:
                    version = self._keep_old(db, parent, client, parts, b"")
                    os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
                    os.fsync(parent)
                    db.execute(
                        "INSERT OR REPLACE INTO files VALUES (?,?,0,?,511,0,NULL,NULL,?,'link',?)",
                        (client, raw, mtime_ns, now_ns(), link_target),
                    )
                    db.commit()
            except BaseException:
                unlink_quietly(tmp, parent)
                raise
        finally:
            os.close(parent)
        return Stored(path, "stored", version if version != "unchanged" else None)

    def _check_parents(self, client: str, parts: list[bytes]) -> None:
        """Refuse up front a path whose existing folders include a link or a file."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate([client.encode()] + parts[:-1]):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    return
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        shown = paths.join(parts[: max(i, 1)])
                        raise RefusedError(f"{paths.join(parts)}: {shown} on the server is not a folder (a link or a file)") from None
                    raise
                os.close(fd)
                fd = nxt
        finally:
            os.close(fd)

    def _is_file(self, client: str, parts: list[bytes]) -> bool:
        try:
            fd = open_chain(self.root_fd, [client.encode()] + parts[:-1], create=False)
        except (OSError, FxError):
            return False
        try:
            return stat.S_ISREG(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False
        finally:
            os.close(fd)

    def _resume(self, base: int, fid: bytes, size: int, mtime_ns: int) -> PutReply | None:
        name = fid.hex().encode()
        try:
            meta = json.loads(read_file(base, name + b".meta"))
        except FileNotFoundError:
            return None
        if meta.get("size") != size or meta.get("mtime_ns") != mtime_ns:
            return None
        try:
            os.stat(name + b".data", dir_fd=base, follow_symlinks=False)
        except FileNotFoundError:
            # Committed just before a crash cut the cleanup short: start over.
            for ext in (b".meta", b".rec"):
                try:
                    os.unlink(name + ext, dir_fd=base)
                except FileNotFoundError:
                    pass
            return None
        chunk = meta["chunk"]
        have = layout.parse_record(read_file(base, name + b".rec"), layout.chunk_count(size, chunk))
        return PutReply(fid, chunk, "resume", have)

    def _create_staging(self, base: int, fid: bytes, meta: dict) -> None:
        name = fid.hex().encode()
        data_fd = os.open(name + b".data", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base)
        try:
            if meta["size"] and self.preallocate:
                os.posix_fallocate(data_fd, 0, meta["size"])
        except OSError as exc:
            os.close(data_fd)
            os.unlink(name + b".data", dir_fd=base)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise space_error(meta["size"], self.free_bytes()) from None
            raise
        os.close(data_fd)
        os.close(os.open(name + b".rec", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base))
        # The meta file appears last and atomically: its presence says the
        # staging is complete enough to resume.
        tmp = name + b".meta.tmp"
        meta_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base)
        try:
            os.write(meta_fd, json.dumps(meta).encode())
            os.fsync(meta_fd)
        finally:
            os.close(meta_fd)
        os.rename(tmp, name + b".meta", src_dir_fd=base, dst_dir_fd=base)
        os.fsync(base)

    def discard(self, client: str, fid: bytes) -> None:
        base = self.staging_fd(client, create=False)
        try:
            for ext in (b".meta", b".rec", b".data"):
                try:
                    os.unlink(fid.hex().encode() + ext, dir_fd=base)
                except FileNotFoundError:
                    pass
        finally:
            os.close(base)

    # --------------------------------------------------------------- commit

    def commit(self, client: str, fid: bytes, digest: bytes, sha256: bytes | None) -> Stored:
        try:
            base = self.staging_fd(client, create=False)
        except (OSError, FxError):
            raise RefusedError(f"unknown transfer {fid.hex()}") from None
        try:
            return self._commit(base, client, fid, digest, sha256)
        finally:
            os.close(base)

    def _commit(self, base: int, client: str, fid: bytes, digest: bytes, sha256: bytes | None) -> Stored:
        name = fid.hex().encode()
        try:
            meta = json.loads(read_file(base, name + b".meta"))
        except FileNotFoundError:
            raise RefusedError(f"unknown transfer {fid.hex()}") from None
        size, chunk, path = meta["size"], meta["chunk"], meta["path"]
        count = layout.chunk_count(size, chunk)
        have = layout.parse_record(read_file(base, name + b".rec"), count)
        if len(have) != count:
            raise RefusedError(
                f"{path}: {count - len(have)} of {count} chunks are missing on the server; send again to resume"
            )
        if layout.file_digest(size, chunk, [have[i] for i in range(count)]) != digest:
            self.discard(client, fid)
            raise VerifyError(f"{path}: the server's copy does not match the sent file; nothing was stored")
        parts = paths.split(path)
        data_fd = os.open(name + b".data", os.O_RDWR | os.O_NOFOLLOW, dir_fd=base)
        try:
            # Never setuid, setgid or sticky on the server.
            os.fchmod(data_fd, (meta["mode"] & 0o777) | 0o400)  # the manifest keeps the mode as sent
            os.utime(data_fd, ns=(meta["mtime_ns"], meta["mtime_ns"]))
            os.fsync(data_fd)
        finally:
            os.close(data_fd)
        parent = open_chain(self.root_fd, [client.encode()] + parts[:-1], create=True)
        try:
            with self._manifest() as db:
                version = self._keep_old(db, parent, client, parts, digest)
                if version == "unchanged":
                    self._take_same(db, base, name + b".data", parent, client, parts, meta["mode"], meta["mtime_ns"])
                    os.fsync(parent)
                    db.commit()
                    self.discard(client, fid)
                    return Stored(path, "unchanged", None)
                os.rename(name + b".data", parts[-1], src_dir_fd=base, dst_dir_fd=parent)
                os.fsync(parent)
                self._record(db, client, b"/".join(parts), meta, digest, sha256)
                db.commit()
        finally:
            os.close(parent)
        for ext in (b".meta", b".rec"):
            os.unlink(name + ext, dir_fd=base)
        return Stored(path, "stored", version)

    def _keep_old(self, db: sqlite3.Connection, parent: int, client: str, parts: list[bytes],
                  digest: bytes) -> str | None:
        """Hard-link whatever is at the target into versions/ before it is replaced."""
        # Most targets are new: access() says so without the cost of an exception.
        if not os.access(parts[-1], os.F_OK, dir_fd=parent, follow_symlinks=False):
            return None
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            raise RefusedError(f"{paths.join(parts)}: a folder is stored at that path")
        row = db.execute("SELECT size, mtime_ns, digest FROM files WHERE client=? AND path=?",
                         (client, b"/".join(parts))).fetchone()  # before it is replaced
        if row and row[2] == digest and stat.S_ISREG(st.st_mode) and st.st_size == row[0]:
            return "unchanged"
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        keep = (parts[-1][: 255 - len(stamp) - 1] + b"~" + stamp.encode())
        raw = b"/".join(parts)
        vdir = open_chain(self.state_fd, [b"versions", client.encode()] + parts[:-1], create=True)
        try:
            os.link(parts[-1], keep, src_dir_fd=parent, dst_dir_fd=vdir, follow_symlinks=False)
            os.fsync(vdir)
            old = db.execute("SELECT digest, sha256, chunk, mtime_ns, mode FROM files WHERE client=? AND path=?",
                             (client, raw)).fetchone() or (None, None, None, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
            db.execute(
                "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?)",
                (client, raw, os.fsdecode(keep), st.st_size, old[0], old[1], now_ns(), old[2], old[3], old[4]),
            )
            self._prune_versions(db, vdir, client, raw)
        finally:
            os.close(vdir)
        return os.fsdecode(keep)

    def _prune_versions(self, db: sqlite3.Connection, vdir: int, client: str, raw: bytes) -> None:
        rows = db.execute(
            "SELECT rowid, version FROM versions WHERE client=? AND path=? ORDER BY replaced_ns DESC",
            (client, raw),
        ).fetchall()
        for rowid, version in rows[max(1, self.policy.keep_versions):]:
            try:
                os.unlink(os.fsencode(version), dir_fd=vdir)
            except FileNotFoundError:
                pass
            db.execute("DELETE FROM versions WHERE rowid=?", (rowid,))

    @staticmethod
    def _take_same(db: sqlite3.Connection, src_dir: int, src: bytes, parent: int, client: str, parts: list[bytes],
                   mode: int, mtime_ns: int) -> None:
        """The same content as recorded, sent again (new time or mode, or asked
        by --checksum) and verified on its way in: the new copy, which has its
        time and mode, takes the stored one's place, so sending a file again
        repairs a stored copy that rotted on disk (`check` reports those).  No
        older version is kept: the content is the same.  The caller syncs the
        folder and commits."""
        os.rename(src, parts[-1], src_dir_fd=src_dir, dst_dir_fd=parent)
        db.execute("UPDATE files SET mtime_ns=?, mode=? WHERE client=? AND path=?",
                   (mtime_ns, mode, client, b"/".join(parts)))

    @staticmethod
    def _record(db: sqlite3.Connection, client: str, raw: bytes, meta: dict, digest: bytes,
                sha256: bytes | None) -> None:
        """Into the caller's transaction; the caller commits."""
        db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,'file',NULL)",
            (client, raw, meta["size"], meta["mtime_ns"], meta["mode"], meta["chunk"], digest, sha256, now_ns()),
        )

