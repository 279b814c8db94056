"""Into place: a verified transfer renamed to its path, the copy it replaces
kept as an older version, and folders and links.

    ROOT/<client>/<path as sent>                        committed files, nothing else
    ROOT/.fastxfer/versions/<client>/<path>~<UTC time>  replaced copies

A file appears at its path only by rename after its hash list is verified
and it is fsynced, so a reader of the backup never sees a half-written
file; a replaced file is first hard-linked into versions/, so no update
destroys the only copy.  Every folder below a client's is opened with
O_NOFOLLOW from its parent's descriptor (localfs.open_chain), so no symlink
can lead a write outside the client's folder.
"""

from __future__ import annotations

import datetime
import errno
import os
import sqlite3
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastxfer.errors import FxError, RefusedError, VerifyError
from fastxfer.localfs import DIR_FLAGS, open_chain
from fastxfer.protocol import layout, paths
from fastxfer.store import manifest
from fastxfer.store.catalog import held_at
from fastxfer.store.diskio import now_ns, unlink_quietly
from fastxfer.store.staging import DATA

if TYPE_CHECKING:
    from fastxfer.store.staging import Staging


@dataclass(frozen=True)
class Stored:
    path: str
    status: str  # "stored" or "unchanged"
    version: str | None  # name of the older version kept, if any


class Versions:
    """Older copies: what is at a path is kept before it is replaced, as long as a
    kept snapshot holds it (forget --prune frees the others)."""

    def __init__(self, state_fd: int) -> None:
        self.state_fd = state_fd

    def keep_old(self, db: sqlite3.Connection, parent: int, client: str, parts: list[bytes],
                 digest: bytes) -> str | None:
        """Hard-link whatever is at the target into versions/ before it is replaced:
        the version's name, None if nothing is there, "unchanged" if it holds *digest*."""
        # Most targets are new: access() says so without the cost of an exception.
        if not os.access(parts[-1], os.F_OK, dir_fd=parent, follow_symlinks=False):
            return None
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            # A folder turned file or link: the folder leaves the view, its files kept.
            self.set_aside(db, parent, client, parts)
            return None
        raw = b"/".join(parts)
        row = manifest.replaced(db, client, raw)  # before it is replaced
        if row and row[1] == digest and stat.S_ISREG(st.st_mode) and st.st_size == row[0]:
            return "unchanged"
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        keep = (parts[-1][: 255 - len(stamp) - 1] + b"~" + stamp.encode())
        vdir = open_chain(self.state_fd, [b"versions", client.encode()] + parts[:-1], create=True)
        try:
            os.link(parts[-1], keep, src_dir_fd=parent, dst_dir_fd=vdir, follow_symlinks=False)
            os.fsync(vdir)
            old = row[1:] if row else (None, None, None, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
            manifest.add_version(db, client, raw, os.fsdecode(keep), st.st_size, old, now_ns())
        finally:
            os.close(vdir)
        return os.fsdecode(keep)

    def set_aside(self, db: sqlite3.Connection, parent: int, client: str, parts: list[bytes]) -> None:
        """Whatever is at *parts* leaves the current view: a file is first kept
        as an older version (snapshots still refer to it), a folder goes with
        everything in it, a link or anything else is removed.  The caller commits."""
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            manifest.drop_record(db, client, b"/".join(parts))
            return
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            try:
                for child in sorted(map(os.fsencode, os.listdir(fd))):
                    self.set_aside(db, fd, client, parts + [child])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent)
        else:
            if stat.S_ISREG(st.st_mode):
                self.keep_old(db, parent, client, parts, b"")
            os.unlink(name, dir_fd=parent)
        manifest.drop_record(db, client, b"/".join(parts))

    @staticmethod
    def take_same(db: sqlite3.Connection, src_dir: int, src: bytes, parent: int, client: str, parts: list[bytes],
                  mode: int, mtime_ns: int) -> None:
        """The same content as recorded, sent again (new time or mode, or asked
        by --checksum) and verified on its way in: the new copy, which has its
        time and mode, takes the stored one's place, so sending a file again
        repairs a stored copy that rotted on disk (`check` reports those).  No
        older version is kept: the content is the same.  The caller syncs the
        folder and commits."""
        os.rename(src, parts[-1], src_dir_fd=src_dir, dst_dir_fd=parent)
        manifest.retouch(db, client, b"/".join(parts), mtime_ns, mode)


