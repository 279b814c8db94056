"""Many small files at once: which need sending (probes), and storing them a
bundle at a time.

A bundle's files are staged, made durable by one filesystem sync, renamed
into place one by one (each appears whole or not at all), their folders
fsynced once each, and recorded in one manifest transaction.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from typing import TYPE_CHECKING

from fastxfer.protocol import wire
from fastxfer.protocol import layout
from fastxfer.protocol import paths
from fastxfer.localfs import open_chain, sync_filesystem
from fastxfer.store import manifest
from fastxfer.store.diskio import free_bytes, now_ns, space_error, storage_failure, unlink_quietly, write_all
from fastxfer.errors import FxError, RefusedError, wire_code
from fastxfer.protocol.units import human

if TYPE_CHECKING:
    from fastxfer.store.catalog import Catalog
    from fastxfer.store.commit import Folders, Versions
    from fastxfer.store.staging import Staging

EMPTY_SHA256 = hashlib.sha256(b"").digest()
Result = tuple[int, int, str]  # (0 stored, 1 unchanged or 2 failed; wire code number; message)
Staged = tuple[int, list[bytes], int, bytes, wire.BundleEntry]  # (index, parts, folder fd, staged name, entry)
NO_DATA = memoryview(b"")  # a staged entry keeps no view into the frame it came in


def failed(exc: FxError | OSError) -> Result:
    refusal = exc if isinstance(exc, FxError) else storage_failure(exc)
    return (2, wire_code(refusal).number, refusal.message)


class Bundles:
    """Probes and bundles of many small files."""

    def __init__(self, root_fd: int, db: manifest.Manifest, staging: Staging, folders: Folders,
                 versions: Versions, catalog: Catalog, umask: int) -> None:
        self.root_fd, self.manifest, self.staging = root_fd, db, staging
        self.folders, self.versions, self.catalog = folders, versions, catalog
        self.umask = umask

    def probe_many(self, client: str, items: list[tuple[str, int, int, bytes | None]]) -> list[str | FxError]:
        """For many files (path, size, mtime_ns, sha256 or None): "unchanged", "send" or the
        refusal.  Folder by folder: each is opened once and closed before the next, and
        the manifest is asked only about the names in question."""
        out: list[str | FxError] = ["send"] * len(items)
        by_folder: dict[tuple[bytes, ...], list[tuple[int, list[bytes]]]] = {}
        for i, (path, _size, _mtime, _sha) in enumerate(items):
            try:
                parts = paths.split(path)
            except FxError as exc:
                out[i] = exc
                continue
            by_folder.setdefault(tuple(parts[:-1]), []).append((i, parts))
        with self.manifest.connect() as db:
            for key, members in by_folder.items():
                folder = self._probe_folder(client, members[0][1])
                if folder is None:  # nothing stored there yet: every file is sent
                    for i, _parts in members:
                        out[i] = "new"
                    continue
                if isinstance(folder, FxError):
                    for i, _parts in members:
                        out[i] = folder
                    continue
                try:
                    rows = manifest.file_sizes(db, client, [b"/".join(parts) for _i, parts in members])
                    for i, parts in members:
                        _path, size, mtime_ns, sha256 = items[i]
                        try:
                            out[i] = self._probe_one(client, parts, folder, rows.get(b"/".join(parts)),
                                                     size, mtime_ns, sha256)
                        except FxError as exc:
                            out[i] = exc
                finally:
                    os.close(folder)
        return out

    def _probe_folder(self, client: str, parts: list[bytes]) -> int | FxError | None:
        """The folder's descriptor, None if it does not exist yet, or why it can never hold the file."""
        try:
            self.folders.check_parents(client, parts, clear=False)
            return open_chain(self.root_fd, [client.encode(), *parts[:-1]], create=False)
        except FxError:
            return None  # a file or link where a folder will be: it makes way when the file is sent
        except FileNotFoundError:
            return None

    def _probe_one(self, client: str, parts: list[bytes], folder: int, row: tuple[int, int] | None,
                   size: int, mtime_ns: int, sha256: bytes | None) -> str:
        raw = b"/".join(parts)
        if not row:
            return "new"  # nothing recorded at the path (a client from before takes it as "send")
        if row[0] != size:
            return "send"
        try:
            if not stat.S_ISREG(os.stat(parts[-1], dir_fd=folder, follow_symlinks=False).st_mode):
                return "send"
        except OSError:
            return "send"
        if sha256 is None:
            return "unchanged" if row[1] == mtime_ns else "send"
        status, stored = self.catalog.verify_stored(client, raw)
        return "unchanged" if status == "ok" and stored == sha256 else "send"

    def stage_bundle(self, client: str, entries: list[wire.BundleEntry], snap: int = 0) -> StagedBundle:
        """Write a bundle's files aside (the caller may reuse the entries' buffer once
        this returns); finish() then stores them, close() releases what is left."""
        bundle = StagedBundle(self, client, snap, len(entries))
        needed, free = sum(e.size for e in entries), free_bytes(self.root_fd)
        refusal = space_error(needed, free, f"a bundle of {len(entries)} small files") if needed > free else None
        quota = self.staging.quota_of(client)
        if refusal is None and quota is not None:
            held = self.staging.held.of(client)
            if held + needed > quota:
                refusal = RefusedError(f"a bundle of {len(entries)} small files: over this client's quota: "
                                       f"{human(needed)} needed, {human(max(quota - held, 0))} left of {human(quota)}")
            else:
                self.staging.held.grew(client, needed)
        if refusal is not None:
            bundle.results = [failed(refusal)] * len(entries)
            return bundle
        try:
            bundle.base = self.staging.staging_fd(client, create=True)
            self._stage_all(bundle, entries)
        except BaseException:
            bundle.close()
            raise
        return bundle

    def _stage_all(self, bundle: StagedBundle, entries: list[wire.BundleEntry]) -> None:
        """Each entry written aside in the staging folder and its folder opened, into
        *bundle*; a failure into its results."""
        refused: dict[tuple[bytes, ...], FxError] = {}
        seen: set[bytes] = set()
        prefix = b"b-" + os.urandom(6).hex().encode() + b"-"
        parents, client = bundle.parents, bundle.client
        for i, e in enumerate(entries):
            try:
                if e.path in seen:  # the manifest is written once per bundle: one entry per path
                    raise RefusedError(f"{os.fsdecode(e.path)}: named twice in one bundle")
                seen.add(e.path)
                parts = paths.split_raw(e.path)
                key = tuple(parts[:-1])
                if key in refused:
                    raise refused[key]
                if key not in parents:
                    # Opening the folders first refuses a link or a file in the
                    # way before any byte is written, once per folder.
                    try:
                        self.folders.check_parents(client, parts)
                        parents[key] = open_chain(self.root_fd, [client.encode(), *key], create=True)
                    except FxError as exc:
                        refused[key] = exc
                        raise
                tmp = prefix + b"%d" % i
                self._stage_small(bundle.base, tmp, e)
                bundle.staged.append((i, parts, parents[key], tmp, e._replace(data=NO_DATA)))
            except (FxError, OSError) as exc:
                bundle.results[i] = failed(exc)

    def _stage_small(self, base: int, tmp: bytes, e: wire.BundleEntry) -> None:
        mode = (e.mode & 0o777) | 0o400  # the server must be able to read it back
        # Staging is private to the server: the file can be born with its final
        # mode, which saves a chmod whenever the umask leaves that mode alone.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=base)
        try:
            if os.pwrite(fd, e.data, 0) != e.size:  # short only in odd cases: finish it
                write_all(fd, e.data, 0)
            if mode & self.umask:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        except BaseException:
            os.close(fd)
            unlink_quietly(tmp, base)
            raise
        os.close(fd)

    def _place_small(self, db: sqlite3.Connection, base: int, parent: int, client: str, parts: list[bytes],
                     tmp: bytes, e: wire.BundleEntry, rows: list[tuple], walked: list[bytes],
                     stored_ns: int) -> Result:
        """Put one staged file in place; its manifest row into *rows* (if stored) and
        its path into *walked* (stored or unchanged: it joins the snapshot)."""
        chunk = layout.DEFAULT_CHUNK if e.size <= layout.DEFAULT_CHUNK else layout.choose_chunk(e.size)
        digest = layout.file_digest(e.size, chunk, (e.digest,) if e.size else ())
        if self.versions.keep_old(db, parent, client, parts, digest) == "unchanged":
            self.versions.take_same(db, base, tmp, parent, client, parts, e.mode, e.mtime_ns)
            walked.append(e.path)
            return (1, 0, "")
        os.rename(tmp, parts[-1], src_dir_fd=base, dst_dir_fd=parent)
        # One chunk: its SHA-256, computed here over what was written, is the file's.
        sha = e.digest if e.size else EMPTY_SHA256
        rows.append((client, e.path, e.size, e.mtime_ns, e.mode, chunk, digest, sha, stored_ns))
        walked.append(e.path)
        return (0, 0, "")


