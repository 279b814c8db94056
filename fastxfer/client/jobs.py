"""What a send moves and how it reads it: files cut in chunks, bundles of small
files, the result per entry, and the reads that check a file is still the
one the send began with."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field

from fastxfer.errors import ChangedError, FxError, LocalFileError
from fastxfer.protocol import layout, wire
from fastxfer.client.walk import Entry

Source = Entry


@dataclass(eq=False)
class FileJob:
    src: Source
    identity: tuple[int, int, int, int]  # (dev, inode, size, mtime) when the send began
    fid: bytes = b""
    chunk: int = layout.DEFAULT_CHUNK
    digests: list[bytes | None] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)  # chunks not yet durable and checked
    have: dict[int, bytes] = field(default_factory=dict)  # the server's durable chunks (resume)
    sha256: bytes | None = None
    error: FxError | None = None
    same: list[tuple[bytes, int]] = field(default_factory=list)  # (digest, chunk) the server holds at this size
    linked: bytes | None = None  # the digest of the stored copy it is: committed with nothing sent
    holes: set[int] = field(default_factory=set)  # chunks in holes of a sparse file: zeros, never sent
    changed: bool = False  # changed while read, stored anyway (--allow-changing)
    allow_changing: bool = False  # a new time is tolerated while it is read (the same file and size)

    @property
    def count(self) -> int:
        return layout.chunk_count(self.src.size, self.chunk)


@dataclass(eq=False)
class Bundle:
    number: int
    entries: list[Source]
    digests: dict[int, bytes] = field(default_factory=dict)  # a small file's SHA-256, by id of its entry
    allow_changing: bool = False  # a file that changed while read is sent as read
    changed: set[int] = field(default_factory=set)  # ids of entries sent so
    snap: int = 0  # the open snapshot its files join on the server (0: none)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass
class Result:
    src: Source
    status: str  # stored, unchanged, failed (and send, in a dry run)
    error: FxError | None = None
    sha256: bytes | None = None
    version: str | None = None
    changed: bool = False  # stored as read while it changed (--allow-changing)
    in_snapshot: bool = False  # the server recorded it in the send's snapshot as it stored it
    by_other: bool = False  # unchanged because another send of the same file stored it meanwhile
    # What changed, for an itemized list (cli/report.py): new, changed, touched (sent, and the
    # server found the content it held: a new time or mode), repaired (so, with --checksum:
    # its copy had stopped matching its record), linked (a copy of content it holds, not sent);
    # "" where it is not known.
    how: str = ""


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def open_flags(src: Source) -> int:
    # O_NONBLOCK: a FIFO put where a file was listed must not hang the send.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    return flags if src.follow else flags | os.O_NOFOLLOW


def changed(job: FileJob) -> LocalFileError:
    return ChangedError(f"{job.src.local}: changed while it was sent; not stored (send it again)")


def changed_since(job: FileJob) -> FxError | None:
    """Why *job*'s file is no longer the one the send began with, if it is not."""
    try:
        st = os.stat(job.src.local, follow_symlinks=job.src.follow)
    except OSError as exc:
        return LocalFileError(f"{job.src.local}: {exc.strerror} while it was sent; not stored")
    return changed(job) if file_identity(st) != job.identity else None


