"""Server side of a stream connection: open, then receive sealed chunks.

A stream proves its session by its ticket (which only this server run can
open) and then by every frame opening under keys derived from the session
secret and both sides' fresh randoms.  Chunks are checked against their
SHA-256, written at their offset with pwrite, and acknowledged only after
they and their record entries are on stable storage.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable

from fastxfer.protocol import wire
from fastxfer.protocol import keys
from fastxfer.protocol import limits
from fastxfer.protocol import states
from fastxfer.errors import BusyError, FxError, GoneError, ProtocolError, RefusedError, TrustError, wire_code
from fastxfer.protocol.keys import ServerKeys
from fastxfer.net.conn import Buffer, Conn
from fastxfer.net.framed import Frame, FramedConn
from fastxfer.server import durable
from fastxfer.server.buffers import FrameBudget, Room
from fastxfer.server.rates import ClientRates
from fastxfer.net.pace import Pacer
from fastxfer.store.facade import Store
from fastxfer.store.seam import Receiving
from fastxfer.trust.clients import ClientList

log = logging.getLogger("fastxfer.server")


class StreamSession:
    def __init__(self, conn: Conn, server_keys: ServerKeys, store: Store, clients: ClientList,
                 proven: Callable[[str], None], budget: FrameBudget, rates: ClientRates | None = None) -> None:
        self.clients = clients
        self.rates = rates  # serve --client-bwlimit
        self.pacer: Pacer | None = None  # this stream's client's limit, once the client is known
        self.proven = proven
        self.conn = conn
        self.keys = server_keys
        self.store = store
        self.files: dict[bytes, Receiving] = {}
        self.unflushed = 0
        self.acks: list[tuple[bytes, int]] = []
        self.flusher = durable.Flusher()  # what was received, made durable behind the data
        self.authorized = True  # False once revoked: what it sent and was not recorded is not kept
        self.fc: FramedConn | None = None  # once the stream's keys are known
        # Restoring: what is read from the store, before it is sealed and sent.
        self._read = Buffer()
        self.room = Room(budget)  # what this stream's buffers hold of its client's share

    def run(self) -> None:
        try:
            self._run()
        except ProtocolError as exc:
            log.warning("stream from %s dropped: %s", self.conn.peer, exc.message)
            self._try_error(exc)
        except (RefusedError, BusyError, TrustError) as exc:
            log.warning("stream from %s refused: %s", self.conn.peer, exc.message)
            self._try_error(exc)
        except FxError:
            pass  # peer vanished: every whole chunk it sent is kept (below); a frame cut short is not
        finally:
            self._last_flush()
            if self.fc is not None:
                self.fc.close()
            else:
                self.conn.close()
            self._read.close()
            self.room.give_back()

    def _last_flush(self) -> None:
        """The chunks received and not yet recorded are made durable and recorded
        before the stream closes, so a client that vanished resends only what
        never arrived (unless it was revoked, or the disk already failed)."""
        keep = self.authorized and self.flusher.error is None
        try:
            if keep and self.acks:
                self._still_authorized()  # revoked meanwhile: its chunks are not kept
                self.flusher.submit(durable.Chunks(list(self.files.values()), self.acks, self._send_acks))
                self.files = {}
        except FxError:
            keep = self.authorized and self.flusher.error is None
        finally:
            for f in self.files.values():
                f.close()
            self.files = {}
            self.flusher.close(finish=keep)

    def _try_error(self, exc: FxError) -> None:
        if self.fc is None:
            return
        try:
            self.fc.send(wire.ERROR, b"", wire.encode_error(wire_code(exc).number, exc.message))
        except FxError:
            return
        self.conn.linger(limits.ERROR_LINGER)  # the rest of what it sends is not read: no reset before it reads this

    def _open(self) -> None:
        """Ticket, randoms, then a first sealed frame that proves the keys.

        Only after that proof is the connection counted as authenticated and
        allowed frames larger than a SYNC: a replayed ticket gets an answer
        but costs the server no buffer.
        """
        self.conn.settimeout(limits.HANDSHAKE_DEADLINE)
        size = wire.parse_open_prefix(self.conn.recv_exact(wire.OPEN_PREFIX))
        ticket = self.conn.recv_exact(size)
        client_random = self.conn.recv_exact(wire.RANDOM)
        session = self.keys.open_ticket(ticket, int(time.time()))
        server_random = os.urandom(wire.RANDOM)
        self.conn.send(wire.encode_open_reply(server_random))
        c2s, s2c = keys.stream_keys(session.secret, client_random, server_random)
        sealer, opener = keys.pair(c2s, s2c, "server")
        self.fc = FramedConn(self.conn, sealer, opener)
        first = self.fc.receive(wire.SYNC_FRAME)
        self.state = states.SERVER_STREAM.step(states.OPENING, first.kind)
        if self.clients.name_of(session.client_fp) != session.client_name:
            raise TrustError("this client is no longer authorized on this server")
        self.proven(session.client_name)
        self.client = self.room.client = session.client_name
        self.client_fp = session.client_fp
        if self.rates is not None:
            self.pacer = self.rates.pacer(self.client)

    def _run(self) -> None:
        self._open()
        assert self.fc is not None
        self.conn.settimeout(limits.STREAM_IDLE)
        while True:
            if (self.unflushed or self.room.held) and not self.conn.readable(limits.FLUSH_IDLE):
                self._flush()
                self._drop_buffers()
            self.flusher.check()
            self._next_frame()

    def _next_frame(self) -> None:
        # Its own function: the frame's views into the buffers end when it returns.
        # Under --client-bwlimit a body is read at the client's rate: its TCP
        # window closes meanwhile, which holds the client's streams to it.
        frame = self.fc.receive(reserve=self._room_for_frame, pacer=self.pacer)
        self.state = states.SERVER_STREAM.step(self.state, frame.kind)
        HANDLERS[frame.kind](self, frame)

    def _room_for_frame(self, size: int) -> None:
        self.room.need("frame", size)

    def _drop_buffers(self) -> None:
        """Nothing to read for a moment: the buffers' memory goes back to the
        system and their room to the client's share, until the next large frame."""
        self.fc.drop_buffers()
        self._read.close()
        self.room.give_back()

    def _sync(self, frame: Frame) -> None:
        self._flush()

    def _data(self, frame: Frame) -> None:
        fid, offset, length = wire.parse_data_header(frame.header, frame.sealed_len)
        plain = frame.body
        data, digest = plain[:length], bytes(plain[length:])
        if hashlib.sha256(data).digest() != digest:
            raise ProtocolError("chunk digest does not match its bytes")
        staging = self.files.get(fid)
        if staging is None:
            try:
                staging = self.store.receive(self.client, fid)
            except ProtocolError as exc:
                self.flusher.check()  # a flush that failed removed it: that failure is the answer
                # Else most often another send of the same file (same client,
                # same fid) committed it meanwhile: that file's sender is told,
                # by a NAK naming the fid, and the stream goes on for the others.
                self.fc.send(wire.NAK, fid, wire.encode_error(wire_code(GoneError()).number, exc.message))
                return
            self.files[fid] = staging
        staging.write(offset, data, digest)
        self.acks.append((fid, offset))
        self.unflushed += length
        if self.unflushed >= limits.FLUSH_BYTES or len(self.acks) >= wire.MAX_ACKS:
            self._flush()

    def _request(self, frame: Frame) -> None:
        """Restore: read a chunk of a stored file, hash it, seal it, send it."""
        tag, offset, length, size, mtime_ns, path = wire.parse_req(frame.header, bytes(frame.body))
        self._still_authorized()
        self.room.need("answer", 2 * (length + wire.DIGEST) + wire.TAG)  # read, then sealed
        plain = self._read.view(length + wire.DIGEST)
        try:
            hole = self.store.read_chunk(self.client, os.fsdecode(path), size, mtime_ns, offset, plain[:length],
                                         holes=True)
        except FxError as exc:
            self.fc.send(wire.NAK, tag, wire.encode_error(wire_code(exc).number, exc.message))
            return
        if hole:  # zeros: neither read nor sent (the client checks the whole file's digest)
            self.fc.send(wire.ZEROS, wire.zeros_header(tag, offset, length), b"")
            return
        plain[length:] = hashlib.sha256(plain[:length]).digest()
        self.fc.send(wire.DATA, wire.data_header(tag, offset, length), plain, pacer=self.pacer)

    def _requests(self, frame: Frame) -> None:
        """Restore of many small files: each read whole and hashed, all sealed in one DATAS frame."""
        batch, asks = wire.parse_reqs(frame.header, bytes(frame.body))
        self._still_authorized()
        size = sum(wire.answer_cost(a.size) for a in asks)
        self.room.need("answer", 2 * size + wire.TAG)  # read, then sealed
        plain = self._read.view(size)
        pos = 0
        folders: dict = {}  # the folder being read, kept from one file to the next (read_chunk)
        try:
            for a in asks:
                start = pos + wire.DATAS_ENTRY_HEAD
                end = start + a.size
                try:
                    self.store.read_chunk(self.client, os.fsdecode(a.path), a.size, a.mtime_ns, 0,
                                          plain[start:end], folders)
                except FxError as exc:
                    text = wire.message_bytes(exc.message, wire.DATAS_TEXT)
                    wire.pack_datas_entry_head(plain, pos, a.tag, 1, wire_code(exc).number, len(text))
                    plain[start : start + len(text)] = text
                    pos = start + len(text)
                    continue
                plain[end : end + wire.DIGEST] = hashlib.sha256(plain[start:end]).digest()
                wire.pack_datas_entry_head(plain, pos, a.tag, 0, 0, a.size + wire.DIGEST)
                pos = end + wire.DIGEST
        finally:
            for fd in folders.values():
                os.close(fd)
        self.fc.send(wire.DATAS, wire.datas_header(batch, len(asks)), plain[:pos], pacer=self.pacer)

    def _bundle(self, frame: Frame) -> None:
        self._still_authorized()
        bundle, entries, snap = wire.parse_bundle(frame.header, frame.body)
        for e in entries:
            if hashlib.sha256(e.data).digest() != e.digest:
                raise ProtocolError("a bundled file's digest does not match its bytes")
        staged = self.store.stage_bundle(self.client, entries, snap)
        del entries  # views into the buffer, which the next frame reuses
        self.flusher.submit(durable.Bundle(staged, lambda results: self._send_bundle_ack(bundle, results)))

    def _send_bundle_ack(self, bundle: int, results: list[tuple[int, int, str]]) -> None:
        stored = sum(1 for status, _, _ in results if status == 0)
        if stored:
            log.info("client %s stored %d small files", self.client, stored)
        self.fc.send(wire.BUNDLE_ACK, *wire.encode_bundle_ack(bundle, results))

    def _still_authorized(self) -> None:
        """Revoking a client ends its running streams too, at their next piece of work."""
        if self.clients.name_of(self.client_fp) != self.client:
            self.authorized = False
            raise TrustError("this client is no longer authorized on this server")

    def _flush(self) -> None:
        """Hand the chunks received since the last flush to the flusher, which
        makes them durable, records and acknowledges them while this stream
        reads on.  Their files are reopened on their next chunk: a batch's
        descriptors are closed once it is synced, and a file is committed only
        after its last acknowledgement."""
        if self.unflushed:
            self._still_authorized()
        if self.acks:
            self.flusher.submit(durable.Chunks(list(self.files.values()), self.acks, self._send_acks))
        else:
            for staging in self.files.values():
                staging.close()
        self.files, self.acks, self.unflushed = {}, [], 0

    def _send_acks(self, acks: list[tuple[bytes, int]]) -> None:
        assert self.fc is not None
        for start in range(0, len(acks), wire.MAX_ACKS):
            batch = acks[start : start + wire.MAX_ACKS]
            self.fc.send(wire.ACK, wire.ack_header(len(batch)), wire.encode_acks(batch))


# Every frame kind the stream state machine allows once open, and the
# handler that takes it (tests/unit/test_states.py checks they agree).
HANDLERS: dict[int, Callable[[StreamSession, Frame], None]] = {
    wire.DATA: StreamSession._data,
    wire.BUNDLE: StreamSession._bundle,
    wire.REQ: StreamSession._request,
    wire.REQS: StreamSession._requests,
    wire.SYNC: StreamSession._sync,
}
