"""``fastxfer send``: plan, stream, acknowledge, commit (client/commit.py).

Theory of operation.  The control session names every file (put, probe:
client/plan.py) and learns, per file, its transfer id, the chunk size the
server recorded and the chunks the server already holds durably.  Missing
chunks go into one queue that N stream threads drain (client/send_stream.py);
the server acknowledges a piece only once it is on stable storage.  Chunks
the server already had are hashed locally in the background and compared
with the server's record; a mismatch is sent again.  When every chunk of a
file is acknowledged the main thread commits it with the hash-list digest,
after checking that the local file did not change meanwhile; while it waits
it keeps the control connection alive and, on a long path, adds streams
while they add speed (client/tuning.py).
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import time

from fastxfer.errors import (ChangedError, ConnectError, FxError, GoneError, PartialError, ProtocolError,
                             from_wire_number)
from fastxfer.protocol import layout, messages
from fastxfer.client import events
from fastxfer.net.conn import Conn
from fastxfer.net.pace import Pacer
from fastxfer.client.connect import ControlClient, Welcome, keep_alive
from fastxfer.protocol.snapshot import SPECIAL
from fastxfer.client.jobs import (Bundle, FileJob, Result, Source, changed_since, hash_list, job_sha256,
                                  read_chunk)
from fastxfer.client.plan import (BUNDLE_BYTES, BUNDLE_FILES, Planner, batches, is_small, refuse_bad_names,
                                  tops_of)
from fastxfer.client.commit import commit
from fastxfer.client.gone import settle as settle_gone
from fastxfer.client.send_stream import SendStream
from fastxfer.client.tuning import LONG_PATH_RTT, TEND_WAIT, Tuner, auto_chunk, auto_streams, control_rtts


class Shared:
    """What the main thread and the stream threads share, under one condition.

    A stream settles pieces here (acked, bundle_done), the background hashing
    settles resumed chunks and whole-file digests; the main thread takes the
    files that are ready to commit and waits here for the rest.
    """

    def __init__(self, sink: events.Sink, want_sha256: bool) -> None:
        self.cond = threading.Condition()
        self.sink = sink
        self.want_sha256 = want_sha256
        self.work: queue.Queue[tuple[FileJob | Bundle | None, int]] = queue.Queue()
        self.ready: list[FileJob] = []  # files whose every chunk is durable and checked, or that failed
        self.unsent = 0  # files with chunks not yet durable, and no failure
        self.fatal: FxError | None = None
        self.planning = True
        self.bundles_left = 0
        self.bundle_results: list[Result] = []
        self.settled: set[int] = set()  # numbers of bundles the server answered
        self.outcome_given = False  # bundle_outcome has counted the bundles not answered as lost
        self.bytes_sent = 0
        self.bytes_resumed = 0  # of chunks the server already held (an earlier send was cut short)
        self.bytes_linked = 0  # of files that are copies of what the server holds: not sent
        self.streams_alive = 0
        self.opened_by: set[threading.Thread] = set()  # stream threads that connected at least once
        self.conns: set[Conn] = set()  # the open streams' connections, for their TCP stalls
        self.stalls_closed = (0.0, 0.0)  # what the closed ones had seen
        self.files_done = self.files_total = 0
        self.pacer: Pacer | None = None  # --bwlimit: one bucket over every stream

    def add_file(self, job: FileJob) -> None:
        """A file to send: its missing chunks are queued (before any stream runs)."""
        if job.linked is not None:  # a copy of what the server holds: straight to commit
            with self.cond:
                self.bytes_linked += job.src.size
                self.ready.append(job)
            return
        for i in range(job.count):
            if i not in job.have:
                self.work.put((job, i))
        with self.cond:
            if job.waiting:
                self.unsent += 1
            else:
                self.ready.append(job)

    def done(self, job: FileJob, index: int, digest: bytes) -> None:
        with self.cond:
            self._done(job, index, digest)

    def acked(self, entries: list[tuple[FileJob, int, bytes]]) -> None:
        with self.cond:
            for job, index, digest in entries:
                self._done(job, index, digest)

    def _done(self, job: FileJob, index: int, digest: bytes) -> None:
        if job.digests and job.digests[index] is None:
            job.digests[index] = digest
        if index not in job.waiting:
            return
        job.waiting.discard(index)
        if not job.waiting and job.error is None:
            self.unsent -= 1
            self.ready.append(job)
            self.cond.notify_all()

    def fail_file(self, job: FileJob, exc: FxError) -> None:
        with self.cond:
            if job.error is None:
                job.error = exc
                if job.waiting:
                    self.unsent -= 1
                self.ready.append(job)
                self.cond.notify_all()

    def hashed(self, job: FileJob, digest: bytes) -> None:
        with self.cond:
            job.sha256 = digest
            self.cond.notify_all()

    def fail_all(self, exc: FxError) -> None:
        with self.cond:
            if self.fatal is None:
                self.fatal = exc
            self.cond.notify_all()

    def finished(self) -> bool:
        with self.cond:
            return self.fatal is not None or (not self.planning and not self.bundles_left and not self.unsent)

    def end_planning(self) -> None:
        with self.cond:
            self.planning = False
            self.cond.notify_all()

    def requeue(self, pieces: list) -> None:
        """A lost stream's unacknowledged chunks and bundles, to be sent again."""
        size = 0
        for job, index, _ in pieces:
            self.work.put((job, index))
            size += job.size if isinstance(job, Bundle) else layout.chunk_span(job.src.size, job.chunk, index)[1]
        if size:
            self.sink(events.Requeued(size))

    def add_streams(self, count: int) -> None:
        with self.cond:
            self.streams_alive += count

    def stream_opened(self, conn: Conn) -> None:
        with self.cond:
            self.opened_by.add(threading.current_thread())
            self.conns.add(conn)

    def stream_closed(self, conn: Conn) -> None:
        seen = conn.window_stalls() or (0.0, 0.0)
        with self.cond:
            if conn in self.conns:
                self.conns.discard(conn)
                self.stalls_closed = (self.stalls_closed[0] + seen[0], self.stalls_closed[1] + seen[1])

    def window_stalls(self) -> tuple[float, float]:
        """(busy, held back by the server's window) seconds of every stream so far."""
        with self.cond:
            conns, (busy, held) = list(self.conns), self.stalls_closed
        for conn in conns:
            seen = conn.window_stalls() or (0.0, 0.0)
            busy, held = busy + seen[0], held + seen[1]
        return busy, held

    def all_open(self) -> bool:
        with self.cond:
            return len(self.opened_by) >= self.streams_alive

    def leave(self) -> bool:
        """A stream the server refused for now: True if it may end, the others carrying on."""
        with self.cond:
            if self.streams_alive > 1:
                self.streams_alive -= 1
                return True
            return False

    def sent(self, size: int) -> None:
        with self.cond:
            self.bytes_sent += size
        self.sink(events.Moved(size))

    def resumed(self, size: int) -> None:
        with self.cond:
            self.bytes_resumed += size

    def discount(self, src: Source) -> None:
        """A file found not to need sending leaves the totals."""
        with self.cond:
            self.files_total -= 1
        self.sink(events.Unneeded(src.size))

    def files_finished(self, count: int) -> None:
        with self.cond:
            self.files_done += count
            done, total = self.files_done, self.files_total
        self.sink(events.FilesDone(done, total))

    def settle(self, results: list[Result]) -> list[Result]:
        """Results now final, told to the sink one by one (and returned)."""
        for r in results:
            self.sink(events.Settled(r))
        return results

    def add_bundle(self) -> None:
        with self.cond:
            self.bundles_left += 1

    def bundle_done(self, bundle: Bundle, statuses: list[tuple[int, int, str]], failed: list[Result]) -> None:
        sent = [e for e in bundle.entries if not any(f.src is e for f in failed)]
        if len(statuses) != len(sent):
            raise ProtocolError("server answered a different number of bundled files")
        results = list(failed)
        for src, (status, code, message) in zip(sent, statuses):
            if status == 2:
                results.append(Result(src, "failed", from_wire_number(code, message)))
            else:  # 1: sent, and the server held this very content (a new time or mode, or a repair)
                results.append(Result(src, "stored", how="" if status == 0 else "same",
                                      sha256=bundle.digests.get(id(src)) if self.want_sha256 else None,
                                      changed=id(src) in bundle.changed, in_snapshot=bundle.snap != 0))
        with self.cond:
            late = self.outcome_given  # the send's results already count it as lost: told once, as that
            self.bundle_results += results
            self.bundles_left -= 1
            self.settled.add(bundle.number)
            self.cond.notify_all()
        if not late:
            self.settle(results)
        self.files_finished(len(bundle.entries))

    def take_ready(self, timeout: float) -> list[FileJob] | None:
        """Files ready to commit (waiting up to *timeout* for one), or None once
        the send failed as a whole and nothing is left to commit."""
        with self.cond:
            if not self._committable() and (self.fatal is None or self.ready):
                self.cond.wait(timeout)
            if self.fatal is not None and not self.ready:
                return None
            ready = self._committable()
            if ready:
                self.ready = [f for f in self.ready if f not in ready]
            return ready

    def _committable(self) -> list[FileJob]:
        # With --sha256 a file also waits for its whole-file hash.
        return [f for f in self.ready if f.error or not self.want_sha256 or f.sha256]

    def bundles_pending(self, timeout: float) -> bool:
        """Whether bundles still wait for their answer, after waiting up to *timeout* for one."""
        with self.cond:
            if self.bundles_left and self.fatal is None:
                self.cond.wait(timeout)
            return bool(self.bundles_left) and self.fatal is None

    def bundle_outcome(self, bundles: list[Bundle]) -> list[Result]:
        """Each bundled file's result; those of bundles that never got an answer fail."""
        with self.cond:
            self.outcome_given = True
            results = list(self.bundle_results)
            lost = [Result(src, "failed", self.fatal or PartialError("not sent"))
                    for bundle in bundles if bundle.number not in self.settled for src in bundle.entries]
        return results + self.settle(lost)


