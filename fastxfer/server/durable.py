"""What a stream received, made durable behind the data: its batches of
chunks and its bundles of small files are synced, recorded and
acknowledged by a thread of their own, in the order they arrived, so the
stream goes on reading while the disk catches up.

The resume guarantee does not change: a batch's chunks are acknowledged
only after their data and then their record entries are on stable
storage (Receiving.flush); a bundle only after its files are in place
and recorded (Bundling.finish).  At most BEHIND jobs wait for the disk:
the stream stops reading beyond that, which bounds the writeback debt of
one stream to (BEHIND + 1) x FLUSH_BYTES.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from fastxfer.errors import FxError
from fastxfer.store.diskio import storage_failure
from fastxfer.store.seam import Bundling, Receiving

BEHIND = 2  # jobs made durable while the stream reads the next one

log = logging.getLogger("fastxfer.server")


class Job(Protocol):
    def finish(self) -> None:
        """Durable and recorded (raises what failed; an OSError reaches the stream as a refusal)."""

    def ack(self) -> None:
        """Tell the client (FxError: it is gone)."""

    def close(self) -> None:
        """Always called, after finish or instead of it."""


class Chunks:
    """Chunks received since the last flush, in their files (the job's to close)."""

    def __init__(self, files: list[Receiving], acks: list[tuple[bytes, int]],
                 send_acks: Callable[[list[tuple[bytes, int]]], None]) -> None:
        self.files, self.acks, self.send_acks = files, acks, send_acks

    def finish(self) -> None:
        for f in self.files:
            f.flush()
        # Closed before the acknowledgement: a client that commits on it finds
        # no stream still holding the file (the commit fence waits for that).
        self.close()

    def ack(self) -> None:
        self.send_acks(self.acks)

    def close(self) -> None:
        for f in self.files:
            f.close()


class Bundle:
    """A bundle of small files, staged: finished, then its statuses acknowledged."""

    def __init__(self, staged: Bundling, send_ack: Callable[[list[tuple[int, int, str]]], None]) -> None:
        self.staged, self.send_ack = staged, send_ack
        self.results: list[tuple[int, int, str]] = []

    def finish(self) -> None:
        self.results = self.staged.finish()

    def ack(self) -> None:
        self.send_ack(self.results)

    def close(self) -> None:
        self.staged.close()


class Flusher:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: deque[Job] = deque()
        self.error: BaseException | None = None  # the first failure: the stream ends with it
        self.closing = False
        self.busy = False  # the first job is being finished
        self.thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        """Hand a job over (it is the flusher's to close); waits while BEHIND jobs
        are still waiting for the disk."""
        with self.cond:
            try:
                self._raise()
                while len(self.jobs) >= BEHIND and self.error is None:
                    self.cond.wait()
                self._raise()
            except BaseException:
                job.close()
                raise
            self.jobs.append(job)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="flusher", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def check(self) -> None:
        """Raise the failure of an earlier job, if any (a full disk, say)."""
        if self.error is not None:
            with self.cond:
                self._raise()

    def close(self, finish: bool) -> None:
        """Stop; with *finish*, every job handed over is made durable and recorded
        first (acknowledged too, if the peer still listens), otherwise the waiting
        ones are dropped (closed, not recorded: their data is sent again)."""
        with self.cond:
            self.closing = True
            if not finish:
                busy = 1 if self.busy else 0  # the thread closes the one it is finishing
                while len(self.jobs) > busy:
                    self.jobs.pop().close()
            self.cond.notify_all()
            thread = self.thread
        if thread is not None:
            thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.jobs and not self.closing:
                    self.cond.wait()
                if not self.jobs:
                    return
                job = self.jobs[0]
                self.busy = True
                failed_before = self.error is not None
            failed = None
            try:
                if not failed_before:
                    job.finish()
            except OSError as exc:  # the disk: the client is told, as of any refusal
                failed = storage_failure(exc)
            except BaseException as exc:  # recorded, raised in the stream's thread
                failed = exc
            else:
                if not failed_before:
                    try:
                        job.ack()
                    except (FxError, OSError):
                        pass  # the peer is gone: it is recorded, a resume finds it
            finally:
                # The failure is known before the job is closed: closing a file whose
                # flush failed removes its staging, and a stream that finds it gone
                # must find this failure too (StreamSession._data).
                if failed is not None:
                    with self.cond:
                        if self.error is None:
                            self.error = failed
                try:
                    job.close()
                except OSError as exc:
                    log.warning("closing what a stream received: %s", exc)
                with self.cond:
                    self.jobs.popleft()
                    self.busy = False
                    self.cond.notify_all()
