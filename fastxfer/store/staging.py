"""Files being received: a staging file per transfer, its chunk record, and
resume.

    ROOT/.fastxfer/staging/<client>/<fid>.data   bytes being received
    ROOT/.fastxfer/staging/<client>/<fid>.meta   JSON: path, size, mtime, mode, chunk
    ROOT/.fastxfer/staging/<client>/<fid>.rec    chunk record (protocol/layout.py)

The meta file appears last and atomically, so its presence says a staging
is complete enough to resume; a chunk counts as received only once its
entry is in the record, written after the data it vouches for is durable.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fastxfer.errors import BusyError, FxError, ProtocolError, RefusedError
from fastxfer.localfs import open_chain
from fastxfer.protocol import layout, limits, paths
from fastxfer.protocol.units import human
from fastxfer.store import manifest
from fastxfer.store.budget import Budget, QuotaOf, StoredBytes, no_quota
from fastxfer.store.diskio import (disk_refusal, free_bytes, read_file, reserve_space, space_error, unlink_quietly,
                                   write_all)

if TYPE_CHECKING:
    from fastxfer.store.commit import Folders
    from fastxfer.store.facade import Policy

DATA, META, REC = b".data", b".meta", b".rec"
# Every name a staging may have: what is left once a transfer goes.
STAGING_EXTS = (META, REC, DATA, DATA + b".same", META + b".tmp")


def leads_to(base: int, data: bytes, fd: int) -> bool:
    """Whether the name *data* in the folder *base* is still the file open as *fd*
    (a commit renames it away; a discard and a new put make it another file)."""
    try:
        return os.stat(data, dir_fd=base, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def remove_staging(base: int, name: bytes) -> None:
    """Every file of the staging *name* (a transfer id in hex) in the folder *base*."""
    for ext in STAGING_EXTS:
        unlink_quietly(name + ext, base)


@dataclass(frozen=True)
class PutReply:
    fid: bytes
    chunk: int
    status: str  # "new", "resume" or "unchanged"
    have: dict[int, bytes]
    same: list[tuple[bytes, int]] = field(default_factory=list)  # (digest, chunk) it may be a copy of


def file_id(secret: bytes, client: str, path: bytes, size: int, mtime_ns: int) -> bytes:
    """Same file, same sender -> same staging, which is what makes resume find it.

    Keyed with a secret that never leaves the server, because the id travels
    in clear stream headers: an eavesdropper must not be able to confirm a
    guessed name.
    """
    msg = b"\x00".join([client.encode(), path, b"%d" % size, b"%d" % mtime_ns])
    return hmac.new(secret, msg, hashlib.sha256).digest()[:16]


def load_secret(state_fd: int) -> bytes:
    """A random key kept with the state, made once, the same for every worker."""
    try:
        fd = os.open("fid.key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state_fd)
    except FileNotFoundError:
        tmp = f"fid.key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=state_fd)
        try:
            os.write(fd, os.urandom(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, "fid.key", src_dir_fd=state_fd, dst_dir_fd=state_fd)
        except FileExistsError:
            pass  # another process made it first: use theirs
        os.unlink(tmp, dir_fd=state_fd)
        fd = os.open("fid.key", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state_fd)
    try:
        secret = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(secret) != 32:
        raise OSError(errno.EINVAL, "damaged fid.key in the state folder")
    return secret


class StagingFolders(Protocol):
    """What a StagingFile needs of its owner: the client's staging folder."""

    preallocate: bool  # whether space is reserved ahead of the writes

    def staging_fd(self, client: str, create: bool) -> int: ...


RESERVE_STEP = 64 << 20  # space a file being received reserves at a time
DIRECT_ALIGN = 4096  # what O_DIRECT asks of lengths, offsets and buffers on common disks


