"""Received chunks made durable behind the data: a stream's batches of
chunks are synced, recorded and acknowledged by a thread of their own, so
the stream goes on reading while the disk catches up.

The resume guarantee does not change: a batch's chunks are acknowledged
only after their data and then their record entries are on stable
storage (Receiving.flush), in the order the batches were received.  At
most BEHIND batches wait for the disk: the stream stops reading beyond
that, which bounds the writeback debt of one stream to (BEHIND + 1) x
FLUSH_BYTES.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from fastxfer.errors import FxError
from fastxfer.store.seam import Receiving

BEHIND = 2  # batches synced while the stream reads the next one


class Flusher:
    def __init__(self, send_acks: Callable[[list[tuple[bytes, int]]], None]) -> None:
        self.send_acks = send_acks
        self.cond = threading.Condition()
        self.batches: deque[tuple[list[Receiving], list[tuple[bytes, int]]]] = deque()
        self.error: BaseException | None = None  # the first failure: the stream ends with it
        self.closing = False
        self.thread: threading.Thread | None = None

    def submit(self, files: list[Receiving], acks: list[tuple[bytes, int]]) -> None:
        """Hand a batch over (its files are the flusher's to close); waits while
        BEHIND batches are still waiting for the disk."""
        with self.cond:
            self._raise()
            while len(self.batches) >= BEHIND and self.error is None:
                self.cond.wait()
            self._raise()
            self.batches.append((files, acks))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="flusher", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def check(self) -> None:
        """Raise the failure of an earlier batch, if any (a full disk, say)."""
        if self.error is not None:
            with self.cond:
                self._raise()

    def close(self, finish: bool) -> None:
        """Stop; with *finish*, every batch handed over is synced and recorded first
        (acknowledged too, if the peer still listens), otherwise the waiting ones are
        dropped (closed, not recorded: their chunks are sent again)."""
        with self.cond:
            self.closing = True
            if not finish:
                while self.batches:
                    for f in self.batches.popleft()[0]:
                        f.close()
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
                while not self.batches and not self.closing:
                    self.cond.wait()
                if not self.batches:
                    return
                files, acks = self.batches[0]
                failed_before = self.error is not None
            try:
                failed = self._sync(files, skip=failed_before)
                if failed is None and not failed_before:
                    try:
                        self.send_acks(acks)
                    except FxError:
                        pass  # the peer is gone: the chunks are recorded, a resume finds them
            finally:
                with self.cond:
                    self.batches.popleft()
                    if failed is not None and self.error is None:
                        self.error = failed
                    self.cond.notify_all()

    def _sync(self, files: list[Receiving], skip: bool) -> BaseException | None:
        """Each file's chunks durable and recorded (none after a failure: only closed)."""
        failed = None
        for f in files:
            try:
                if failed is None and not skip:
                    f.flush()
            except BaseException as exc:  # recorded, raised in the stream's thread
                failed = exc
            finally:
                f.close()
        return failed
