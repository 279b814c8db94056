"""``fastxfer get``: list, fetch chunks over parallel streams, verify, place.

Theory of operation.  The control session lists what is stored at or
below PATH; the plan maps each entry to a place below DEST (scp's rule:
an existing folder receives the item inside it, otherwise DEST is the new
name), with every part checked as the server names it and every folder
opened without following links, so nothing the server says can reach
outside DEST.  Stream threads ask for chunks (REQ) and the server answers
with sealed DATA frames; each chunk is checked against its SHA-256 and
written at its offset into a hidden temporary file beside its final place.
When a file's chunks are all in, their hash list must equal the digest the
server recorded when it verified the file at backup time.  Files are
restored in waves; a wave's verified files are made durable by one sync of
each filesystem they are on, then renamed into place one by one (each
appears whole or not at all), then each folder that changed is synced once:
many small files cost no fsync each.  An existing local file is never
replaced unless --force.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
from collections.abc import Iterator
import os
import stat
import threading
import time
from dataclasses import dataclass, field

from fastxfer.protocol import messages, wire
from fastxfer.protocol import layout
from fastxfer.protocol import paths
from fastxfer.errors import BusyError, ConnectError, FxError, LocalFileError, ProtocolError, RefusedError, VerifyError, from_wire_number
from fastxfer.client.connect import ControlClient, Welcome, keep_alive, open_stream
from fastxfer.client.retry import MAX_WAIT
from fastxfer.localfs import open_chain, sync_filesystem
from fastxfer.net.conn import Buffer

# In flight per stream: up to WINDOW requests and WINDOW_BYTES of chunks,
# so small files are not fetched one round trip at a time and big chunks
# are not asked for faster than they can be written.
WINDOW = 64
WINDOW_BYTES = 16 << 20
# Files of one chunk up to BATCH_FILE bytes are asked for many at a time
# (REQS, answered by one DATAS frame) when the server takes it.
BATCH_FILE = 256 << 10
BATCH_FILES = 32
BATCH_BYTES = 4 << 20
BATCH = b"batch"  # the first half of a REQS frame's key in a Window (tags are 16 bytes)
OPEN_MAX = 1024  # entries in a wave: one descriptor per file and per folder (fewer if descriptors are short)
RETRIES = 8


@dataclass(eq=False)
class Fetch:
    entry: dict
    parts: list[bytes]  # below DEST
    digests: list[bytes | None] = field(default_factory=list)
    left: int = 0
    fd: int = -1
    parent: int = -1
    tmp: bytes = b""
    tag: bytes = b""  # names the file in requests: SHA-256(tmp)[:16]
    # Threads writing to fd now: a file that fails meanwhile keeps its descriptor
    # until the last is done, so a write can never land in a reused number.
    writers: int = 0
    closing: bool = False
    status: str = "pending"  # verified (all in, waiting for its wave's sync), restored, failed
    error: FxError | None = None

    @property
    def size(self) -> int:
        return int(self.entry["size"])

    @property
    def chunk(self) -> int:
        return int(self.entry["chunk"])

    @property
    def whole(self) -> bool:
        """Small enough to be asked for whole, with others, in one request."""
        return self.size <= min(BATCH_FILE, self.chunk)

    @property
    def name(self) -> bytes:
        """The file as a request names it: its path, and "\0VERSION" for an older copy."""
        name = os.fsencode(self.entry["path"])
        if self.entry.get("version"):
            name += b"\x00" + os.fsencode(self.entry["version"])
        return name


class Window:
    """A stream's requests in flight: by (tag, offset) for a chunk, (BATCH, n)
    for many files; each with its (file, chunk index) jobs and bytes counted."""

    def __init__(self) -> None:
        self.asked: dict[tuple[bytes, int], tuple[list[tuple[Fetch, int]], int]] = {}
        self.bytes = 0

    def has_room(self) -> bool:
        return len(self.asked) < WINDOW and self.bytes < WINDOW_BYTES

    def add(self, key: tuple[bytes, int], jobs: list[tuple[Fetch, int]], cost: int) -> None:
        self.asked[key] = (jobs, cost)
        self.bytes += cost

    def get(self, key: tuple[bytes, int]) -> list[tuple[Fetch, int]] | None:
        found = self.asked.get(key)
        return found[0] if found else None

    def pop(self, key: tuple[bytes, int]) -> list[tuple[Fetch, int]] | None:
        found = self.asked.pop(key, None)
        if found is None:
            return None
        self.bytes -= found[1]
        return found[0]

    def drop_tag(self, tag: bytes) -> Fetch | None:
        """Forget a file's requests (it failed); the file, or None if none was asked for."""
        found = None
        for key in [k for k in self.asked if k[0] == tag]:
            found = self.pop(key)[0][0]  # type: ignore[index]
        return found

    def jobs(self) -> list[tuple[Fetch, int]]:
        return [job for jobs, _ in self.asked.values() for job in jobs]

    def __bool__(self) -> bool:
        return bool(self.asked)


