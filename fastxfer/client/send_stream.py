"""One stream of a send: its connection's life and its wire loop.

A stream thread takes pieces (a chunk of a large file, a bundle of small
ones) from the send's queue, reads and hashes each into a buffer kept for
the stream, and sends it sealed (net/framed.py).  A reader thread per
connection takes the server's acknowledgements, which come only once a
piece is on stable storage, and settles the piece in the shared state.
Pieces sent but not acknowledged are in the stream's Window; when the
connection fails they go back into the queue and the stream is opened again
with fresh keys, with the one backoff (client/retry.py).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import TYPE_CHECKING

from fastxfer.errors import (BusyError, ConnectError, FxError, GoneError, LocalFileError, ProtocolError,
                             from_wire_number)
from fastxfer.protocol import states, wire
from fastxfer.client.connect import ControlClient, Welcome, open_stream
from fastxfer.client.jobs import Bundle, FileJob, pack_bundle, read_chunk
from fastxfer.client.retry import Backoff
from fastxfer.client.window import Window

if TYPE_CHECKING:
    from fastxfer.client.send import Shared

IDLE_SYNC = 30.0  # an idle stream says so well inside the server's idle limit
STREAM_TIMEOUT = 120.0  # a send that the server does not take for this long: the connection is gone
POLL = 0.05  # seconds a stream waits for work before it looks at what else it has to do
BUNDLE_KEY = b"bundle"  # the first half of a bundle's key in the window (a fid is 16 bytes)
# Nothing bounds a send's window but TCP: the server acknowledges what is
# durable, and pieces wait in the socket's buffer rather than here.
UNBOUNDED = 1 << 62


class SendStream:
    """One stream thread's connections, one after the other."""

    def __init__(self, shared: Shared, control: ControlClient, welcome: Welcome, max_chunk: int) -> None:
        self.shared = shared
        self.control = control
        self.welcome = welcome
        # Kept across reopenings: a chunk and its digest, and a bundle's files.
        self.plain = memoryview(bytearray(max_chunk + wire.DIGEST))
        self.packed = bytearray()  # grows to the largest bundle

    def run(self) -> None:
        """The thread: connect, send until the work is done, reconnect after a failure."""
        backoff = Backoff()
        while not self.shared.finished():
            link = Link(self)
            try:
                link.run()
                return
            except BusyError as exc:
                self.shared.requeue(link.window.items())
                if self.shared.leave():  # the server allows fewer streams: let the others carry on
                    return
                if not backoff.again():
                    self.shared.fail_all(exc)
                    return
            except (ConnectError, ProtocolError) as exc:
                self.shared.requeue(link.window.items())
                if link.progressed.is_set():  # the budget is per outage
                    backoff.reset()
                if not backoff.again():
                    self.shared.fail_all(ConnectError(f"{exc.message} (gave up after {backoff.attempts} "
                                                      "reconnects; run the same send again to resume)"))
                    return
            except FxError as exc:
                self.shared.fail_all(exc)
                return
            except Exception as exc:  # noqa: BLE001 - never leave the main thread waiting
                self.shared.fail_all(FxError(f"a stream failed unexpectedly: {exc!r}"))
                raise