class StagingFile:
    """One file being received, as a stream worker holds it."""

    def __init__(self, store: StagingFolders, client: str, fid: bytes) -> None:
        self.fid = fid
        try:  # no staging folder yet: no transfer was ever opened
            base = store.staging_fd(client, create=False)
        except OSError:
            raise ProtocolError(f"unknown transfer {fid.hex()}") from None
        self.data_fd = self.rec_fd = self.direct_fd = -1
        try:
            name = fid.hex().encode()
            meta = json.loads(read_file(base, name + META))
            self.size: int = meta["size"]
            self.chunk: int = meta["chunk"]
            self.count = layout.chunk_count(self.size, self.chunk)
            self.data_fd = os.open(name + DATA, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=base)
            self._fence(base, name + DATA)
            self.rec_fd = os.open(name + REC, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW, dir_fd=base)
        except (OSError, ValueError, KeyError):
            self._close_fds()
            raise ProtocolError(f"unknown transfer {fid.hex()}") from None
        except FxError:
            self._close_fds()
            raise
        finally:
            os.close(base)
        self.pending: list[bytes] = []
        self.unrecorded = False  # bytes written that no durable record entry vouches for yet
        # Space is reserved ahead of the writes, in steps (a file of one extent
        # per step instead of whatever the writes leave); never in a sparse file.
        self.reserve = store.preallocate and not meta.get("sparse", False)
        self.reserved = (0, 0)  # the span this object reserved last
        self._where = (store, client, name)
        self.direct_fd = -2  # -2 not opened yet, -1 not possible here

    def _fence(self, base: int, data: bytes) -> None:
        """The commit fence, writer's side: a shared lock on the data for as long
        as this file is open, which the commit's exclusive lock waits out, so
        no byte lands in a file after (or while) its chunks are checked."""
        try:
            fcntl.flock(self.data_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProtocolError("chunk for a transfer that is being committed") from None
        if not leads_to(base, data, self.data_fd):  # opened just before a commit renamed it away
            raise OSError(errno.ENOENT, "committed meanwhile")

    def _direct(self) -> int:
        """A second descriptor, O_DIRECT: a chunk goes from the stream's buffer to
        the disk without a copy into the page cache and its writeback later
        (measured on ext4: 2 GiB in 3.07 s this way, 3.37 s through the page
        cache, server CPU 1.17 against 1.62 s/GiB).  tmpfs and some other
        filesystems refuse it: those writes go through data_fd."""
        if self.direct_fd == -2:
            store, client, name = self._where
            self.direct_fd = -1
            try:
                base = store.staging_fd(client, create=False)
                try:
                    fd = os.open(name + DATA, os.O_WRONLY | os.O_NOFOLLOW | os.O_DIRECT, dir_fd=base)
                    if leads_to(base, name + DATA, self.data_fd):  # the file the fence holds
                        self.direct_fd = fd
                    else:
                        os.close(fd)
                finally:
                    os.close(base)
            except (OSError, AttributeError, FxError):
                pass
        return self.direct_fd

    def _reserve(self, offset: int) -> None:
        span = min(RESERVE_STEP, self.size - offset)
        if not reserve_space(self.data_fd, offset, span):
            self.reserve = False  # the filesystem cannot: the writes allocate
        self.reserved = (offset, offset + span)

    def _write(self, data: memoryview, offset: int) -> None:
        # O_DIRECT takes whole pages only (the stream's buffers are page-aligned mappings).
        if not (len(data) | offset) & (DIRECT_ALIGN - 1) and self._direct() >= 0:
            try:
                write_all(self.direct_fd, data, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self.direct_fd)
                self.direct_fd = -1  # not for this file after all: through the page cache
        write_all(self.data_fd, data, offset)

    def write(self, offset: int, data: memoryview, digest: bytes) -> None:
        index, rem = divmod(offset, self.chunk)
        if rem or index >= self.count or layout.chunk_span(self.size, self.chunk, index)[1] != len(data):
            raise ProtocolError("chunk does not fit the file's layout")
        self.unrecorded = True
        try:
            if self.reserve and not self.reserved[0] <= offset < self.reserved[1]:
                self._reserve(offset)
            self._write(data, offset)
        except OSError as exc:
            raise (disk_refusal(exc) or exc) from None
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
            raise (disk_refusal(exc) or exc) from None
        self.pending.clear()
        self.unrecorded = False

    def close(self) -> None:
        """Bytes written and never recorded (the disk failed, the client was
        revoked) may differ from what the record says of their chunk: the
        staging goes, while the fence still holds it, so no commit trusts it and
        a full disk gets its space back."""
        if self.unrecorded and self.data_fd >= 0:
            store, client, name = self._where
            try:
                base = store.staging_fd(client, create=False)
                try:
                    if leads_to(base, name + DATA, self.data_fd):
                        remove_staging(base, name)
                finally:
                    os.close(base)
            except (OSError, FxError):
                pass  # gone already
        self.unrecorded = False
        self._close_fds()

    def _close_fds(self) -> None:
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
        self.direct_fd = -1
        for fd in (self.data_fd, self.rec_fd):
            if fd >= 0:
                os.close(fd)
        self.data_fd = self.rec_fd = -1


class Staging:
    """The staging folders of every client: open a put, resume it, discard it."""

    def __init__(self, root_fd: int, state_fd: int, top: str, policy: Policy, preallocate: bool,
                 db: manifest.Manifest, folders: Folders, quota_of: QuotaOf = no_quota) -> None:
        self.root_fd, self.state_fd, self.top = root_fd, state_fd, top
        self.policy, self.preallocate = policy, preallocate
        self.manifest, self.folders = db, folders
        self.quota_of = quota_of
        self.held = StoredBytes(self._held_bytes)
        self.fid_secret = load_secret(state_fd)

    def _held_bytes(self, client: str) -> int:
        with self.manifest.connect() as db:
            return manifest.held_bytes(db, client)

    def staging_fd(self, client: str, create: bool) -> int:
        return open_chain(self.state_fd, [b"staging", client.encode()], create)

    def open_put(self, client: str, path: str, size: int, mtime_ns: int, mode: int,
                 chunk: int, usage: Budget | None = None, force: bool = False,
                 holes: set[int] = frozenset()) -> PutReply:
        """*usage*: the client's budget, shared across one batch so that a batch
        of thousands is not a scan of the staging per file.
        *holes*: chunks that lie in holes of a sparse file, recorded at once as
        zeros and never written (a new staging's file is all holes until written)."""
        parts = paths.split(path)
        raw = b"/".join(parts)
        fid = file_id(self.fid_secret, client, raw, size, mtime_ns)
        self.folders.check_parents(client, parts)
        if not force:
            with self.manifest.connect() as db:
                row = manifest.lookup(db, client, raw)
            if row and row[0] == size and row[1] == mtime_ns and self.folders.is_file(client, parts):
                return PutReply(fid, chunk, "unchanged", {})
        base = self.staging_fd(client, create=True)
        try:
            # One put of this client at a time finds or makes a staging: two
            # sends of one file (one fid) in two workers would otherwise both
            # create it, truncating what the other's streams had written.
            fcntl.flock(base, fcntl.LOCK_EX)
            existing = self._resume(base, fid, size, mtime_ns)
            if existing is not None:
                return existing
            if not layout.valid_layout(size, chunk):
                raise RefusedError(f"chunk size {chunk} is not allowed for {size} bytes")
            have = {i: layout.zero_digest(layout.chunk_span(size, chunk, i)[1]) for i in holes}
            needed = size - sum(layout.chunk_span(size, chunk, i)[1] for i in holes)  # holes take no space
            self._check_budget(client, path, size, needed, base, usage if usage is not None else Budget())
            self._create(base, fid, {
                "client": client, "path": path, "size": size,
                "mtime_ns": mtime_ns, "mode": mode, "chunk": chunk, "sparse": bool(holes),
            }, have)
            if usage is not None:
                usage.add(size, needed)
        finally:
            os.close(base)
        with self.manifest.connect() as db:
            same = manifest.same_size(db, client, raw, size)
        return PutReply(fid, chunk, "new", have, same)

    def _check_budget(self, client: str, path: str, size: int, needed: int, base: int, usage: Budget) -> None:
        free = free_bytes(self.root_fd)
        if needed > free:
            raise space_error(needed, free, path)
        if usage.files < 0:
            usage.count(base)
            usage.quota = self.quota_of(client)
            if usage.quota is not None:
                usage.stored = self.held.of(client, fresh=True)
        if usage.files >= self.policy.max_staging_files or usage.declared + size > self.policy.max_staging_bytes:
            raise RefusedError(
                f"{path}: too many unfinished transfers for this client on the server "
                f"({usage.files} files, {human(usage.declared)}); finish or wait for them"
            )
        usage.check(path, needed, free, self.policy.client_share)

    def clean_staging(self, now: float) -> int:
        """Remove transfers abandoned longer than the policy allows; at start only."""
        removed = 0
        for client in os.scandir(self.top):
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

    def _resume(self, base: int, fid: bytes, size: int, mtime_ns: int) -> PutReply | None:
        name = fid.hex().encode()
        try:
            meta = json.loads(read_file(base, name + META))
        except FileNotFoundError:
            return None
        if meta.get("size") != size or meta.get("mtime_ns") != mtime_ns:
            return None
        try:
            os.stat(name + DATA, dir_fd=base, follow_symlinks=False)
        except FileNotFoundError:
            # Committed just before a crash cut the cleanup short: start over.
            for ext in (META, REC):
                unlink_quietly(name + ext, base)
            return None
        chunk = meta["chunk"]
        try:
            record = read_file(base, name + REC)
        except FileNotFoundError:  # committed by another send of it just now: its staging went
            return None
        return PutReply(fid, chunk, "resume", layout.parse_record(record, layout.chunk_count(size, chunk)))

    def _create(self, base: int, fid: bytes, meta: dict, holes: dict[int, bytes]) -> None:
        name = fid.hex().encode()
        data_fd = os.open(name + DATA, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base)
        try:
            # As long as declared, and sparse: space is reserved as chunks arrive
            # (StagingFile._reserve), so a declared size alone takes nothing.
            os.ftruncate(data_fd, meta["size"])
        except OSError as exc:
            os.close(data_fd)
            os.unlink(name + DATA, dir_fd=base)
            raise (disk_refusal(exc, meta["size"], self.root_fd, meta["path"]) or exc) from None
        os.close(data_fd)
        rec_fd = os.open(name + REC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base)
        try:
            if holes:  # what a hole holds is known: zeros, on disk as soon as the file exists
                os.write(rec_fd, b"".join(layout.record_entry(i, d) for i, d in sorted(holes.items())))
                os.fsync(rec_fd)
        finally:
            os.close(rec_fd)
        # The meta file appears last and atomically: its presence says the
        # staging is complete enough to resume.
        tmp = name + META + b".tmp"
        meta_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=base)
        try:
            os.write(meta_fd, json.dumps(meta).encode())
            os.fsync(meta_fd)
        finally:
            os.close(meta_fd)
        os.rename(tmp, name + META, src_dir_fd=base, dst_dir_fd=base)
        os.fsync(base)

    def finished(self, base: int, fid: bytes) -> tuple[dict, dict[int, bytes], int]:
        """The meta and the chunks received of a transfer about to be committed,
        and a descriptor of its data holding the commit fence (the caller's to
        close once the file is in place): no stream writes into it meanwhile,
        and every byte a stream wrote into it is recorded (or the staging is gone)."""
        name = fid.hex().encode()
        try:
            fd = os.open(name + DATA, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=base)
        except FileNotFoundError:
            raise RefusedError(f"unknown transfer {fid.hex()}") from None
        try:
            meta = self._fenced(base, name, fd)
            count = layout.chunk_count(meta["size"], meta["chunk"])
            have, conflicts = layout.parse_record_conflicts(read_file(base, name + REC), count)
            for index in conflicts:  # written twice, differently: what is on disk is what counts
                offset, length = layout.chunk_span(meta["size"], meta["chunk"], index)
                have[index] = hashlib.sha256(os.pread(fd, length, offset)).digest()
        except BaseException:
            os.close(fd)
            raise
        return meta, have, fd

    @staticmethod
    def _fenced(base: int, name: bytes, fd: int) -> dict:
        """Wait (boundedly) for the streams writing into the data to close it: they
        release their shared lock only once what they wrote is recorded."""
        deadline = time.monotonic() + limits.COMMIT_FENCE_WAIT
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BusyError(f"chunks of transfer {name.decode()} are still being written; "
                                    "commit again once they are acknowledged") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        try:  # a writer that failed discarded the staging before it let go
            meta = json.loads(read_file(base, name + META))
            if not leads_to(base, name + DATA, fd):
                raise FileNotFoundError
        except FileNotFoundError:
            raise RefusedError(f"unknown transfer {name.decode()}") from None
        return meta

    @staticmethod
    def forget(base: int, fid: bytes) -> None:
        """Once the data is in place: the rest of its staging goes."""
        name = fid.hex().encode()
        for ext in (META, REC):
            os.unlink(name + ext, dir_fd=base)

    def discard(self, client: str, fid: bytes) -> None:
        base = self.staging_fd(client, create=False)
        try:
            remove_staging(base, fid.hex().encode())
        finally:
            os.close(base)
