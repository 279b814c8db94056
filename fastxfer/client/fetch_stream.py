"""One stream of ``get``: ask for chunks (REQ) and whole small files (REQS),
take the server's DATA and DATAS answers, check each against its SHA-256 and
hand it to the wave (client/place.py).

Requests in flight are in the one window (client/window.py); a stream that
fails puts them back on the queue, and reconnects with the one backoff
(client/retry.py), counted per stream thread over the whole get.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastxfer.client.connect import open_stream
from fastxfer.client.restore_plan import Fetch
from fastxfer.client.retry import Backoff
from fastxfer.client.window import Window
from fastxfer.errors import BusyError, ConnectError, FxError, ProtocolError, from_wire_number
from fastxfer.net.framed import Frame, FramedConn
from fastxfer.protocol import layout, states, wire

if TYPE_CHECKING:
    from fastxfer.client.get import Getter

# In flight per stream: up to WINDOW requests and WINDOW_BYTES of chunks,
# so small files are not fetched one round trip at a time and big chunks
# are not asked for faster than they can be written.
WINDOW = 64
WINDOW_BYTES = 16 << 20
BATCH_FILES = 32  # whole files asked for in one REQS
BATCH_BYTES = 4 << 20
BATCH = b"batch"  # the first half of a REQS frame's key in the window (tags are 16 bytes)
STREAM_TIMEOUT = 120.0

Job = tuple[Fetch, int]  # a file and one of its chunks


class FetchStream:
    def __init__(self, getter: Getter) -> None:
        self.g = getter
        self.places = getter.places

    def run(self) -> None:
        """The stream thread: connections one after another until the get is over."""
        g = self.g
        backoff = Backoff()
        while True:
            with self.places.cond:
                if g.done or g.fatal is not None:
                    return
            window = Window(WINDOW, WINDOW_BYTES)
            try:
                self._once(window)
                return
            except (ConnectError, ProtocolError, BusyError) as exc:
                g.jobs.extend(job for jobs in window.items() for job in jobs)
                if isinstance(exc, BusyError):
                    with self.places.cond:  # the server allows fewer streams: the others carry on
                        if g.alive > 1:
                            g.alive -= 1
                            return
                if not backoff.again():
                    g.stop(ConnectError(f"{exc.message} (gave up after {backoff.attempts} reconnects)"))
                    return
            except FxError as exc:  # trust, refused: reconnecting would not help
                g.stop(exc)
                return
            except Exception as exc:  # noqa: BLE001 - never leave the main thread waiting
                g.stop(FxError(f"restore failed unexpectedly: {exc!r}"))
                raise

    def _once(self, window: Window) -> None:
        g = self.g
        welcome = g.control.welcome or g.welcome  # the latest: a restarted server voids the first ticket
        fc = open_stream(g.control.host, g.control.port, welcome)
        fc.conn.settimeout(STREAM_TIMEOUT)
        batching = "reqs" in welcome.features
        numbers = itertools.count()
        try:
            while True:
                self._ask(fc, window, batching, numbers)
                if not window:
                    with self.places.cond:
                        if g.done or g.fatal is not None:
                            return
                        if not g.jobs:  # the next wave's work, or the end
                            self.places.cond.wait(0.5)
                    continue
                # Under --bwlimit the answers are read at the rate: the server's
                # sends wait on TCP's closed window, so the path carries no more.
                self._receive(fc.receive(pacer=g.pacer), window)
        finally:
            fc.close()

    def _ask(self, fc: FramedConn, window: Window, batching: bool, numbers: Iterator[int]) -> None:
        """Fill the window: chunks one request each, whole small files many to a REQS.

        A job taken from the queue is either in the window (requeued with it if
        the stream fails) or back on the queue: a send that fails loses none."""
        jobs = self.g.jobs
        batch: list[Fetch] = []
        cost = 0
        taken: Job | None = None
        try:
            while window.has_room():
                try:
                    taken = f, index = jobs.popleft()
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
                        self._ask_many(fc, window, next(numbers), batch, cost)
                        batch, cost = [], 0
                    continue
                if batch:
                    self._ask_many(fc, window, next(numbers), batch, cost)
                    batch, cost = [], 0
                self._ask_one(fc, window, f, index)
                taken = None
            if batch:
                self._ask_many(fc, window, next(numbers), batch, cost)
                batch = []
        except BaseException:
            jobs.extendleft([(f, 0) for f in batch] + ([taken] if taken else []))
            raise

    @staticmethod
    def _ask_one(fc: FramedConn, window: Window, f: Fetch, index: int) -> None:
        offset, length = layout.chunk_span(f.size, f.chunk, index)
        window.add((f.tag, offset), [(f, index)], length)
        fc.send(wire.REQ, *wire.encode_req(f.tag, offset, length, f.size, int(f.entry["mtime_ns"]), f.name))

    @staticmethod
    def _ask_many(fc: FramedConn, window: Window, number: int, batch: list[Fetch], cost: int) -> None:
        asks = [wire.Ask(f.tag, f.size, int(f.entry["mtime_ns"]), f.name) for f in batch]
        window.add((BATCH, number), [(f, 0) for f in batch], cost)
        fc.send(wire.REQS, *wire.encode_reqs(number, asks))

    def _receive(self, frame: Frame, window: Window) -> None:
        """One frame from the server, handled before the next is read (its views
        into the connection's buffers end with it)."""
        # The table refuses what a restoring client must not take (an ACK, say).
        states.RESTORER_STREAM.step(states.OPEN, frame.kind)
        if frame.kind == wire.NAK:
            code, message = wire.parse_error(bytes(frame.body))
            dropped = window.pop_where(lambda key: key[0] == frame.header)
            f = dropped[0][0][0] if dropped else None
            if f is not None and f.status == "pending":  # a duplicate ask may come back after the file was done
                self.places.abandon(f, from_wire_number(code, message))
        elif frame.kind == wire.ERROR:
            raise from_wire_number(*wire.parse_error(bytes(frame.body)))
        elif frame.kind == wire.DATAS:
            self._receive_many(frame, window)
        elif frame.kind == wire.ZEROS:
            self._receive_zeros(frame, window)
        else:
            self._receive_one(frame, window)

    def _receive_one(self, frame: Frame, window: Window) -> None:
        tag, offset, length = wire.parse_data_header(frame.header, frame.sealed_len)
        jobs = window.get((tag, offset))  # popped once checked: a bad chunk is asked for again
        if jobs is None:
            raise ProtocolError("server sent a chunk that was not asked for")
        f, index = jobs[0]
        if length != layout.chunk_span(f.size, f.chunk, index)[1]:
            raise ProtocolError("server sent a chunk of another length than was asked for")
        data, digest = frame.body[:length], bytes(frame.body[length:])
        if hashlib.sha256(data).digest() != digest:
            raise ProtocolError("a restored chunk does not match its digest")
        window.pop((tag, offset))
        self.places.take(f, index, offset, data, digest)

    def _receive_zeros(self, frame: Frame, window: Window) -> None:
        """A chunk in a hole of the stored file: zeros, recorded as such (its digest
        is that of zeros, so a server that lies fails the file's check)."""
        tag, offset, length = wire.parse_zeros(frame.header, frame.body)
        jobs = window.get((tag, offset))
        if jobs is None:
            raise ProtocolError("server sent a chunk that was not asked for")
        f, index = jobs[0]
        if length != layout.chunk_span(f.size, f.chunk, index)[1]:
            raise ProtocolError("server sent a chunk of another length than was asked for")
        window.pop((tag, offset))
        self.places.take(f, index, offset, memoryview(b""), layout.zero_digest(length), length)

    def _receive_many(self, frame: Frame, window: Window) -> None:
        """A DATAS frame: every answer checked before any is used, so a bad frame
        leaves all of its files asked for (the stream is reopened and asks again)."""
        number, answers = wire.parse_datas(frame.header, frame.body)
        jobs = window.get((BATCH, number))
        if jobs is None or len(jobs) != len(answers):
            raise ProtocolError("server answered files that were not asked for")
        for (f, _), (tag, status, _code, payload) in zip(jobs, answers):
            if tag != f.tag:
                raise ProtocolError("server answered files that were not asked for")
            if status == 0 and (len(payload) != f.size + wire.DIGEST
                                or hashlib.sha256(payload[: f.size]).digest() != payload[f.size :]):
                raise ProtocolError("a restored file does not match its digest")
        window.pop((BATCH, number))
        for (f, _), (_tag, status, code, payload) in zip(jobs, answers):
            if status == 0:
                self.places.take(f, 0, 0, payload[: f.size], bytes(payload[f.size :]))
            elif f.status == "pending":
                self.places.abandon(f, from_wire_number(code, bytes(payload).decode(errors="replace")))