class StagedBundle:
    """A bundle's files written aside, not yet durable.  finish() makes them durable
    by one filesystem sync, renames each into place, fsyncs each folder once and
    records them in one manifest transaction, in which each file stored or found
    unchanged joins the open snapshot (if not 0).  close(), always called, removes
    what was not put in place and closes the folders."""

    def __init__(self, bundles: Bundles, client: str, snap: int, count: int) -> None:
        self.bundles, self.client, self.snap = bundles, client, snap
        self.base = -1
        self.parents: dict[tuple[bytes, ...], int] = {}
        self.staged: list[Staged] = []
        self.results: list[Result] = [(2, 1, "not processed")] * count

    def finish(self) -> list[tuple[int, int, str]]:
        """Per entry (0 stored | 1 unchanged | 2 failed, exit code, message)."""
        b = self.bundles
        if self.staged:
            sync_filesystem(self.base)
        rows: list[tuple] = []
        walked: list[bytes] = []
        stored_ns = now_ns()  # one transaction: one time for all
        with b.manifest.connect() as db:
            for i, parts, parent, tmp, e in self.staged:
                try:
                    self.results[i] = b._place_small(db, self.base, parent, self.client, parts, tmp, e, rows,
                                                     walked, stored_ns)
                except (FxError, OSError) as exc:
                    unlink_quietly(tmp, self.base)
                    self.results[i] = failed(exc)
            self.staged = []  # each put in place or removed
            for fd in self.parents.values():
                os.fsync(fd)
            manifest.record_files(db, rows)
            if self.snap:
                manifest.join_snapshot(db, self.client, self.snap, walked, len(rows))
            db.commit()
        return self.results

    def close(self) -> None:
        for _i, _parts, _parent, tmp, _e in self.staged:
            unlink_quietly(tmp, self.base)
        self.staged = []
        for fd in self.parents.values():
            os.close(fd)
        self.parents = {}
        if self.base >= 0:
            os.close(self.base)
            self.base = -1