class Sender:
    """One send: its plan, its streams, and the main thread's commit loop."""

    def __init__(self, control: ControlClient, welcome: Welcome, streams: int | None,
                 chunk: int | None, want_sha256: bool, sink: events.Sink = events.ignore,
                 checksum: bool = False, dry_run: bool = False, allow_changing: bool = False,
                 snap: int = 0, pacer: Pacer | None = None) -> None:
        self.control = control
        self.snap = snap  # the open snapshot whose entries the server records as it stores each file
        self.welcome = welcome
        self.streams_wanted = streams
        self.want_sha256 = want_sha256
        self.dry_run = dry_run
        self.allow_changing = allow_changing  # a file that changed while read is stored as read
        self.sink = sink
        self.shared = Shared(sink, want_sha256)
        self.shared.pacer = pacer  # --bwlimit: one bucket over every stream (and every round) of the command
        self.bwlimit = pacer.rate if pacer else 0
        self.long_path = getattr(control, "rtt", 0.0) >= LONG_PATH_RTT
        self.planner = Planner(control.call, lambda size: chunk or auto_chunk(size, self.long_path), checksum,
                               compared=lambda size: sink(events.Moved(size)))
        # On a long path, with the stream count left to us, streams may be added while sending.
        self.tuner = Tuner(getattr(control, "rtt", 0.0), streams is None and self.long_path, limit=self.bwlimit)
        self.threads: list[threading.Thread] = []
        self.streams_used = 0
        self.max_chunk = layout.MIN_CHUNK
        self.bundles: list[Bundle] = []
        self.bundle_numbers = itertools.count(1)

    @property
    def streams_opened(self) -> int:
        """Streams that connected at least once: what the summary reports."""
        return len(self.shared.opened_by)

    @property
    def bytes_sent(self) -> int:
        return self.shared.bytes_sent

    @property
    def bytes_resumed(self) -> int:
        return self.shared.bytes_resumed

    @property
    def bytes_linked(self) -> int:
        return self.shared.bytes_linked

    # -------------------------------------------------------------- plan

    def run(self, sources: list[Source]) -> list[Result]:
        try:
            return self._run(sources)
        finally:
            self.sink(events.Finished())

    def _run(self, sources: list[Source]) -> list[Result]:
        sources, results = refuse_bad_names(sources)  # a name the server would refuse fails alone, here
        # FIFOs, sockets, devices and a file's later names: the snapshot records them, nothing is sent.
        results += [Result(s, "recorded") for s in sources if s.kind in SPECIAL or s.hardlink]
        settle = self.shared.settle
        settle(results)
        sources = [s for s in sources if s.kind not in SPECIAL and not s.hardlink]
        dirs = [s for s in sources if s.kind == "dir"]
        if self.dry_run or self.planner.checksum:
            if self.planner.checksum:  # both sides hash every file: that is worth a bar of its own
                files = [s for s in sources if s.kind == "file"]
                self.sink(events.Planned(sum(s.size for s in files), len(files), "comparing"))
            verdicts = self.planner.ask(sources)
            self.sink(events.Finished())
            if self.dry_run:
                return results + settle(verdicts)
            results += settle([r for r in verdicts if r.status != "send"])
            sources = [r.src for r in verdicts if r.status == "send"]
            self.planner.forced = {id(s) for s in sources}
        small = [s for s in sources if is_small(s)]
        self.planner.tops = tops_of(sources)
        # Planning and sending overlap: streams start with the first work, and
        # small files go out bundle by bundle while later ones are still being
        # asked about.
        files = self._put_all([s for s in sources if not is_small(s)], results)
        background = self._start(files, small)
        for batch in batches(small, first=BUNDLE_FILES // 4):
            results += self._probe(batch)
        self.shared.end_planning()
        results += self._commit_loop(files)
        while self.shared.bundles_pending(self._tend_wait()):
            self._tend()
        results += self.shared.bundle_outcome(self.bundles)
        for r in results:
            if r.status == "stored" and r.src.kind == "file":
                r.how = itemized(r, self.planner)
        for _ in self.threads:  # wake idle streams now rather than at their next poll
            self.shared.work.put((None, -1))
        for t in self.threads + background:
            t.join(timeout=5)
        if dirs and self.shared.fatal is None:
            for batch in batches(dirs):
                items = [{"path": d.remote, "mode": d.mode, "mtime_ns": d.mtime_ns} for d in batch]
                self.control.call({"t": "dirs", "items": items}, "dirs_ok")
        return results

    def _put_all(self, large: list[Source], results: list[Result]) -> list[FileJob]:
        files: list[FileJob] = []
        for batch in batches(large):
            settled, jobs = self.planner.put(batch)
            results += self.shared.settle(settled)
            for job in jobs:
                job.allow_changing = self.allow_changing
                find_copy(job)
                self.shared.add_file(job)
            files += jobs
        self.max_chunk = max((f.chunk for f in files), default=layout.MIN_CHUNK)
        return files

    def _start(self, files: list[FileJob], small: list[Source]) -> list[threading.Thread]:
        """Say what is to move, start the background hashing and, if there is work already, the streams."""
        resumed = sum(layout.chunk_span(job.src.size, job.chunk, i)[1] for job in files for i in job.have)
        total = sum(job.src.size for job in files if job.linked is None) - resumed + sum(s.size for s in small)
        self.shared.files_total = len(files) + len(small)
        self.sink(events.Planned(total, self.shared.files_total))
        background = [threading.Thread(target=each, args=(check_have, self.shared, files), daemon=True)]
        if self.want_sha256:
            background.append(threading.Thread(target=each, args=(hash_whole, self.shared, files), daemon=True))
        for t in background:
            t.start()
        queued = self.shared.work.qsize()
        estimate = queued + (max(sum(s.size for s in small) // BUNDLE_BYTES,
                                 len(small) // BUNDLE_FILES) + 1 if small else 0)
        self.streams_wanted = min(self.streams_wanted or auto_streams(estimate, self.long_path, self.bwlimit),
                                  max(1, estimate))
        # At least one stream while resumed chunks are being checked: one that
        # differs from the server's record has to be sent again.
        if queued or any(f.have for f in files):
            self._start_streams()
        return background

    def _probe(self, batch: list[Source]) -> list[Result]:
        """Ask which small files changed; bundle those, report the rest."""
        settled, groups = self.planner.probe(batch)
        for r in settled:
            self.shared.discount(r.src)
        self.shared.settle(settled)
        for entries in groups:
            bundle = Bundle(next(self.bundle_numbers), entries, allow_changing=self.allow_changing, snap=self.snap)
            self.bundles.append(bundle)
            self.shared.add_bundle()
            self.shared.work.put((bundle, -1))
            self._start_streams()
        return settled

    # ------------------------------------------------------------ streams

    def _start_streams(self) -> None:
        """Once, with the first piece of work."""
        if not self.threads:
            self._spawn_streams(self.streams_wanted or 1)

    def _spawn_streams(self, count: int) -> None:
        added = [threading.Thread(target=SendStream(self.shared, self.control, self.welcome, self.max_chunk).run,
                                  daemon=True) for _ in range(count)]
        self.streams_used += count
        self.shared.add_streams(count)
        self.threads.extend(added)
        for t in added:
            t.start()

    # ------------------------------------------------------------ commit

    def _commit_loop(self, files: list[FileJob]) -> list[Result]:
        results: list[Result] = []
        settle = self.shared.settle
        left = set(files)
        while left:
            ready = self.shared.take_ready(self._tend_wait())
            if ready is None:
                break
            if not ready:
                self._tend()
                continue
            batch = []
            for job in ready:
                left.discard(job)
                if job.error is None:
                    job.error = changed_since(job)
                    if isinstance(job.error, ChangedError) and self.allow_changing:
                        job.error, job.changed = None, True  # stored as read, and said so
                if isinstance(job.error, GoneError):
                    results += settle([settle_gone(self.control.call, job, job.error)])
                elif job.error is not None:
                    results += settle([Result(job.src, "failed", job.error)])
                else:
                    batch.append(job)
            for start in range(0, len(batch), messages.MAX_BATCH):
                results += settle(commit(self.control.call, batch[start : start + messages.MAX_BATCH], self.snap))
                self.shared.files_finished(len(batch[start : start + messages.MAX_BATCH]))
        fatal = self.shared.fatal
        results += settle([Result(job.src, "failed", fatal or PartialError("not sent")) for job in left])
        return results

    def _tend(self) -> None:
        """What the main thread does while it waits: the control connection's
        health and liveness, and the stream count."""
        self._check_control()
        try:
            keep_alive(self.control)
        except FxError as exc:
            self.shared.fail_all(ConnectError(
                f"the server ended the session ({exc.message}); run the same send again to resume"))
        if self.threads:
            more = self.tuner.look(self.shared.bytes_sent, self.shared.all_open(), self.streams_used,
                                   self.shared.work.qsize(), self._pings, self.shared.window_stalls)
            if more:
                self._spawn_streams(more)

    def _tend_wait(self) -> float:
        return self.tuner.wait(self.shared.all_open()) if self.threads else TEND_WAIT

    def _pings(self, count: int, enough: float) -> list[float]:
        def ping() -> None:
            self.control.call({"t": "ping"}, "pong")
            self.control.last_ping = time.monotonic()

        return control_rtts(ping, count, enough)

    def _check_control(self) -> None:
        """A control connection the server ended is opened again at once; the
        server's own error, or a reconnection that failed, ends the send."""
        chan = self.control.chan
        if self.shared.fatal is not None or (chan is not None and not chan.conn.readable(0)):
            return
        try:
            self.control.check()
        except (ConnectError, ProtocolError) as exc:
            self.shared.fail_all(ConnectError(
                f"the server ended the session ({exc.message}); run the same send again to resume"))
        except FxError as exc:
            self.shared.fail_all(exc)


def itemized(r: Result, planner: Planner) -> str:
    """What a stored file's line says changed (client/jobs.py Result.how)."""
    if r.how == "same":
        return "repaired" if id(r.src) in planner.forced else "touched"
    if r.how:
        return r.how
    return "new" if id(r.src) in planner.new else "changed"


def each(work, shared: Shared, files: list[FileJob]) -> None:
    for job in files:
        work(shared, job)


def find_copy(job: FileJob) -> None:
    """A new file of a size the server already holds is hashed first: if it
    is a copy of what the server holds, it is committed as that, unsent."""
    if not job.same or job.have:
        return
    for chunk in sorted({c for _d, c in job.same}):
        try:
            digest = hash_list(job, chunk)
        except FxError:
            return  # it fails with its reason when sent
        if any(d == digest and c == chunk for d, c in job.same):
            job.linked = digest
            return


def check_have(shared: Shared, job: FileJob) -> None:
    """Hash the chunks the server already holds; resend any that differ."""
    if not job.have:
        return
    buf = memoryview(bytearray(job.chunk))
    try:
        for index, theirs in sorted(job.have.items()):
            if index in job.holes:
                zeros = layout.zero_digest(layout.chunk_span(job.src.size, job.chunk, index)[1])
                if theirs == zeros:  # a hole, recorded as one: nothing to read or send
                    shared.done(job, index, zeros)
                    continue
            n = read_chunk(job, index, buf)
            mine = hashlib.sha256(buf[:n]).digest()
            if mine == theirs:
                shared.resumed(n)
                shared.done(job, index, mine)
            else:
                shared.work.put((job, index))
    except FxError as exc:
        shared.fail_file(job, exc)


def hash_whole(shared: Shared, job: FileJob) -> None:
    try:
        digest = job_sha256(job)
    except FxError as exc:
        shared.fail_file(job, exc)
        return
    shared.hashed(job, digest)
