"""``fastxfer send``: plan, stream, acknowledge, commit.

Theory of operation.  The control session names every file (put) and
learns, per file, its transfer id, the chunk size the server recorded and
the chunks the server already holds durably.  Missing chunks go into one
queue that N stream threads drain: each reads a chunk with pread, hashes
it, seals it and sends it; a reader thread per stream takes the server's
acknowledgements, which come only once the chunk is on stable storage.
Chunks the server already had are hashed locally in the background and
compared with the server's record; a mismatch is sent again.  A stream
that fails is reopened with backoff and fresh keys, and its unacknowledged
chunks go back into the queue.  When every chunk of a file is
acknowledged the main thread commits it with the hash-list digest, after
checking that the local file did not change meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
from collections.abc import Iterator
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass, field

from fastxfer.protocol import messages, wire
from fastxfer.protocol import layout
from fastxfer.protocol import paths
from fastxfer.errors import (BusyError, ConnectError, FxError, LocalFileError, PartialError, ProtocolError,
                     from_wire_number, from_wire_name)
from fastxfer.client.connect import ControlClient, Welcome, keep_alive, open_stream, send_sync
from fastxfer.client.walk import Entry

RETRIES = 8  # reopenings per stream before the send gives up
BACKOFF_MAX = 5.0
# Files this small travel in bundles: many to a frame, no staging, no
# round trip of their own, committed and made durable together.
SMALL_FILE = 256 << 10
BUNDLE_BYTES = 4 << 20
BUNDLE_FILES = 1024
IDLE_SYNC = 30.0  # an idle stream says so well inside the server's idle limit
# A path of at most this many characters is within paths.MAX_TOTAL bytes (4
# per character at most) and paths.MAX_DEPTH parts, whatever its characters.
SHORT_PATH = min(paths.MAX_TOTAL // 4, 2 * paths.MAX_DEPTH - 2)


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

    @property
    def count(self) -> int:
        return layout.chunk_count(self.src.size, self.chunk)


@dataclass(eq=False)
class Bundle:
    number: int
    entries: list[Source]
    error: FxError | None = None  # never set: a bundle's files fail one by one
    digests: dict[int, bytes] = field(default_factory=dict)  # a small file's SHA-256, by id of its entry

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


def whole_sha256(src: Source) -> bytes:
    h = hashlib.sha256()
    try:
        with open(src.local, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
    except OSError as exc:
        raise LocalFileError(f"{src.local}: {exc.strerror}") from None
    return h.digest()


def open_flags(src: Source) -> int:
    # O_NONBLOCK: a FIFO put where a file was listed must not hang the send.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    return flags if src.follow else flags | os.O_NOFOLLOW


def read_small_into(src: Source, target: memoryview) -> None:
    """Fill *target* (src.size bytes) with the whole of a small file, refused if
    it is not the file that was listed or if it changed while it was read."""
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
        raise LocalFileError(f"{src.local}: changed while it was sent; not stored (send it again)")


@dataclass
class Result:
    src: Source
    status: str  # stored, unchanged, failed
    error: FxError | None = None
    sha256: bytes | None = None
    version: str | None = None


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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
        if file_identity(os.fstat(self.fd)) != self.job.identity:
            os.close(self.fd)
            raise changed(self.job)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def changed(job: FileJob) -> LocalFileError:
    return LocalFileError(f"{job.src.local}: changed while it was sent; not stored (send it again)")


def batches(sources: list[Source], max_bytes: int = 1 << 20, first: int = messages.MAX_BATCH) -> Iterator[list[Source]]:
    """Slices that fit one control message: bounded in count and in bytes of names.

    With *first*, the first slice is that small and later ones double up to the
    bound, so that work on the answer to the first can start early.
    """
    batch: list[Source] = []
    size = 0
    limit = max(1, min(first, messages.MAX_BATCH))
    for s in sources:
        cost = 2 * (len(s.remote) + len(s.target or "")) + 200  # JSON may escape a name
        if batch and (len(batch) >= limit or size + cost > max_bytes):
            yield batch
            batch, size = [], 0
            limit = min(2 * limit, messages.MAX_BATCH)
        batch.append(s)
        size += cost
    if batch:
        yield batch


def tops_of(sources: list[Source]) -> list[str] | None:
    """Fewest paths at or below which every source lies, or None if more than a probe may name."""
    tops: list[str] = []
    current = None
    for s in sources:
        if current is not None and (s.remote == current or s.remote.startswith(current + "/")):
            continue
        current = s.remote
        tops.append(current)
        if len(tops) > messages.MAX_PROBE_TOPS:
            return None
    return tops


def wire_failure(answer: dict) -> FxError:
    return from_wire_name(str(answer.get("code")), str(answer.get("message")))


# Automatic tuning.  Near the server (a round trip under LONG_PATH_RTT) the
# CPUs set the pace: one stream per core is as fast as any more, and more cost
# CPU and memory (perf/README.md).  On a long path one TCP connection's window
# and its recovery from loss set the pace, and parallel connections add up
# (perf/README.md, perf/wan.py): start with LONG_PATH_STREAMS, then double
# while the measured rate still grows by TUNE_GAIN, up to AUTO_MAX_STREAMS.
# The looks are counted in round trips of the path, from the moment every
# stream is open: the first comes once TCP slow start is over, and decides
# from the path alone (is a shared queue filling?), not from a rate that slow
# start and whole-chunk counting still distort.
LONG_PATH_RTT = 0.002  # seconds: the least round trip of the control connection (tcpi_min_rtt)
LONG_PATH_STREAMS = 8
AUTO_MAX_STREAMS = 16
TUNE_RTTS = 8  # round trips between two looks: slow start to ~1,000 packets takes ~7
TUNE_MIN_INTERVAL = 0.25  # seconds: the rate of shorter spans is mostly chunk boundaries
TUNE_INTERVAL = 2.0  # seconds: the longest span between two looks (250 ms round trips)
TUNE_GAIN = 1.15
LINK_FULL_RTT = 1.25  # loaded / idle round trip beyond which the path is full
TUNE_PINGS = 3  # pings on the control connection per look at most; the least counts
LONG_PATH_MIN_CHUNK = 1 << 20


def auto_streams(work: int, long_path: bool) -> int:
    """Streams to start with for *work* pieces (chunks and bundles)."""
    cpus = os.cpu_count() or 2
    wanted = LONG_PATH_STREAMS if long_path else min(8, max(2, cpus))
    return max(1, min(wanted, work))


def look_interval(rtt: float) -> float:
    """Seconds of sending (every stream open) between two looks at the rate:
    TUNE_RTTS round trips, enough for new streams to leave TCP slow start
    (~log2(window / 10) round trips: 6 for 50 Mbit/s at 100 ms) and for the
    queue of a shared bottleneck to fill, within TUNE_MIN_INTERVAL and
    TUNE_INTERVAL."""
    return min(TUNE_INTERVAL, max(TUNE_MIN_INTERVAL, TUNE_RTTS * rtt))


def more_streams(rate: float, rate_before: float, streams: int, waiting: int, cpu_busy: bool,
                 link_full: bool) -> int:
    """Streams to add after a look (0: tuning is over).  At the first look
    (*rate_before* 0) as many as there are, at a later one as many again if the
    last growth paid (the rate grew by TUNE_GAIN); never beyond the cap or the
    pieces waiting, never when this process already keeps the CPUs busy, and
    never once the path's queue is filling (its round trip has grown): then
    more streams only add losses and delay, not speed.  The first look needs
    no rate: a chunk counts once the kernel took all of it, and a stream in
    slow start may not have finished its first one yet."""
    if cpu_busy or link_full:
        return 0
    if rate_before > 0 and rate < rate_before * TUNE_GAIN:
        return 0
    return max(0, min(streams, AUTO_MAX_STREAMS - streams, waiting))


def full_rtt(base_rtt: float) -> float:
    """The round trip beyond which a path whose idle round trip is *base_rtt* is full."""
    return base_rtt * LINK_FULL_RTT + 0.001


def link_full(base_rtt: float, loaded_rtts: list[float]) -> bool:
    """Whether every round trip under load (samples taken one after the other
    on the quiet control connection) is beyond full_rtt: a standing queue that
    every connection shares, not a passing burst (the least of the samples,
    as CoDel judges a queue; perf/README.md: single pings of 122 and 164 ms on
    the capped path, whose next ones took 103-110 ms against 100 idle)."""
    if not loaded_rtts or base_rtt <= 0:
        return False
    return min(loaded_rtts) > full_rtt(base_rtt)


def auto_chunk(size: int, long_path: bool) -> int:
    """On a long path a file is cut so that every stream tuning may open gets
    pieces of it; near the server big chunks cost the least CPU."""
    if not long_path:
        return layout.DEFAULT_CHUNK
    chunk = LONG_PATH_MIN_CHUNK
    while chunk < layout.DEFAULT_CHUNK and chunk * 2 * AUTO_MAX_STREAMS < size:
        chunk *= 2
    return chunk


class Sender:
    def __init__(self, control: ControlClient, welcome: Welcome, streams: int | None,
                 chunk: int | None, want_sha256: bool, show_progress: bool,
                 checksum: bool = False, dry_run: bool = False) -> None:
        self.control = control
        self.welcome = welcome
        self.streams_wanted = streams
        self.chunk = chunk
        self.want_sha256 = want_sha256
        self.show_progress = show_progress
        self.progress = None
        self.jobs: queue.Queue[tuple[FileJob, int]] = queue.Queue()
        self.by_fid: dict[bytes, FileJob] = {}
        self.cond = threading.Condition()
        self.ready: list[FileJob] = []
        self.fatal: FxError | None = None
        self.bytes_sent = 0
        self.bytes_resumed = 0  # of chunks the server already held (an earlier send was cut short)
        self.streams_used = self.streams_alive = 0
        self.bundles_left = 0
        self.planning = False
        self.threads: list[threading.Thread] = []
        self.files_done = self.files_total = 0
        self.bundle_numbers = itertools.count(1)
        self.bundle_results: list[Result] = []
        self.bundles: list[Bundle] = []
        self.settled: set[int] = set()
        self.checksum = checksum
        self.dry_run = dry_run
        self.forced: set[int] = set()  # files the server must not skip by size and time
        self.tops: list[str] | None = None  # asked with the first probe, then None
        self.nothing_stored = False  # the server has no file below any top: no probe needed
        self.long_path = getattr(control, "rtt", 0.0) >= LONG_PATH_RTT
        self.tuning = streams is None and self.long_path  # may add streams while sending
        self.tune_mark: tuple[float, int, float] | None = None  # (time, bytes sent, CPU time)
        self.tune_rate = 0.0  # rate before the last growth
        self.tune_skip = 0  # looks to let pass: new streams are still in TCP slow start
        self.tune_every = look_interval(getattr(control, "rtt", 0.0))
        self.opened_by: set[threading.Thread] = set()  # stream threads that connected at least once

    @property
    def streams_opened(self) -> int:
        """Streams that connected at least once: what the summary reports."""
        return len(self.opened_by)

    # -------------------------------------------------------------- plan

    def run(self, sources: list[Source]) -> list[Result]:
        results: list[Result] = []
        files: list[FileJob] = []
        kept = []
        for s in sources:  # a name the server would refuse fails alone, here
            # The walk's names come from the filesystem: only a long path can
            # break the server's rules (depth, bytes), so short ones skip the check.
            if len(s.remote) > SHORT_PATH:
                try:
                    paths.split(s.remote)
                except FxError as exc:
                    results.append(Result(s, "failed", exc))
                    continue
            kept.append(s)
        sources = kept
        self.dirs = [s for s in sources if s.kind == "dir"]
        if self.dry_run or self.checksum:
            verdicts = self._ask(sources)
            if self.dry_run:
                return results + verdicts
            results += [r for r in verdicts if r.status != "send"]
            sources = [r.src for r in verdicts if r.status == "send"]
            self.forced = {id(s) for s in sources}
        small = [s for s in sources if s.kind == "file" and s.size <= SMALL_FILE]
        self.tops = tops_of(sources)
        large = [s for s in sources if not (s.kind == "file" and s.size <= SMALL_FILE)]
        # Planning and sending overlap: streams start with the first work, and
        # small files go out bundle by bundle while later ones are still being
        # asked about.
        self.planning = True
        for batch in batches(large):
            results += self._put(batch, files)
        self.max_chunk = max((f.chunk for f in files), default=layout.MIN_CHUNK)
        total = sum(layout.chunk_span(job.src.size, job.chunk, i)[1] for job, i in list(self.jobs.queue))
        from fastxfer.cli.report import make_progress  # until the engine emits events

        self.progress = make_progress(total + sum(s.size for s in small), self.show_progress)
        self.files_total = len(files) + len(small)
        background = [threading.Thread(target=self._each, args=(self._check_have, files), daemon=True)]
        if self.want_sha256:
            background.append(threading.Thread(target=self._each, args=(self._whole_sha256, files), daemon=True))
        for t in background:
            t.start()
        estimate = self.jobs.qsize() + (max(sum(s.size for s in small) // BUNDLE_BYTES,
                                            len(small) // BUNDLE_FILES) + 1 if small else 0)
        self.streams_wanted = min(self.streams_wanted or auto_streams(estimate, self.long_path), max(1, estimate))
        # At least one stream while resumed chunks are being checked: one that
        # differs from the server's record has to be sent again.
        if self.jobs.qsize() or any(f.have for f in files):
            self._start_streams()
        for batch in batches(small, first=BUNDLE_FILES // 4):
            results += self._probe(batch)
        with self.cond:
            self.planning = False
            self.cond.notify_all()
        threads = self.threads
        results += self._commit_loop(files)
        with self.cond:
            while self.bundles_left and self.fatal is None:
                self.cond.wait(self._tend_wait())
                self._tend()
            results += self.bundle_results
            # Bundles that never got an answer: each of their files is reported.
            for bundle in self.bundles:
                if bundle.number not in self.settled:
                    results += [Result(src, "failed", self.fatal or PartialError("not sent"))
                                for src in bundle.entries]
        for _ in threads:  # wake idle streams now rather than at their next poll
            self.jobs.put((None, -1))
        for t in threads + background:
            t.join(timeout=5)
        if self.dirs and self.fatal is None:
            for batch in batches(self.dirs):
                items = [{"path": d.remote, "mode": d.mode, "mtime_ns": d.mtime_ns} for d in batch]
                self.control.call({"t": "dirs", "items": items}, "dirs_ok")
        return results

    def _call_batch(self, kind: str, reply: str, items: list[dict]) -> list[dict]:
        """One control call naming many files; one answer object per file, in order."""
        answers = messages.get_list(self.control.call({"t": kind, "files": items}, reply), "files")
        if len(answers) != len(items):
            raise ProtocolError("server answered a different number of files")
        return [messages.get_obj(a) for a in answers]

    def _ask(self, sources: list[Source]) -> list[Result]:
        """What would move: "send", "unchanged" or "failed" per entry, nothing sent.

        With --checksum every file is hashed here and compared by content.
        """
        results: list[Result] = []
        files = [s for s in sources if s.kind == "file"]
        results += [Result(s, "send") for s in sources if s.kind != "file"]
        for batch in batches(files):
            items = []
            for s in batch:
                item = {"path": s.remote, "size": s.size, "mtime_ns": s.mtime_ns}
                if self.checksum:
                    try:
                        item["sha256"] = whole_sha256(s).hex()
                    except LocalFileError:
                        pass  # it will fail with its reason when sent
                items.append(item)
            for src, answer in zip(batch, self._call_batch("probe", "probe_ok", items)):
                if answer.get("t") == "error":
                    results.append(Result(src, "failed", wire_failure(answer)))
                else:
                    results.append(Result(src, "unchanged" if answer.get("status") == "unchanged" else "send"))
        return results

    def _probe(self, batch: list[Source]) -> list[Result]:
        """Ask which small files changed; bundle those, report the rest."""
        # --checksum asked already; nothing to ask when the server has no file below our tops.
        ask = [] if self.nothing_stored else [s for s in batch if id(s) not in self.forced]
        answers: dict[int, dict] = {}
        if ask:
            msg: dict = {"t": "probe", "files": [
                {"path": s.remote, "size": s.size, "mtime_ns": s.mtime_ns} for s in ask]}
            if self.tops is not None:  # first probe only
                msg["tops"], self.tops = self.tops, None
            reply = self.control.call(msg, "probe_ok")
            got = messages.get_list(reply, "files")
            if len(got) != len(ask):
                raise ProtocolError("server answered a different number of files")
            answers = {id(s): messages.get_obj(a) for s, a in zip(ask, got)}
            self.nothing_stored = reply.get("empty") is True
        results, bundle, size = [], [], 0
        for src in batch:
            answer = answers.get(id(src), {"t": "ok", "status": "send"})
            if answer.get("t") == "error":
                results.append(Result(src, "failed", wire_failure(answer)))
                self._discount(src)
            elif answer.get("status") == "unchanged":
                results.append(Result(src, "unchanged"))
                self._discount(src)
            else:
                if bundle and (size + src.size > BUNDLE_BYTES or len(bundle) >= BUNDLE_FILES):
                    self._queue_bundle(bundle)
                    bundle, size = [], 0
                bundle.append(src)
                size += src.size
        if bundle:
            self._queue_bundle(bundle)
        return results

    def _queue_bundle(self, entries: list[Source]) -> None:
        with self.cond:
            self.bundles_left += 1
            bundle = Bundle(next(self.bundle_numbers), entries)
            self.bundles.append(bundle)
        self.jobs.put((bundle, -1))
        self._start_streams()

    def _start_streams(self) -> None:
        """Once, with the first piece of work."""
        if self.threads:
            return
        self._spawn_streams(self.streams_wanted)

    def _spawn_streams(self, count: int) -> None:
        added = [threading.Thread(target=self._stream, daemon=True) for _ in range(count)]
        self.streams_used += count
        self.streams_alive += count
        self.threads.extend(added)  # extended in place: run() holds this list
        for t in added:
            t.start()

    def _discount(self, src: Source) -> None:
        """A file found not to need sending leaves the bar's totals."""
        self.files_total -= 1
        if self.progress is not None and src.size:
            self.progress.total -= src.size
            self.progress.refresh()

    def _bundle_done(self, bundle: Bundle, statuses: list[tuple[int, int, str]], failed: list[Result]) -> None:
        sent = [e for e in bundle.entries if not any(f.src is e for f in failed)]
        if len(statuses) != len(sent):
            raise ProtocolError("server answered a different number of bundled files")
        with self.cond:
            self.bundle_results += failed
            for src, (status, code, message) in zip(sent, statuses):
                if status == 2:
                    self.bundle_results.append(Result(src, "failed", from_wire_number(code, message)))
                else:
                    self.bundle_results.append(Result(src, "stored" if status == 0 else "unchanged",
                                                      sha256=bundle.digests.get(id(src)) if self.want_sha256 else None))
            self.bundles_left -= 1
            self.settled.add(bundle.number)
            self._files_done(len(bundle.entries))
            self.cond.notify_all()

    def _files_done(self, count: int) -> None:
        self.files_done += count
        if self.progress is not None and self.files_total > 1:
            self.progress.set_postfix_str(f"{self.files_done}/{self.files_total} files", refresh=False)

    def _sent(self, size: int) -> None:
        with self.cond:
            self.bytes_sent += size
        if self.progress is not None:
            self.progress.update(size)

    @staticmethod
    def _pack_bundle(bundle: Bundle, buf: bytearray) -> tuple[bytes, int, list[Result]]:
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
                    read_small_into(src, view[start:end])
                except LocalFileError as exc:
                    failed.append(Result(src, "failed", exc))
                    continue  # the next file takes its place
                wire.pack_bundle_entry_head(buf, pos, name, src.size, src.mtime_ns, src.mode)
                digest = hashlib.sha256(view[start:end]).digest()
                view[end : end + wire.DIGEST] = digest
                bundle.digests[id(src)] = digest
                pos = end + wire.DIGEST
                count += 1
        return wire.bundle_header(bundle.number, count), pos, failed

    def _put(self, batch: list[Source], files: list[FileJob]) -> list[Result]:
        items, opened = [], []
        results = []
        for src in batch:
            chunk = layout.choose_chunk(src.size, self.chunk or auto_chunk(src.size, self.long_path))
            item = {"path": src.remote, "size": src.size, "mtime_ns": src.mtime_ns,
                    "mode": src.mode, "chunk": chunk, "force": id(src) in self.forced}
            if src.kind == "file":
                try:
                    st = os.stat(src.local, follow_symlinks=src.follow)
                except OSError as exc:
                    results.append(Result(src, "failed", LocalFileError(f"{src.local}: {exc.strerror}; not stored")))
                    continue
                if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
                    # Listed a moment ago; what counts is what is sent from now on.
                    src.size, src.mtime_ns = st.st_size, st.st_mtime_ns
                    item.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
                opened.append(FileJob(src, file_identity(st), chunk=chunk))
            else:
                item.update(kind=src.kind, target=src.target)
                opened.append(FileJob(src, (0, 0, 0, 0), chunk=chunk))
            items.append(item)
        if not items:
            return results
        for job, answer in zip(opened, self._call_batch("put", "put_ok", items)):
            if answer.get("t") == "error":
                results.append(Result(job.src, "failed", wire_failure(answer)))
                continue
            if job.src.kind != "file" or answer.get("status") == "unchanged":
                status = str(answer.get("status"))
                results.append(Result(job.src, "unchanged" if status == "unchanged" else "stored"))
                continue
            job.fid = messages.get_hex(answer, "fid", 16)
            job.chunk = messages.get_int(answer, "chunk", layout.MIN_CHUNK, wire.MAX_CHUNK)
            if not layout.valid_layout(job.src.size, job.chunk):
                raise ProtocolError("server recorded an impossible chunk size")
            have = messages.parse_have(messages.get_str(answer, "have", messages.MAX_CONTROL * 16), job.count)
            job.digests = [None] * job.count
            job.waiting = set(range(job.count))
            job.have = have
            self.by_fid[job.fid] = job
            files.append(job)
            for i in range(job.count):
                if i not in have:
                    self.jobs.put((job, i))
            if not job.waiting:
                self.ready.append(job)
        return results

    # ---------------------------------------------------- local hashing

    @staticmethod
    def _each(work, files: list[FileJob]) -> None:
        for job in files:
            work(job)

    def _read(self, job: FileJob, index: int, view: memoryview) -> int:
        offset, length = layout.chunk_span(job.src.size, job.chunk, index)
        got = 0
        with LocalFile(job) as fd:
            while got < length:
                try:
                    n = os.preadv(fd, [view[got:length]], offset + got)
                except OSError as exc:
                    raise LocalFileError(f"{job.src.local}: {exc.strerror}; not stored") from None
                if n == 0:
                    raise changed(job)
                got += n
        return length

    def _check_have(self, job: FileJob) -> None:
        """Hash the chunks the server already holds; resend any that differ."""
        have = job.have
        buf = memoryview(bytearray(job.chunk))
        try:
            for index, theirs in sorted(have.items()):
                n = self._read(job, index, buf)
                mine = hashlib.sha256(buf[:n]).digest()
                if mine == theirs:
                    with self.cond:
                        self.bytes_resumed += n
                    self._done(job, index, mine)
                else:
                    self.jobs.put((job, index))
        except FxError as exc:
            self._fail_file(job, exc)

    def _whole_sha256(self, job: FileJob) -> None:
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
            self._fail_file(job, LocalFileError(f"{job.src.local}: {exc.strerror}"))
            return
        except FxError as exc:
            self._fail_file(job, exc)
            return
        with self.cond:
            job.sha256 = h.digest()
            self.cond.notify_all()

    # ------------------------------------------------------------ state

    def _done(self, job: FileJob, index: int, digest: bytes) -> None:
        with self.cond:
            if job.digests and job.digests[index] is None:
                job.digests[index] = digest
            job.waiting.discard(index)
            if not job.waiting and job.error is None:
                self.ready.append(job)
                self.cond.notify_all()

    def _fail_file(self, job: FileJob, exc: FxError) -> None:
        with self.cond:
            if job.error is None:
                job.error = exc
                self.ready.append(job)
                self.cond.notify_all()

    def _fail_all(self, exc: FxError) -> None:
        with self.cond:
            if self.fatal is None:
                self.fatal = exc
            self.cond.notify_all()

    def _finished(self) -> bool:
        with self.cond:
            return self.fatal is not None or (not self.planning and
                not self.bundles_left and all(not f.waiting or f.error for f in self.by_fid.values()))

    # ------------------------------------------------------------ streams

    def _stream(self) -> None:
        failures = 0
        while not self._finished():
            inflight: dict[tuple[bytes, int], tuple[FileJob, int, bytes]] = {}
            progressed = threading.Event()
            try:
                self._stream_once(inflight, progressed)
                return
            except BusyError as exc:
                for job, index, _digest in inflight.values():
                    self.jobs.put((job, index))
                with self.cond:  # the server allows fewer streams: let the others carry on
                    if self.streams_alive > 1:
                        self.streams_alive -= 1
                        return
                failures += 1
                if failures > RETRIES:
                    self._fail_all(exc)
                    return
                time.sleep(min(BACKOFF_MAX, 0.2 * 2 ** (failures - 1)))
            except (ConnectError, ProtocolError) as exc:
                for job, index, _digest in inflight.values():
                    self.jobs.put((job, index))
                # The budget is per outage: a connection that got work done resets it.
                failures = 1 if progressed.is_set() else failures + 1
                if failures > RETRIES:
                    self._fail_all(ConnectError(f"{exc.message} (gave up after {RETRIES} reconnects; "
                                                "run the same send again to resume)"))
                    return
                time.sleep(min(BACKOFF_MAX, 0.2 * 2 ** (failures - 1)))
            except FxError as exc:
                self._fail_all(exc)
                return
            except Exception as exc:  # noqa: BLE001 - never leave the main thread waiting
                self._fail_all(FxError(f"a stream failed unexpectedly: {exc!r}"))
                raise

    def _stream_once(self, inflight: dict, progressed: threading.Event) -> None:
        host, port = self.control.host, self.control.port
        # The control connection's latest welcome: after a server restart the first one's ticket is void.
        conn, sealer, opener = open_stream(host, port, self.control.welcome or self.welcome)
        with self.cond:
            self.opened_by.add(threading.current_thread())
        lock = threading.Lock()
        acked = threading.Event()
        reader_error: list[FxError] = []

        def reader() -> None:
            try:
                while True:
                    # Wait for the next frame here, not inside a read, so an
                    # idle stream is not mistaken for a dead one.
                    while not conn.readable(1.0):
                        if stop.is_set():
                            return
                    kind, rest = wire.parse_prefix(conn.recv_exact(wire.FRAME_PREFIX))
                    body = conn.recv_exact(rest)
                    head = wire.split_rest(kind, body)
                    plain = opener.open(head.aad, body[len(head.header):])
                    if kind == wire.BUNDLE_ACK:
                        number, statuses = wire.parse_bundle_ack(head.header, plain)
                        with lock:
                            entry = inflight.pop((b"bundle", number), None)
                        if entry:
                            self._bundle_done(entry[0], statuses, entry[2])
                        progressed.set()
                        acked.set()
                    elif kind == wire.ACK:
                        for fid, offset in wire.parse_acks(head.header, plain):
                            with lock:
                                entry = inflight.pop((fid, offset), None)
                            if entry:
                                job, index, digest = entry
                                self._done(job, index, digest)
                        progressed.set()
                        acked.set()
                    elif kind == wire.ERROR:
                        code, message = wire.parse_error(plain)
                        raise from_wire_number(code, message)
                    else:
                        raise ProtocolError(f"unexpected frame kind {kind} from server")
            except FxError as exc:
                reader_error.append(exc)
                acked.set()
                conn.abort()  # the sender may be blocked on a peer that no longer reads

        stop = threading.Event()
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        conn.settimeout(120.0)
        plain = bytearray(self.max_chunk + wire.DIGEST)
        out = bytearray(self.max_chunk + wire.DIGEST + wire.TAG)
        packed = bytearray()  # a bundle's plaintext; grows to the largest bundle
        synced = True
        last_sent = time.monotonic()
        try:
            while True:
                if reader_error:
                    raise reader_error[0]
                try:
                    job, index = self.jobs.get(timeout=0.05)
                except queue.Empty:
                    with lock:
                        pending = bool(inflight)
                    if not pending and self._finished():
                        return
                    if (pending and not synced) or time.monotonic() - last_sent > IDLE_SYNC:
                        # Make what was sent durable; an idle stream also says it is
                        # alive, well inside the server's idle limit.
                        send_sync(conn, sealer)
                        synced, last_sent = True, time.monotonic()
                    acked.wait(0.2)
                    acked.clear()
                    with lock:  # the last acknowledgement may have just come: leave at once
                        pending = bool(inflight)
                    if not pending and self._finished():
                        return
                    continue
                if job is None:  # the main thread's wake-up: all may be done
                    if self._finished():
                        return
                    continue
                if job.error is not None or self.fatal is not None:
                    continue
                if isinstance(job, Bundle):
                    header, used, failed = self._pack_bundle(job, packed)
                    if len(failed) == len(job.entries):  # nothing left to send: settle it here
                        self._bundle_done(job, [], failed)
                        continue
                    if len(out) < used + wire.TAG:
                        out.extend(bytes(used + wire.TAG - len(out)))
                    with memoryview(packed) as p, memoryview(out) as o:
                        sealer.seal_into(bytes([wire.BUNDLE]) + header, p[:used], o[: used + wire.TAG])
                    with lock:
                        inflight[(b"bundle", job.number)] = (job, -1, failed)
                    with memoryview(out) as o:
                        conn.send(wire.frame_prefix(wire.BUNDLE, header, used), o[: used + wire.TAG])
                    last_sent = time.monotonic()
                    self._sent(job.size)  # file bytes, as the bar counts them
                    continue
                try:
                    length = self._read(job, index, memoryview(plain))
                except LocalFileError as exc:
                    self._fail_file(job, exc)
                    continue
                view = memoryview(plain)
                digest = hashlib.sha256(view[:length]).digest()
                plain[length : length + wire.DIGEST] = digest
                offset = index * job.chunk
                header = wire.data_header(job.fid, offset, length)
                sealed_len = length + wire.DIGEST + wire.TAG
                sealer.seal_into(bytes([wire.DATA]) + header,
                                 view[: length + wire.DIGEST], memoryview(out)[:sealed_len])
                with lock:
                    inflight[(job.fid, offset)] = (job, index, digest)
                conn.send(wire.frame_prefix(wire.DATA, header, length + wire.DIGEST),
                          memoryview(out)[:sealed_len])
                synced = False
                last_sent = time.monotonic()
                self._sent(length)
                if self.jobs.empty() or index == job.count - 1:
                    send_sync(conn, sealer)
                    synced = True
        except ConnectError:
            # When the server ends a stream with an answer (disk full, refused...)
            # that answer counts, not the broken pipe the sender met: give the
            # reader a moment to read it.
            rt.join(1.0)
            if reader_error:
                raise reader_error[0] from None
            raise
        finally:
            stop.set()
            conn.close()

    # ------------------------------------------------------------ commit

    def _commit_loop(self, files: list[FileJob]) -> list[Result]:
        results: list[Result] = []
        left = set(files)
        while left:
            with self.cond:
                while not self.ready and self.fatal is None:
                    self.cond.wait(self._tend_wait())
                    if not self.ready:
                        self._tend()
                if self.fatal is not None and not self.ready:
                    break
                ready = [f for f in self.ready if f.error or not self.want_sha256 or f.sha256]
                if not ready:  # waiting for whole-file hashes: keep the session alive meanwhile
                    self.cond.wait(0.1)
                    self._tend()
                    continue
                self.ready = [f for f in self.ready if f not in ready]
            batch = []
            for job in ready:
                left.discard(job)
                if job.error is None:
                    job.error = self._changed(job)
                if job.error is not None:
                    results.append(Result(job.src, "failed", job.error))
                    continue
                batch.append(job)
            for start in range(0, len(batch), messages.MAX_BATCH):
                results += self._commit(batch[start : start + messages.MAX_BATCH])
                self._files_done(len(batch[start : start + messages.MAX_BATCH]))
        for job in left:
            results.append(Result(job.src, "failed", self.fatal or PartialError("not sent")))
        return results

    def _tend(self) -> None:
        """What the main thread does while it waits (holding self.cond)."""
        self._check_control()
        self._keep_alive()
        self._tune()

    def _tune(self) -> None:
        """On a long path, add streams while they still add speed (holding self.cond)."""
        if not self.tuning or not self.threads:
            return
        now, cpu = time.monotonic(), time.process_time()
        if self.tune_mark is None or len(self.opened_by) < self.streams_alive:
            self.tune_mark = (now, self.bytes_sent, cpu)  # the span starts once every stream is open
            return
        then, sent, cpu_then = self.tune_mark
        if now - then < self.tune_every:
            return
        rate = (self.bytes_sent - sent) / (now - then)
        self.tune_mark = (now, self.bytes_sent, cpu)
        if self.tune_skip:
            self.tune_skip -= 1
            return
        busy = (cpu - cpu_then) / (now - then) >= 0.8 * (os.cpu_count() or 1)
        # Is a queue building that every connection shares?  The streams' own
        # round trips cannot tell: a per-connection cap fills a queue of its own
        # per stream.  The quiet control connection can (up to TUNE_PINGS pings a
        # look, until one comes back in time).
        base = getattr(self.control, "rtt", 0.0)
        full = link_full(base, self._control_rtt(TUNE_PINGS, full_rtt(base)))
        more = more_streams(rate, self.tune_rate, self.streams_used, self.jobs.qsize(), busy, full)
        if not more:
            self.tuning = False  # this is as fast as more streams would make it
            return
        self.tune_rate = rate
        self.tune_skip = 1  # the new streams' slow start would pass for growth
        self.tune_mark = None
        self._spawn_streams(more)
        self.tuning = self.streams_used < AUTO_MAX_STREAMS

    def _tend_wait(self) -> float:
        """How long the main thread may wait before it tends again: at most
        0.5 s, less when a look at the rate is due sooner."""
        if not self.tuning or not self.threads:
            return 0.5
        if self.tune_mark is None or len(self.opened_by) < self.streams_alive:
            return min(0.5, max(0.05, self.tune_every / TUNE_RTTS))  # about a round trip
        return min(0.5, max(0.01, self.tune_mark[0] + self.tune_every - time.monotonic()))

    def _control_rtt(self, count: int, enough: float) -> list[float]:
        """Up to *count* pings on the control connection, one after the other,
        each timed, until one takes at most *enough* seconds (holding self.cond,
        released meanwhile); a ping that fails counts as a full path."""
        self.cond.release()
        rtts: list[float] = []
        try:
            while len(rtts) < count and not (rtts and rtts[-1] <= enough):
                started = time.monotonic()
                self.control.call({"t": "ping"}, "pong")
                self.control.last_ping = time.monotonic()
                rtts.append(self.control.last_ping - started)
            return rtts
        except FxError:
            return rtts + [float("inf")] * (count - len(rtts))
        finally:
            self.cond.acquire()

    def _keep_alive(self) -> None:
        """Ping the server, without holding the lock the stream threads need."""
        self.cond.release()
        try:
            keep_alive(self.control)
        except FxError as exc:
            self.fatal = self.fatal or ConnectError(
                f"the server ended the session ({exc.message}); run the same send again to resume")
        finally:
            self.cond.acquire()

    def _check_control(self) -> None:
        """A control connection the server ended is opened again at once (holding
        self.cond, released meanwhile); the server's own error, or a reconnection
        that failed, ends the send."""
        chan = self.control.chan
        if self.fatal is not None or (chan is not None and not chan.conn.readable(0)):
            return
        self.cond.release()
        try:
            self.control.check()
            failure = None
        except FxError as exc:
            failure = exc if not isinstance(exc, (ConnectError, ProtocolError)) else ConnectError(
                f"the server ended the session ({exc.message}); run the same send again to resume")
        finally:
            self.cond.acquire()
        if failure is not None:
            self.fatal = self.fatal or failure
            self.cond.notify_all()

    @staticmethod
    def _changed(job: FileJob) -> FxError | None:
        try:
            st = os.stat(job.src.local, follow_symlinks=job.src.follow)
        except OSError as exc:
            return LocalFileError(f"{job.src.local}: {exc.strerror} while it was sent; not stored")
        return changed(job) if file_identity(st) != job.identity else None

    def _holds(self, job: FileJob, digest: str) -> bool:
        """Whether the server's manifest records this file with this digest."""
        reply = self.control.call({"t": "list", "prefix": job.src.remote, "versions": False}, "list_ok")
        return any(isinstance(e, dict) and e.get("path") == job.src.remote and e.get("digest") == digest
                   and e.get("size") == job.src.size for e in messages.get_list(reply, "entries", 1 << 20))

    def _commit(self, batch: list[FileJob]) -> list[Result]:
        items = []
        for job in batch:
            digest = layout.file_digest(job.src.size, job.chunk, job.digests)  # type: ignore[arg-type]
            items.append({"fid": job.fid.hex(), "digest": digest.hex(),
                          "sha256": job.sha256.hex() if job.sha256 else None})
        try:
            answers = self._call_batch("commit", "committed", items)
        except ConnectError:
            # The answer was lost with the connection: the server may have
            # committed.  Ask (on a new connection) which files its manifest now
            # records with exactly this content (the hash list's digest); commit
            # the others again: their chunks are still staged.
            again = [i for i, job in enumerate(batch) if not self._holds(job, items[i]["digest"])]
            answers = [{"t": "ok", "path": job.src.remote, "status": "stored", "version": None}
                       for job in batch]
            if again:
                for i, a in zip(again, self._call_batch("commit", "committed", [items[i] for i in again])):
                    answers[i] = a
        results = []
        for job, answer in zip(batch, answers):
            if answer.get("t") == "error":
                results.append(Result(job.src, "failed", wire_failure(answer)))
            else:
                results.append(Result(job.src, str(answer.get("status")), sha256=job.sha256,
                                      version=answer.get("version")))
        return results