class Folders:
    """A client's folders and links, and the checks that keep writes inside its folder."""

    def __init__(self, root_fd: int, db: manifest.Manifest, versions: Versions) -> None:
        self.root_fd, self.manifest, self.versions = root_fd, db, versions

    def check_parents(self, client: str, parts: list[bytes], clear: bool = True, folder: bool = False) -> None:
        """Make way for a path (a *folder* itself too) whose existing folders
        include a link or a file: a path that changed kind at the source
        changes kind here, the file or link in the way kept as an older
        version (with *clear* False, refuse)."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate([client.encode()] + (parts if folder else parts[:-1])):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or i == 0:
                        raise
                    if not clear:
                        shown = paths.join(parts[:i])
                        raise RefusedError(f"{paths.join(parts)}: {shown} on the server is not a folder "
                                           f"(a link or a file)") from None
                    with self.manifest.connect() as db:
                        self.versions.set_aside(db, fd, client, parts[:i])
                        os.fsync(fd)
                        db.commit()
                    return
                os.close(fd)
                fd = nxt
        finally:
            os.close(fd)

    def is_file(self, client: str, parts: list[bytes]) -> bool:
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

    def make_dir(self, client: str, path: str, mtime_ns: int | None = None, mode: int | None = None) -> str:
        """Create the folder (and its parents); its mode and time come with finish_dirs.
        "new" if it was not there, "unchanged" if it was, recorded with this time and
        mode, else "stored"."""
        parts = paths.split(path)
        self.check_parents(client, parts, folder=True)
        try:
            os.close(open_chain(self.root_fd, [client.encode()] + parts, create=False))
        except (OSError, FxError):
            os.close(open_chain(self.root_fd, [client.encode()] + parts, create=True))
            return "new"
        if mtime_ns is not None and mode is not None:
            with self.manifest.connect() as db:
                if manifest.dir_record(db, client, b"/".join(parts)) == (mtime_ns, mode & 0o777):
                    return "unchanged"
        return "stored"

    def finish_dirs(self, client: str, items: list[tuple[str, int, int]]) -> None:
        """Mode and time of folders, set once everything inside them is in place,
        and recorded in the manifest so that a restore can set them too."""
        with self.manifest.connect() as db:
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
                manifest.record_dir(db, client, b"/".join(parts), mtime_ns, mode & 0o777, now_ns())
            db.commit()

    def make_link(self, client: str, path: str, target: str, mtime_ns: int) -> Stored:
        """A symlink stored as a link: created aside, renamed into place."""
        parts = paths.split(path)
        link_target = paths.encode(target, f"{path}: link target")
        if not link_target or b"\x00" in link_target or len(link_target) > paths.MAX_TOTAL:
            raise RefusedError(f"{path}: link target refused")
        self.check_parents(client, parts)
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
                with self.manifest.connect() as db:
                    version = self.versions.keep_old(db, parent, client, parts, b"")
                    os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
                    os.fsync(parent)
                    manifest.record_link(db, client, b"/".join(parts), mtime_ns, now_ns(), link_target)
                    db.commit()
            except BaseException:
                unlink_quietly(tmp, parent)
                raise
        finally:
            os.close(parent)
        return Stored(path, "stored", version if version != "unchanged" else None)


class Commit:
    """A received transfer, verified against its hash list and renamed into place."""

    def __init__(self, root_fd: int, db: manifest.Manifest, staging: Staging, versions: Versions) -> None:
        self.root_fd, self.manifest, self.staging, self.versions = root_fd, db, staging, versions

    def commit(self, client: str, fid: bytes, digest: bytes, sha256: bytes | None, same: bool = False,
               snap: int = 0) -> Stored:
        try:
            base = self.staging.staging_fd(client, create=False)
        except (OSError, FxError):
            raise RefusedError(f"unknown transfer {fid.hex()}") from None
        try:
            return self._commit(base, client, fid, digest, sha256, same, snap)
        finally:
            os.close(base)

    def _link_same(self, base: int, data: bytes, client: str, digest: bytes, size: int, path: str) -> bytes:
        """A new name in the staging folder for the content this client already
        has stored with *digest* (verified when it was committed), to be put in
        place instead of the staging's data: a copy is stored once, and nothing
        of it was sent.  Not the data's own name, which a stream could open
        and write through into the stored copy."""
        with self.manifest.connect() as db:
            found = [(p, v) for p, v, _s, _c in manifest.holders(db, client, digest, size=size)]
        for held, version in found:
            in_state, chain, name = held_at(client, held.split(b"/"), version)
            try:
                src = open_chain(self.versions.state_fd if in_state else self.root_fd, chain, create=False)
            except (OSError, FxError):
                continue
            try:
                st = os.stat(name, dir_fd=src, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                    continue
                same = data + b".same"
                unlink_quietly(same, base)
                os.link(name, same, src_dir_fd=src, dst_dir_fd=base, follow_symlinks=False)
                return same
            except FileNotFoundError:
                continue
            finally:
                os.close(src)
        raise RefusedError(f"{path}: the copy it was sent as is no longer held on the server; send it again")

    def _commit(self, base: int, client: str, fid: bytes, digest: bytes, sha256: bytes | None,
                same: bool = False, snap: int = 0) -> Stored:
        meta, have, fence = self.staging.finished(base, fid)
        try:
            return self._commit_fenced(base, client, fid, digest, sha256, same, snap, meta, have)
        finally:
            os.close(fence)

    def _commit_fenced(self, base: int, client: str, fid: bytes, digest: bytes, sha256: bytes | None,
                       same: bool, snap: int, meta: dict, have: dict[int, bytes]) -> Stored:
        size, chunk, path = meta["size"], meta["chunk"], meta["path"]
        count = layout.chunk_count(size, chunk)
        data = fid.hex().encode() + DATA
        if same:
            data = self._link_same(base, data, client, digest, size, path)
        elif len(have) != count:
            raise RefusedError(
                f"{path}: {count - len(have)} of {count} chunks are missing on the server; send again to resume"
            )
        elif layout.file_digest(size, chunk, [have[i] for i in range(count)]) != digest:
            self.staging.discard(client, fid)
            raise VerifyError(f"{path}: the server's copy does not match the sent file; nothing was stored")
        parts = paths.split(path)
        if not same:  # a shared inode keeps its first name's mode and time: the manifest holds each name's
            data_fd = os.open(data, os.O_RDWR | os.O_NOFOLLOW, dir_fd=base)
            try:
                # Never setuid, setgid or sticky on the server.
                os.fchmod(data_fd, (meta["mode"] & 0o777) | 0o400)  # the manifest keeps the mode as sent
                os.utime(data_fd, ns=(meta["mtime_ns"], meta["mtime_ns"]))
                os.fsync(data_fd)
            finally:
                os.close(data_fd)
        parent = open_chain(self.root_fd, [client.encode()] + parts[:-1], create=True)
        try:
            with self.manifest.connect() as db:
                version = self.versions.keep_old(db, parent, client, parts, digest)
                if version == "unchanged":
                    self.versions.take_same(db, base, data, parent, client, parts, meta["mode"], meta["mtime_ns"])
                    os.fsync(parent)
                    join_snapshot(db, client, snap, b"/".join(parts), stored=False)
                    db.commit()
                    self.staging.discard(client, fid)
                    return Stored(path, "unchanged", None)
                os.rename(data, parts[-1], src_dir_fd=base, dst_dir_fd=parent)
                os.fsync(parent)
                manifest.record_file(db, client, b"/".join(parts), meta, digest, sha256, now_ns())
                join_snapshot(db, client, snap, b"/".join(parts), stored=True)
                db.commit()
        finally:
            os.close(parent)
        if same:
            self.staging.discard(client, fid)
        else:
            self.staging.forget(base, fid)
        return Stored(path, "stored", version)


def join_snapshot(db: sqlite3.Connection, client: str, snap: int, raw: bytes, stored: bool) -> None:
    """The file just committed at *raw* joins snapshot *snap* (if not 0) with the content its record holds."""
    if snap:
        manifest.join_snapshot(db, client, snap, [raw], int(stored))
