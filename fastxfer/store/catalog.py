"""What the server holds, as a client may see it: listings, versions,
chunks read back for a restore, digests re-checked at rest, receipt bodies."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Generator

from fastxfer.protocol import layout
from fastxfer.protocol import paths, snapshot
from fastxfer.localfs import open_chain
from fastxfer.errors import FxError, RefusedError
from fastxfer.store import manifest

# A re-hash a chunk at a time: yields the bytes of each chunk read, returns
# ("ok" | "changed" | "missing", the plain SHA-256 or None).
Rehash = Generator[int, None, tuple[str, bytes | None]]

LIST_PAGE = 2000  # entries in one listing answer
VERSIONS_MAX = 10000  # older copies in one version listing


class Catalog:
    """The read side of the store: the manifest, and files read back from disk."""

    def __init__(self, root_fd: int, state_fd: int, db: manifest.Manifest) -> None:
        self.root_fd, self.state_fd, self.manifest = root_fd, state_fd, db

    def listing(self, client: str, prefix: str, after: bytes | None) -> tuple[list[dict], bytes | None]:
        """Entries the manifest holds at or below *prefix*, a page at a time by path."""
        raw = b"/".join(paths.split(prefix.strip("/"))) if prefix.strip("/") else b""
        with self.manifest.connect() as db:
            rows = manifest.list_page(db, client, raw, after, LIST_PAGE + 1)
        more = len(rows) > LIST_PAGE
        rows = rows[:LIST_PAGE]
        return [listed(r) for r in rows], (rows[-1][0] if more else None)

    def version_listing(self, client: str, prefix: str) -> list[dict]:
        raw = b"/".join(paths.split(prefix.strip("/"))) if prefix.strip("/") else b""
        with self.manifest.connect() as db:
            rows = manifest.list_versions(db, client, raw, VERSIONS_MAX)
        return [{"path": os.fsdecode(r[0]), "version": r[1], "size": r[2],
                 "sha256": r[3].hex() if r[3] else None, "replaced_ns": r[4], "kind": "file",
                 "chunk": r[5], "digest": r[6].hex() if r[6] else None, "mtime_ns": r[7], "mode": r[8]}
                for r in rows]

    def read_chunk(self, client: str, path: str, size: int, mtime_ns: int, offset: int,
                   into: memoryview, folders: dict | None = None, holes: bool = False) -> bool:
        """Restore: bytes of a stored file, refused if it is not the one that was listed.

        "PATH\0VERSION" names an older copy kept in versions/.  With *folders*,
        the folder opened is kept there for the next reads of the same folder,
        one at a time (the caller closes what is left).  With *holes*, a span
        that lies wholly in a hole of the stored file is not read: True says so.
        """
        path, _, version = path.partition("\x00")
        if version.startswith("#"):  # content a snapshot refers to, wherever it is held
            path, version = self._locate(client, path, version, size)
        fd = self._open_listed(client, path, version, folders)
        try:
            # Size only: filesystems may round stored times, and any change of
            # content is caught by the client against the recorded digest.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                raise RefusedError(f"{path}: the server's copy is not the one it lists (replaced since, or changed "
                                   f"on its disk: `fastxfer check` there tells); get it again")
            if offset + len(into) > size:
                raise RefusedError(f"{path}: request beyond the end of the file")
            if holes and in_hole(fd, offset, len(into)):
                return True
            got = 0
            while got < len(into):
                n = os.preadv(fd, [into[got:]], offset + got)
                if n == 0:
                    raise RefusedError(f"{path}: the server's copy is not the one it lists (replaced since, or "
                                       f"changed on its disk: `fastxfer check` there tells); get it again")
                got += n
        except OSError as exc:  # this file only (a bad sector, say), not the whole stream
            raise RefusedError(f"{path}: cannot be read on the server ({exc.strerror})") from None
        finally:
            os.close(fd)
        return False

    def _open_listed(self, client: str, path: str, version: str, folders: dict | None) -> int:
        """The stored file *path* (or its older copy *version*) opened to read, or RefusedError."""
        parts = paths.split(path)
        if version and ("/" in version or "\x00" in version or not version.startswith(os.fsdecode(parts[-1][:200]))):
            raise RefusedError(f"{path}: no such version")
        in_state, base, name = held_at(client, parts, version)
        start = self.state_fd if in_state else self.root_fd
        key = (start, tuple(base))
        parent = folders.get(key) if folders is not None else None
        if parent is None:
            if folders:  # one folder at a time: a request naming thousands holds one descriptor
                for fd in folders.values():
                    os.close(fd)
                folders.clear()
            try:
                parent = open_chain(start, base, create=False)
            except (OSError, FxError):
                raise RefusedError(f"{path}: not stored on the server") from None
            if folders is not None:
                folders[key] = parent
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError:
            raise RefusedError(f"{path}: not stored on the server") from None
        finally:
            if folders is None:
                os.close(parent)
        return fd

    def _locate(self, client: str, path: str, ref: str, size: int) -> tuple[str, str]:
        digest = snapshot.ref_digest(ref)
        if digest is None:
            raise RefusedError(f"{path}: no such content")
        with self.manifest.connect() as db:
            found = [(p, v) for p, v, _s, _c in manifest.holders(db, client, digest, os.fsencode(path), size)]
        if not found:
            raise RefusedError(f"{path}: its content is no longer held on the server")
        held, version = found[0]
        return os.fsdecode(held), version or ""

    # ------------------------------------------------------- verify at rest

    def verify_stored(self, client: str, raw: bytes) -> tuple[str, bytes | None]:
        """Re-hash a stored file against its record: ("ok"|"changed"|"missing", SHA-256)."""
        return drain(self.rehash_stored(client, raw))

    def rehash_stored(self, client: str, raw: bytes) -> Rehash:
        """verify_stored a chunk at a time: yields the bytes of each chunk read,
        returns the verdict, so a reply can stop in the middle of a file and the
        next one go on with it.

        One read, two hashes: the chunk hash list that was verified at backup,
        and the plain SHA-256 that sha256sum prints, recorded once it is known
        to belong to the verified bytes.
        """
        with self.manifest.connect() as db:
            row = manifest.check_fields(db, client, raw)
        if row is None:
            return "missing", None
        size, chunk, digest, known = row
        fd = self._open_held(client, raw, None)
        if fd is None:
            return "missing", None
        try:
            status, sha = yield from rehash_at_rest(fd, size, chunk, digest)
        finally:
            os.close(fd)
        if sha is None:
            return status, None
        if known != sha:
            with self.manifest.connect() as db:
                # Only onto the row of this content: the path may hold a newer
                # file by now, when the hashing went on over several replies.
                manifest.set_sha256(db, client, raw, sha, digest)
                db.commit()
        return "ok", sha

    def verify_content(self, client: str, digest: bytes, raw: bytes | None = None) -> tuple[str, bytes | None]:
        """Re-hash the content a snapshot names by *digest*, wherever it is held
        (a file of the current view or an older copy): ("ok", its SHA-256), or
        "changed" (held, but no copy hashes to it) or "missing" (not held)."""
        return drain(self.rehash_content(client, digest, raw))

    def rehash_content(self, client: str, digest: bytes, raw: bytes | None = None) -> Rehash:
        """verify_content a chunk at a time, as rehash_stored."""
        with self.manifest.connect() as db:
            held = manifest.holders(db, client, digest, raw)
        status = "missing"
        for raw, version, size, chunk in held:
            fd = self._open_held(client, raw, version)
            if fd is None:
                continue
            try:
                status, sha = yield from rehash_at_rest(fd, size, chunk, digest)
            finally:
                os.close(fd)
            if status == "ok":
                return status, sha
        return status, None

    def _open_held(self, client: str, raw: bytes, version: str | None) -> int | None:
        """A descriptor of the stored file at *raw* (or of its older copy *version*), or None."""
        in_state, chain, name = held_at(client, raw.split(b"/"), version)
        try:
            parent = open_chain(self.state_fd if in_state else self.root_fd, chain, create=False)
            try:
                return os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
            finally:
                os.close(parent)
        except (OSError, FxError):
            return None

    def receipt_body(self, client: str, raw: bytes, server_fp: bytes, snap: int = 0) -> dict | None:
        """What a receipt states about a stored file, its SHA-256 re-checked on disk;
        *snap*: the snapshot it names, if that snapshot holds this very content there."""
        status, sha = self.verify_stored(client, raw)
        if status != "ok":
            return None
        with self.manifest.connect() as db:
            size, digest, stored_ns = manifest.receipt_fields(db, client, raw)
            held = snap and manifest.entry_digest(db, client, snap, raw) == bytes(digest)
        body = {"v": 1, "client": client, "path": os.fsdecode(raw), "size": size,
                "sha256": sha.hex() if sha else None, "digest": digest.hex(), "stored_ns": stored_ns,
                # The copy at the path; older copies are named by ls --versions.
                "version": "current", "server": server_fp.hex()}
        if held:
            body["snapshot"] = snap
        return body

    def stored_files(self, client: str | None) -> list[tuple[str, bytes, bytes]]:
        with self.manifest.connect() as db:
            return manifest.stored_files(db, client)

    def stores_under(self, client: str, tops: list[bytes]) -> bool:
        """Whether the manifest records a file of *client* at or below any of *tops*."""
        with self.manifest.connect() as db:
            return any(manifest.any_file_under(db, client, top) for top in tops)


def listed(r: tuple) -> dict:
    """A row of the current view as a listing shows it.  A hard-linked file's
    later name is a file that says which name it shares, and whose content a
    request names by digest (only its first name is held under ROOT)."""
    out = {"path": os.fsdecode(r[0]), "kind": r[1], "size": r[2], "mtime_ns": r[3], "mode": r[4],
           "sha256": r[5].hex() if r[5] else None,
           "target": os.fsdecode(r[6]) if r[6] is not None else None, "stored_ns": r[7],
           "chunk": r[8], "digest": r[9].hex() if r[9] else None,
           "uid": r[10], "gid": r[11], "user": r[12], "group": r[13], "rdev": r[14] or 0}
    if r[1] == "hardlink":
        out.update(kind="file", hardlink=out["target"], target=None)
        if r[9]:
            out["ref"] = "#" + r[9].hex()
    return out


def held_at(client: str, parts: list[bytes], version: str | None) -> tuple[bool, list[bytes], bytes]:
    """Where a stored copy lives: (below the state folder?, the folders to it, its name).
    The current view's file is ROOT/<client>/<path>; an older copy is
    ROOT/.fastxfer/versions/<client>/<folders of path>/<version>."""
    if version:
        return True, [b"versions", client.encode()] + parts[:-1], os.fsencode(version)
    return False, [client.encode()] + parts[:-1], parts[-1]


def rehash_at_rest(fd: int, size: int, chunk: int, digest: bytes) -> Rehash:
    """One read of an open stored file, two hashes: its chunk hash list against
    *digest* (what was verified at backup), and the plain SHA-256 that sha256sum
    prints.  Yields the bytes of each chunk read; returns ("ok", SHA-256) or
    ("changed", None)."""
    whole, digests = hashlib.sha256(), []
    if os.fstat(fd).st_size != size:
        return "changed", None
    for index in range(layout.chunk_count(size, chunk)):
        offset, length = layout.chunk_span(size, chunk, index)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            return "changed", None
        whole.update(data)
        digests.append(hashlib.sha256(data).digest())
        yield length
    if layout.file_digest(size, chunk, digests) != digest:
        return "changed", None
    return "ok", whole.digest()


def drain(rehash: Rehash) -> tuple[str, bytes | None]:
    """A re-hash run to its end: its verdict."""
    while True:
        try:
            next(rehash)
        except StopIteration as done:
            return done.value


def in_hole(fd: int, offset: int, length: int) -> bool:
    """Whether [offset, offset + length) of the file holds no data (SEEK_DATA finds none there)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as exc:
        return exc.errno == errno.ENXIO  # nothing but a hole to the end; any other error: read it