@dataclass
class Outcome:
    path: str
    status: str  # restored, skipped, failed
    error: FxError | None = None


def list_all(control: ControlClient, prefix: str, version: str | None = None) -> list[dict]:
    if version is not None:
        reply = control.call({"t": "list", "prefix": prefix, "versions": True}, "list_ok")
        found = [e for e in messages.get_list(reply, "entries", 1 << 20)
                 if e.get("version") == version and e.get("path") == prefix.strip("/")]
        if not found:
            raise RefusedError(f"no version {version!r} of {prefix!r} (see: fastxfer ls --versions)")
        return found
    entries: list[dict] = []
    cursor = None
    while True:
        reply = control.call({"t": "list", "prefix": prefix, "versions": False, "after": cursor}, "list_ok")
        entries += messages.get_list(reply, "entries", 1 << 20)
        cursor = reply.get("next")
        if not cursor:
            return entries


def plan(entries: list[dict], prefix: str, dest: str) -> tuple[str, list[tuple[dict, list[bytes]]]]:
    """(folder every place is below, [(entry, parts below that folder)])."""
    top = [p for p in prefix.strip("/").split("/") if p]
    if os.path.isdir(dest):
        root, base = dest, [os.fsencode(top[-1])] if top else []
    else:
        root, base = os.path.dirname(os.path.abspath(dest)), [os.fsencode(os.path.basename(dest))]
        if not os.path.isdir(root):
            raise LocalFileError(f"{root}: no such folder")
    out = []
    for e in entries:
        parts = paths.split(e["path"])  # the server's names are checked like a client's
        rel = parts[len(top):]
        if [os.fsencode(p) for p in top] != parts[: len(top)]:
            raise ProtocolError("server listed an entry outside the asked path")
        out.append((e, base + rel))
    if not out or any(not parts for _, parts in out):
        raise RefusedError(f"nothing to restore at {prefix!r}" if not out else "cannot restore onto DEST itself")
    return root, out