class LocalFile:
    """A source file opened for one read, and checked to be the one the send began with.

    Files are opened per read rather than held open, so a tree of any size
    needs a bounded number of descriptors.
    """

    def __init__(self, job: FileJob) -> None:
        self.job = job

    def __enter__(self) -> int:
        try:
            self.fd = os.open(self.job.src.local, open_flags(self.job.src))
        except OSError as exc:
            raise LocalFileError(f"{self.job.src.local}: {exc.strerror}; not stored") from None
        now = file_identity(os.fstat(self.fd))
        if now != self.job.identity:
            if self.job.allow_changing and now[:3] == self.job.identity[:3]:
                self.job.changed = True  # written in place: read as it is, and said so
                return self.fd
            os.close(self.fd)
            raise changed(self.job)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def find_holes(src: Source, st: os.stat_result, chunk: int) -> set[int]:
    """The chunks of a sparse file that lie wholly in holes (SEEK_DATA and
    SEEK_HOLE); none for a file that takes the blocks its size needs."""
    blocks = getattr(st, "st_blocks", None)  # a stat result may not say (some filesystems, tests)
    if blocks is None or blocks * 512 >= st.st_size or not hasattr(os, "SEEK_DATA"):
        return set()
    count = layout.chunk_count(st.st_size, chunk)
    holes: set[int] = set()
    try:
        fd = os.open(src.local, open_flags(src))
    except OSError:
        return set()  # it fails with its reason when read
    try:
        i = 0
        while i < count:
            try:
                data = os.lseek(fd, i * chunk, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                    holes.update(range(i, count))
                    break
                return set()
            first = data // chunk
            holes.update(range(i, first))
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            i = max(first + 1, -(-hole // chunk))
    except OSError:
        return set()
    finally:
        os.close(fd)
    return holes


def hash_list(job: FileJob, chunk: int) -> bytes:
    """The file's hash-list digest at *chunk* bytes a chunk, read here in full
    (only for a file the server may already hold a copy of)."""
    digests = []
    buf = memoryview(bytearray(chunk))
    with LocalFile(job) as fd:
        for index in range(layout.chunk_count(job.src.size, chunk)):
            offset, length = layout.chunk_span(job.src.size, chunk, index)
            read_span(job, fd, buf, offset, length)
            digests.append(hashlib.sha256(buf[:length]).digest())
    return layout.file_digest(job.src.size, chunk, digests)


def read_span(job: FileJob, fd: int, view: memoryview, offset: int, length: int) -> None:
    """*length* bytes of the file at *offset* into the start of *view*."""
    got = 0
    while got < length:
        try:
            n = os.preadv(fd, [view[got:length]], offset + got)
        except OSError as exc:
            raise LocalFileError(f"{job.src.local}: {exc.strerror}; not stored") from None
        if n == 0:
            raise changed(job)
        got += n


def read_chunk(job: FileJob, index: int, view: memoryview) -> int:
    """Read chunk *index* of *job* into the start of *view*; its length."""
    offset, length = layout.chunk_span(job.src.size, job.chunk, index)
    with LocalFile(job) as fd:
        read_span(job, fd, view, offset, length)
    return length


def whole_sha256(src: Source) -> bytes:
    """The plain SHA-256 of a listed file (--checksum), before anything is sent."""
    h = hashlib.sha256()
    try:
        with open(src.local, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
    except OSError as exc:
        raise LocalFileError(f"{src.local}: {exc.strerror}") from None
    return h.digest()


def job_sha256(job: FileJob) -> bytes:
    """The plain SHA-256 of a file being sent (--sha256), read as the one the send began with."""
    h = hashlib.sha256()
    buf = memoryview(bytearray(1 << 20))
    offset = 0
    try:
        with LocalFile(job) as fd:
            while offset < job.src.size:
                n = os.preadv(fd, [buf], offset)
                if n == 0:
                    raise changed(job)
                h.update(buf[:n])
                offset += n
    except OSError as exc:
        raise LocalFileError(f"{job.src.local}: {exc.strerror}") from None
    return h.digest()


def read_small_into(src: Source, target: memoryview, allow_changing: bool = False) -> bool:
    """Fill *target* (src.size bytes) with the whole of a small file, refused if
    it is not the file that was listed or if it changed while it was read;
    with *allow_changing*, a file that changed but still gave its listed size
    is taken as read.  Whether it changed."""
    try:
        fd = os.open(src.local, open_flags(src))
    except OSError as exc:
        raise LocalFileError(f"{src.local}: {exc.strerror}; not stored") from None
    try:
        # One fstat, after the read: a file that grew, shrank or was written
        # meanwhile has another size or time than the listing's by then.
        got = os.preadv(fd, [target], 0) if src.size else 0
        after = os.fstat(fd)
    except OSError as exc:
        if exc.errno == errno.ESPIPE:  # a FIFO or the like put where the file was
            raise LocalFileError(f"{src.local}: no longer a regular file; not stored") from None
        raise LocalFileError(f"{src.local}: {exc.strerror}; not stored") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(after.st_mode):
        raise LocalFileError(f"{src.local}: no longer a regular file; not stored")
    if got != src.size or (after.st_size, after.st_mtime_ns) != (src.size, src.mtime_ns):
        if allow_changing and got == src.size:
            return True
        raise ChangedError(f"{src.local}: changed while it was sent; not stored (send it again)")
    return False


def pack_bundle(bundle: Bundle, buf: bytearray) -> tuple[bytes, int, list[Result]]:
    """Read and hash a bundle's files into *buf*, grown as needed:
    (header, bytes of buf used, files that could not be read).

    Each file is read straight into its place in the frame and hashed
    there: no copy of a file's bytes in this process."""
    names = [os.fsencode(src.remote) for src in bundle.entries]
    need = sum(wire.BUNDLE_ENTRY_FIXED + len(n) + s.size for n, s in zip(names, bundle.entries))
    if len(buf) < need:
        buf.extend(bytes(need - len(buf)))
    failed, count, pos = [], 0, 0
    with memoryview(buf) as view:
        for src, name in zip(bundle.entries, names):
            start = pos + wire.BUNDLE_ENTRY_HEAD + len(name)
            end = start + src.size
            try:
                if read_small_into(src, view[start:end], bundle.allow_changing):
                    bundle.changed.add(id(src))
            except LocalFileError as exc:
                failed.append(Result(src, "failed", exc))
                continue  # the next file takes its place
            wire.pack_bundle_entry_head(buf, pos, name, src.size, src.mtime_ns, src.mode)
            digest = hashlib.sha256(view[start:end]).digest()
            view[end : end + wire.DIGEST] = digest
            bundle.digests[id(src)] = digest
            pos = end + wire.DIGEST
            count += 1
    return wire.bundle_header(bundle.number, count, bundle.snap), pos, failed