class Link:
    """One connection of a stream: its window, its reader thread, its wire loop."""

    def __init__(self, stream: SendStream) -> None:
        self.stream = stream
        self.shared = stream.shared
        self.window = Window(UNBOUNDED, UNBOUNDED)
        self.progressed = threading.Event()  # an acknowledgement came: the connection did work
        self.acked = threading.Event()
        self.stop = threading.Event()
        self.reader_error: list[FxError] = []
        self.synced = True
        self.last_sent = time.monotonic()

    def run(self) -> None:
        control = self.stream.control
        # The control connection's latest welcome: after a server restart the first one's ticket is void.
        self.fc = open_stream(control.host, control.port, control.welcome or self.stream.welcome)
        conn = self.fc.conn
        self.shared.stream_opened(conn)
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        conn.settimeout(STREAM_TIMEOUT)
        try:
            self._pump()
        except ConnectError:
            # When the server ends a stream with an answer (disk full, refused...)
            # that answer counts, not the broken pipe the sender met: give the
            # reader a moment to read it.
            reader.join(1.0)
            if self.reader_error:
                raise self.reader_error[0] from None
            raise
        finally:
            self.stop.set()
            self.shared.stream_closed(conn)
            self.fc.close()

    # ------------------------------------------------------------ sending

    def _pump(self) -> None:
        work = self.shared.work
        while True:
            if self.reader_error:
                raise self.reader_error[0]
            try:
                job, index = work.get(timeout=POLL)
            except queue.Empty:
                if self._idle():
                    return
                continue
            if job is None:  # the main thread's wake-up: all may be done
                if self.shared.finished():
                    return
            elif self.shared.fatal is not None:
                continue
            elif isinstance(job, Bundle):
                self._send_bundle(job)
            elif job.error is None:
                self._send_chunk(job, index)

    def _idle(self) -> bool:
        """Nothing queued: make what was sent durable, say the stream is alive,
        wait a moment for acknowledgements; True once this stream is done."""
        if not self.window and self.shared.finished():
            return True
        if (self.window and not self.synced) or time.monotonic() - self.last_sent > IDLE_SYNC:
            self._sync()
        self.acked.wait(0.2)
        self.acked.clear()
        # The last acknowledgement may have just come: leave at once.
        return not self.window and self.shared.finished()

    def _sync(self) -> None:
        self.fc.send(wire.SYNC)
        self.synced, self.last_sent = True, time.monotonic()

    def _send_chunk(self, job: FileJob, index: int) -> None:
        plain = self.stream.plain
        try:
            length = read_chunk(job, index, plain)
        except LocalFileError as exc:
            self.shared.fail_file(job, exc)
            return
        digest = hashlib.sha256(plain[:length]).digest()
        plain[length : length + wire.DIGEST] = digest
        offset = index * job.chunk
        # In the window before it is sent: its acknowledgement may come at once.
        self.window.add((job.fid, offset), (job, index, digest), length)
        self.fc.send(wire.DATA, wire.data_header(job.fid, offset, length), plain[: length + wire.DIGEST],
                     pacer=self.shared.pacer)
        self.synced = False
        self.last_sent = time.monotonic()
        self.shared.sent(length)
        if self.shared.work.empty() or index == job.count - 1:
            self._sync()

    def _send_bundle(self, bundle: Bundle) -> None:
        header, used, failed = pack_bundle(bundle, self.stream.packed)
        if len(failed) == len(bundle.entries):  # nothing left to send: settle it here
            self.shared.bundle_done(bundle, [], failed)
            return
        self.window.add((BUNDLE_KEY, bundle.number), (bundle, -1, failed), used)
        with memoryview(self.stream.packed) as packed:
            self.fc.send(wire.BUNDLE, header, packed[:used], pacer=self.shared.pacer)
        self.last_sent = time.monotonic()
        self.shared.sent(bundle.size)  # file bytes, as the bar counts them

    # ---------------------------------------------------------- receiving

    def _read(self) -> None:
        """The reader thread: acknowledgements until the connection ends."""
        try:
            while True:
                # Wait for the next frame here, not inside a read, so an
                # idle stream is not mistaken for a dead one.
                while not self.fc.conn.readable(1.0):
                    if self.stop.is_set():
                        return
                self._settle(self.fc.receive())
        except FxError as exc:
            self.reader_error.append(exc)
            self.acked.set()
            self.fc.conn.abort()  # the sender may be blocked on a peer that no longer reads

    def _settle(self, frame) -> None:
        # The table refuses what a sending client must not take (a DATA, say).
        states.SENDER_STREAM.step(states.OPEN, frame.kind)
        if frame.kind == wire.ACK:
            done = []
            for key in wire.parse_acks(frame.header, frame.body):
                entry = self.window.pop(key)
                if entry:
                    done.append(entry)
            self.shared.acked(done)
        elif frame.kind == wire.BUNDLE_ACK:
            number, statuses = wire.parse_bundle_ack(frame.header, bytes(frame.body))
            entry = self.window.pop((BUNDLE_KEY, number))
            if entry:
                self.shared.bundle_done(entry[0], statuses, entry[2])
        elif frame.kind == wire.NAK:  # that file's transfer is gone (another send of it committed it)
            fid = wire.parse_nak_header(frame.header)
            pieces = self.window.pop_where(lambda key: key[0] == fid)
            if pieces:
                self.shared.fail_file(pieces[0][0], GoneError(wire.parse_error(bytes(frame.body))[1]))
        else:  # ERROR, the one other kind the table allows: the server closes the stream
            code, message = wire.parse_error(bytes(frame.body))
            raise from_wire_number(code, message)
        self.progressed.set()
        self.acked.set()