def wave_size() -> int:
    """Entries per wave: OPEN_MAX, or fewer where the descriptor limit cannot be
    raised enough (a wave holds one descriptor per file and one per folder)."""
    import resource

    want = 2 * OPEN_MAX + 128  # and the streams, the control connection, the standard ones
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ValueError, OSError):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return OPEN_MAX
    return max(16, min(OPEN_MAX, (soft - 128) // 2))


def already_there(entry: dict, here: os.stat_result, parts: list[bytes], parent: int) -> bool:
    """Whether what is at the place is what the entry would bring: a file of its
    size and time, or a link to its target (a get run again after it was
    interrupted, or over a restore already made, skips it, as rsync would)."""
    kind = entry.get("kind", "file")
    if kind == "file":
        return stat.S_ISREG(here.st_mode) and here.st_size == int(entry["size"]) \
            and here.st_mtime_ns == int(entry["mtime_ns"])
    if kind == "link":
        return stat.S_ISLNK(here.st_mode) and os.readlink(parts[-1], dir_fd=parent) == os.fsencode(
            entry.get("target") or "")
    return False


def chunks_of(entry: dict) -> int:
    """Requests a listed entry will take (0 for folders, links and records that make no sense)."""
    try:
        return layout.chunk_count(int(entry["size"]), int(entry["chunk"])) if entry.get("kind", "file") == "file" else 0
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0


def link_is_confined(parts: list[bytes], target: str) -> bool:
    """A link may only point down: relative, with no '..' anywhere.

    Checking where each link lands on its own is not enough: links can be
    chained (a/b/s -> ../.., t -> a/b/s/..) to climb out of DEST.  Links
    that only ever descend cannot, however they are combined.
    """
    if not target or target.startswith("/"):
        return False
    return ".." not in target.split("/")


class Getter:
    def __init__(self, control: ControlClient, welcome: Welcome, streams: int, force: bool, progress) -> None:
        self.control = control
        self.welcome = welcome
        self.streams = streams
        self.force = force
        self.progress = progress
        # Chunks to ask for; a deque's appends and pops are atomic, and a stream
        # waiting for work waits on self.cond, which the main thread notifies.
        self.jobs: collections.deque[tuple[Fetch, int]] = collections.deque()
        self.temp_prefix = b".fastxfer-get-" + os.urandom(6).hex().encode() + b"-"
        self.temp_numbers = itertools.count()
        self.cond = threading.Condition()
        self.pending = 0
        self.fatal: FxError | None = None
        self.outcomes: list[Outcome] = []
        self.dirs: list[tuple[list[bytes], int, int]] = []
        self.bytes_received = 0
        self.folders: dict[tuple[bytes, ...], int] = {}  # the wave's open folders, by parts below root
        self.ready: list[Fetch] = []  # verified, to be placed at the wave's end
        self.threads: list[threading.Thread] = []
        self.done = False  # no more waves: streams leave
        self.alive = 0  # stream threads still working (one told "busy" leaves if others remain)

    def run(self, root: str, planned: list[tuple[dict, list[bytes]]]) -> list[Outcome]:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # In waves, so a tree of any size holds a bounded number of
            # descriptors; the streams stay open from one wave to the next.
            self.streams = min(self.streams, max(1, sum(chunks_of(e) for e, _ in planned)))
            size = wave_size()
            try:
                for start in range(0, len(planned), size):
                    self._wave(root_fd, planned[start : start + size])
                    if self.fatal is not None:
                        break
            finally:
                with self.cond:
                    self.done = True
                    self.cond.notify_all()
                if self.fatal is None:  # after a failure or Ctrl-C, no waiting on streams stuck in a read
                    for t in self.threads:
                        t.join(timeout=5)
            self._finish_dirs(root_fd)
        finally:
            os.close(root_fd)
        return self.outcomes

    def _finish_dirs(self, root_fd: int) -> None:
        """Folders' modes and times last, deepest first: filling them changed their times."""
        for parts, mode, mtime_ns in sorted(self.dirs, key=lambda d: -len(d[0])):
            try:
                fd = open_chain(root_fd, parts, create=False)
            except (OSError, FxError):
                continue
            try:
                os.fchmod(fd, mode & 0o777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)

    def _wave(self, root_fd: int, planned: list[tuple[dict, list[bytes]]]) -> None:
        fetches: list[Fetch] = []
        try:
            for entry, parts in planned:
                outcome = self._prepare(root_fd, entry, parts, fetches)
                if outcome is not None:
                    self.outcomes.append(outcome)
            self.pending = len(fetches)
            for f in fetches:
                if f.left == 0:
                    self._finish(f)
            with self.cond:  # streams waiting for work check the queue holding this
                for f in fetches:
                    for i in range(f.left):
                        self.jobs.append((f, i))
                self.cond.notify_all()
            if not self.threads and self.jobs:
                self.threads = [threading.Thread(target=self._stream, daemon=True) for _ in range(self.streams)]
                self.alive = len(self.threads)
                for t in self.threads:
                    t.start()
            while True:
                with self.cond:
                    if not self.pending or self.fatal is not None:
                        break
                    self.cond.wait(0.5)
                try:  # not holding the lock: a reconnection may take seconds
                    self.control.check()
                    keep_alive(self.control)
                except FxError as exc:
                    self._stop(exc)
            for f in fetches:
                if f.status == "pending":
                    self._abandon(f, self.fatal or ConnectError("not restored"))
            self._place()  # what was verified is kept, even when the wave ended early
        except BaseException:  # Ctrl-C: no temporary is left behind
            self._stop(FxError("interrupted"))
            for f in fetches:
                if f.status in ("pending", "verified"):
                    self._abandon(f, FxError("interrupted"))
            raise
        finally:
            for fd in self.folders.values():
                os.close(fd)
            self.folders.clear()

    def _folder(self, root_fd: int, parts: list[bytes]) -> int:
        """The folder at *parts* below root, created if missing, opened once a wave."""
        key = tuple(parts)
        fd = self.folders.get(key)
        if fd is None:
            fd = self.folders[key] = open_chain(root_fd, parts, create=True)
        return fd

    def _prepare(self, root_fd: int, entry: dict, parts: list[bytes], fetches: list[Fetch]) -> Outcome | None:
        shown = os.fsdecode(b"/".join(parts))
        try:
            return self._prepare_one(root_fd, entry, parts, fetches, shown)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A local failure, or a listing entry that makes no sense: this entry only.
            return Outcome(shown, "failed", LocalFileError(f"{shown}: not restored ({exc})"))

    def _prepare_one(self, root_fd: int, entry: dict, parts: list[bytes], fetches: list[Fetch],
                     shown: str) -> Outcome | None:
        try:
            parent = self._folder(root_fd, parts[:-1])
        except (OSError, FxError) as exc:
            return Outcome(shown, "failed", LocalFileError(f"{shown}: cannot create its folder ({exc})"))
        try:
            here: os.stat_result | None = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        exists = here is not None
        if entry.get("kind") == "dir":
            try:
                self._folder(root_fd, parts)
            except (OSError, FxError) as exc:
                return Outcome(shown, "failed", LocalFileError(f"{shown}: cannot create the folder ({exc})"))
            self.dirs.append((parts, int(entry["mode"]), int(entry["mtime_ns"])))
            return Outcome(shown, "restored")
        if exists and not self.force:
            if already_there(entry, here, parts, parent):
                return Outcome(shown, "unchanged")
            return Outcome(shown, "skipped", LocalFileError(f"{shown}: exists locally; not replaced (use --force)"))
        if entry.get("kind") == "link":
            target = entry.get("target") or ""
            if not link_is_confined(parts, target):
                return Outcome(shown, "skipped", LocalFileError(
                    f"{shown}: link to {target!r} points outside the destination; not created"))
            tmp = self.temp_prefix + b"%d" % next(self.temp_numbers)
            os.symlink(os.fsencode(target), tmp, dir_fd=parent)
            try:
                os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
            except OSError:
                os.unlink(tmp, dir_fd=parent)
                raise
            return Outcome(shown, "restored")
        if not entry.get("digest") or not layout.valid_layout(int(entry["size"]), int(entry["chunk"])):
            return Outcome(shown, "failed", ProtocolError(f"{shown}: the server's record of it is incomplete"))
        f = Fetch(entry, parts, parent=parent)
        f.tmp = self.temp_prefix + b"%d" % next(self.temp_numbers)
        f.tag = hashlib.sha256(f.tmp).digest()[:16]
        f.left = layout.chunk_count(f.size, f.chunk)
        f.digests = [None] * f.left
        fetches.append(f)  # before its temporary exists: a Ctrl-C from here on still finds and removes it
        try:
            f.fd = os.open(f.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        except OSError:
            fetches.pop()
            raise
        return None

    # ----------------------------------------------------------- streams

    def _stream(self) -> None:
        failures = 0
        while True:
            with self.cond:
                if self.done or self.fatal is not None:
                    return
            outstanding = Window()
            try:
                self._stream_once(outstanding)
                return
            except (ConnectError, ProtocolError, BusyError) as exc:
                for job in outstanding.jobs():
                    self.jobs.append(job)
                if isinstance(exc, BusyError):
                    with self.cond:  # the server allows fewer streams: the others carry on
                        if self.alive > 1:
                            self.alive -= 1
                            return
                failures += 1
                if failures > RETRIES:
                    self._stop(ConnectError(f"{exc.message} (gave up after {RETRIES} reconnects)"))
                    return
                time.sleep(min(MAX_WAIT, 0.2 * 2 ** (failures - 1)))  # a server restarting needs a moment
            except FxError as exc:  # trust, refused: reconnecting would not help
                self._stop(exc)
                return
            except Exception as exc:  # noqa: BLE001 - never leave the main thread waiting
                self._stop(FxError(f"restore failed unexpectedly: {exc!r}"))
                raise

    def _stop(self, exc: FxError) -> None:
        with self.cond:
            self.fatal = self.fatal or exc
            self.cond.notify_all()

    def _stream_once(self, outstanding: Window) -> None:
        session = self.control.welcome or self.welcome  # the latest: a restarted server voids the first ticket
        fc = open_stream(self.control.host, self.control.port, session)  # its send and receive come with the split
        conn, sealer, opener = fc.conn, fc.sealer, fc.opener
        conn.settimeout(120.0)
        batching = "reqs" in session.features
        numbers = itertools.count()
        # Frames land in two buffers kept for the connection: a fresh 4 MiB
        # allocation per frame costs page faults on every byte (2-3 s of
        # system time per GiB on this kind of VM).
        sealed_buf, plain_buf = Buffer(), Buffer()
        try:
            while True:
                self._ask(conn, sealer, outstanding, batching, numbers)
                if not outstanding:
                    with self.cond:
                        if self.done or self.fatal is not None:
                            return
                        if not self.jobs:  # the next wave's work, or the end
                            self.cond.wait(0.5)
                    continue
                self._receive(conn, opener, outstanding, sealed_buf, plain_buf)
        finally:
            conn.close()
            sealed_buf.close()
            plain_buf.close()

    def _ask(self, conn, sealer, outstanding: Window, batching: bool, numbers: Iterator[int]) -> None:
        """Fill the window: chunks one request each, whole small files many to a REQS.

        A job taken from the queue is either in the window (requeued with it if
        the stream fails) or back on the queue: a send that fails loses none."""
        batch: list[Fetch] = []
        cost = 0
        taken: tuple[Fetch, int] | None = None
        try:
            while outstanding.has_room():
                try:
                    taken = f, index = self.jobs.popleft()
                except IndexError:
                    taken = None
                    break
                if f.status != "pending":
                    continue
                if batching and f.whole:
                    batch.append(f)
                    taken = None
                    cost += wire.answer_cost(f.size)
                    if len(batch) >= BATCH_FILES or cost >= BATCH_BYTES:
                        self._ask_many(conn, sealer, outstanding, next(numbers), batch, cost)
                        batch, cost = [], 0
                    continue
                if batch:
                    self._ask_many(conn, sealer, outstanding, next(numbers), batch, cost)
                    batch, cost = [], 0
                self._ask_one(conn, sealer, outstanding, f, index)
                taken = None
            if batch:
                self._ask_many(conn, sealer, outstanding, next(numbers), batch, cost)
                batch = []
        except BaseException:
            self.jobs.extendleft([(f, 0) for f in batch] + ([taken] if taken else []))
            raise

    @staticmethod
    def _ask_one(conn, sealer, outstanding: Window, f: Fetch, index: int) -> None:
        offset, length = layout.chunk_span(f.size, f.chunk, index)
        header, body = wire.encode_req(f.tag, offset, length, f.size, int(f.entry["mtime_ns"]), f.name)
        outstanding.add((f.tag, offset), [(f, index)], length)
        conn.send(wire.frame_prefix(wire.REQ, header, len(body)), sealer.seal(bytes([wire.REQ]) + header, body))

    @staticmethod
    def _ask_many(conn, sealer, outstanding: Window, number: int, batch: list[Fetch], cost: int) -> None:
        asks = [wire.Ask(f.tag, f.size, int(f.entry["mtime_ns"]), f.name) for f in batch]
        header, body = wire.encode_reqs(number, asks)
        outstanding.add((BATCH, number), [(f, 0) for f in batch], cost)
        conn.send(wire.frame_prefix(wire.REQS, header, len(body)), sealer.seal(bytes([wire.REQS]) + header, body))

    def _receive(self, conn, opener, outstanding: Window, sealed_buf: Buffer, plain_buf: Buffer) -> None:
        """One frame from the server, handled before the next is read (its views
        into the buffers end with it)."""
        kind, rest = wire.parse_prefix(conn.recv_exact(wire.FRAME_PREFIX))
        body = sealed_buf.view(rest)
        conn.recv_into_exact(body)
        head = wire.split_rest(kind, body)
        plain = plain_buf.view(head.sealed_len - wire.TAG)
        opener.open_into(head.aad, body[len(head.header):], plain)
        if kind == wire.NAK:
            tag = head.header
            code, message = wire.parse_error(bytes(plain))
            f = outstanding.drop_tag(tag)
            if f is not None and f.status == "pending":  # a duplicate ask may come back after the file was done
                self._abandon(f, from_wire_number(code, message))
            return
        if kind == wire.ERROR:
            code, message = wire.parse_error(bytes(plain))
            raise from_wire_number(code, message)
        if kind == wire.DATAS:
            self._receive_many(head, plain, outstanding)
            return
        if kind != wire.DATA:
            raise ProtocolError(f"unexpected frame kind {kind} from server")
        tag, offset, length = wire.parse_data_header(head.header, head.sealed_len)
        jobs = outstanding.get((tag, offset))  # popped once checked: a bad chunk is asked for again
        if jobs is None:
            raise ProtocolError("server sent a chunk that was not asked for")
        f, index = jobs[0]
        if length != layout.chunk_span(f.size, f.chunk, index)[1]:
            raise ProtocolError("server sent a chunk of another length than was asked for")
        data, digest = plain[:length], bytes(plain[length:])
        if hashlib.sha256(data).digest() != digest:
            raise ProtocolError("a restored chunk does not match its digest")
        outstanding.pop((tag, offset))
        self._take(f, index, offset, data, digest)

    def _receive_many(self, head: wire.FrameHead, plain: memoryview, outstanding: Window) -> None:
        """A DATAS frame: every answer checked before any is used, so a bad frame
        leaves all of its files asked for (the stream is reopened and asks again)."""
        number, answers = wire.parse_datas(head.header, plain)
        jobs = outstanding.get((BATCH, number))
        if jobs is None or len(jobs) != len(answers):
            raise ProtocolError("server answered files that were not asked for")
        for (f, _), (tag, status, _code, payload) in zip(jobs, answers):
            if tag != f.tag:
                raise ProtocolError("server answered files that were not asked for")
            if status == 0 and (len(payload) != f.size + wire.DIGEST
                                or hashlib.sha256(payload[: f.size]).digest() != payload[f.size :]):
                raise ProtocolError("a restored file does not match its digest")
        outstanding.pop((BATCH, number))
        for (f, _), (_tag, status, code, payload) in zip(jobs, answers):
            if status == 0:
                self._take(f, 0, 0, payload[: f.size], bytes(payload[f.size :]))
            elif f.status == "pending":
                self._abandon(f, from_wire_number(code, bytes(payload).decode(errors="replace")))

    def _take(self, f: Fetch, index: int, offset: int, data: memoryview, digest: bytes) -> None:
        """A checked chunk into its file."""
        length = len(data)
        with self.cond:
            if f.status != "pending":
                return
            f.writers += 1
        try:
            try:
                view = data
                while view:
                    n = os.pwrite(f.fd, view, offset)
                    view, offset = view[n:], offset + n
            except OSError as exc:
                self._abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
                return
            if self.progress is not None:
                self.progress.update(length)
            with self.cond:
                self.bytes_received += length
                f.digests[index] = digest
                f.left -= 1
                done = f.left == 0
            if done:
                self._finish(f)
        finally:
            with self.cond:
                f.writers -= 1
                if f.closing and not f.writers and f.fd >= 0:
                    os.close(f.fd)

    # ------------------------------------------------------------ finish

    def _finish(self, f: Fetch) -> None:
        shown = os.fsdecode(b"/".join(f.parts))
        digest = layout.file_digest(f.size, f.chunk, f.digests)  # type: ignore[arg-type]
        if digest.hex() != str(f.entry["digest"]).lower():
            self._abandon(f, VerifyError(f"{shown}: restored bytes do not match what the server verified at backup"))
            return
        try:
            os.fchmod(f.fd, int(f.entry["mode"]) & 0o777)
            os.utime(f.fd, ns=(int(f.entry["mtime_ns"]), int(f.entry["mtime_ns"])))
        except OSError as exc:
            self._abandon(f, LocalFileError(f"{shown}: {exc.strerror}"))
            return
        with self.cond:
            if f.status != "pending":
                return
            f.status = "verified"
            self.ready.append(f)
            self.pending -= 1
            if not self.pending:  # the wave waits for its last file only: no wake-up per file
                self.cond.notify_all()

    def _place(self) -> None:
        """The wave's verified files into their places: their bytes made durable
        by one sync per filesystem, each renamed over its name (whole or not at
        all), then each folder that changed synced once."""
        ready, self.ready = self.ready, []
        if not ready:
            return
        filesystems: dict[int, int] = {}  # device -> a folder on it; DEST may hold mount points
        for fd in {f.parent for f in ready}:
            filesystems.setdefault(os.fstat(fd).st_dev, fd)
        try:
            for fd in filesystems.values():
                sync_filesystem(fd)
        except OSError as exc:
            for f in ready:
                self._abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
            return
        placed: dict[int, list[Fetch]] = {}  # folder -> its files renamed into place
        for f in ready:
            try:
                os.rename(f.tmp, f.parts[-1], src_dir_fd=f.parent, dst_dir_fd=f.parent)
            except OSError as exc:
                self._abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
                continue
            placed.setdefault(f.parent, []).append(f)
        for fd, files in placed.items():
            try:
                os.fsync(fd)
                error = None
            except OSError as exc:  # in place, but its name may not survive a crash
                error = LocalFileError(f"its folder could not be synced: {exc.strerror}")
            for f in files:
                if error is None:
                    self._close(f, "restored", None)
                else:
                    self._close(f, "failed", LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {error.message}"))

    def _abandon(self, f: Fetch, error: FxError) -> None:
        try:
            os.unlink(f.tmp, dir_fd=f.parent)
        except OSError:
            pass
        self._close(f, "failed", error)

    def _close(self, f: Fetch, status: str, error: FxError | None) -> None:
        """The end of a file's restore (its folder stays open: the wave owns it)."""
        with self.cond:
            if f.status not in ("pending", "verified"):
                return
            if f.status == "pending":
                self.pending -= 1
                if not self.pending:
                    self.cond.notify_all()
            f.status = status
            if f.writers:  # the last writer closes it
                f.closing = True
            elif f.fd >= 0:
                os.close(f.fd)
            self.outcomes.append(Outcome(os.fsdecode(b"/".join(f.parts)), status, error))
