"""A wave's files from their chunks to their places: written into hidden
temporaries, verified against the digest recorded at backup, made durable
by one sync per filesystem, renamed into place (each appears whole or not at
all), then each folder that changed synced once.

The state here is shared by every stream thread and the main thread, under
one condition.
"""

from __future__ import annotations

import os
import threading

from fastxfer.client import events
from fastxfer.client.owners import Owners
from fastxfer.client.restore_plan import Fetch, Outcome
from fastxfer.errors import FxError, LocalFileError, VerifyError
from fastxfer.localfs import sync_filesystem
from fastxfer.protocol import layout


class Places:
    def __init__(self, sink: events.Sink, owners: Owners | None = None) -> None:
        self.sink = sink
        self.owners = owners or Owners(active=False)
        self.cond = threading.Condition()
        self.pending = 0  # files of the wave not yet verified or failed
        self.ready: list[Fetch] = []  # verified, to be placed at the wave's end
        self.outcomes: list[Outcome] = []
        self.bytes_received = 0

    def take(self, f: Fetch, index: int, offset: int, data: memoryview, digest: bytes,
             length: int | None = None) -> None:
        """A checked chunk into its file (*length*: of a hole, whose *data* is not sent)."""
        length = len(data) if length is None else length
        with self.cond:
            if f.status != "pending":
                return
            f.writers += 1
        try:
            try:
                view = data
                if digest == layout.zero_digest(length):  # a hole stays a hole: the file is sized, not written
                    os.ftruncate(f.fd, f.size)  # never shorter than the file: writes at any offset keep it so
                    view = data[:0]
                while view:
                    n = os.pwrite(f.fd, view, offset)
                    view, offset = view[n:], offset + n
            except OSError as exc:
                self.abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
                return
            self.sink(events.Moved(length))
            with self.cond:
                self.bytes_received += len(data)  # a hole is not received: it was never sent
                f.digests[index] = digest
                f.left -= 1
                done = f.left == 0
            if done:
                self.finish(f)
        finally:
            with self.cond:
                f.writers -= 1
                if f.closing and not f.writers and f.fd >= 0:
                    os.close(f.fd)

    def finish(self, f: Fetch) -> None:
        shown = os.fsdecode(b"/".join(f.parts))
        digest = layout.file_digest(f.size, f.chunk, f.digests)  # type: ignore[arg-type]
        if digest.hex() != str(f.entry["digest"]).lower():
            self.abandon(f, VerifyError(f"{shown}: restored bytes do not match what the server verified at backup"))
            return
        try:
            ids = self.owners.ids(f.entry)
            if ids is not None and ids != f.born:
                os.fchown(f.fd, *ids)  # before the mode: a change of owner may clear mode bits
            os.fchmod(f.fd, int(f.entry["mode"]) & 0o777)
            os.utime(f.fd, ns=(int(f.entry["mtime_ns"]), int(f.entry["mtime_ns"])))
        except OSError as exc:
            self.abandon(f, LocalFileError(f"{shown}: {exc.strerror}"))
            return
        with self.cond:
            if f.status != "pending":
                return
            f.status = "verified"
            self.ready.append(f)
            self.pending -= 1
            if not self.pending:  # the wave waits for its last file only: no wake-up per file
                self.cond.notify_all()

    def take_ready(self) -> list[Fetch]:
        """The files verified so far, to place: the next wave's go on into a new list."""
        with self.cond:
            ready, self.ready = self.ready, []
        return ready

    def place(self, ready: list[Fetch]) -> None:
        """A wave's verified files into their places: their bytes made durable
        by one sync per filesystem, each renamed over its name (whole or not at
        all), then each folder that changed synced once."""
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
                self.abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
            return
        placed: dict[int, list[Fetch]] = {}  # folder -> its files renamed into place
        for f in ready:
            try:
                os.rename(f.tmp, f.parts[-1], src_dir_fd=f.parent, dst_dir_fd=f.parent)
            except OSError as exc:
                self.abandon(f, LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {exc.strerror}"))
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
                    self.close(f, "restored", None)
                else:
                    self.close(f, "failed", LocalFileError(f"{os.fsdecode(b'/'.join(f.parts))}: {error.message}"))

    def abandon(self, f: Fetch, error: FxError) -> None:
        try:
            os.unlink(f.tmp, dir_fd=f.parent)
        except OSError:
            pass
        with self.cond:
            pending = f.status == "pending"
            left = sum(layout.chunk_span(f.size, f.chunk, i)[1] for i, d in enumerate(f.digests) if d is None) \
                if pending else 0
        self.close(f, "failed", error)
        if left:  # what will never come leaves the bar's total, so the bar still ends at 100%
            self.sink(events.Unneeded(left))

    def close(self, f: Fetch, status: str, error: FxError | None) -> None:
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
            outcome = Outcome(os.fsdecode(b"/".join(f.parts)), status, error,
                              how="changed" if f.replaced else "new")
            self.outcomes.append(outcome)  # with the status: whoever sees one sees the other
        self.sink(events.Settled(outcome))  # not under the lock: a sink may write

    def record(self, outcome: Outcome) -> None:
        """An entry's outcome, final: kept, and told to the sink."""
        with self.cond:
            self.outcomes.append(outcome)
        self.sink(events.Settled(outcome))
