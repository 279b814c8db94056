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
from fastxfer.errors import BusyError, FxError, ProtocolError, RefusedError, TrustError, wire_code
from fastxfer.protocol.keys import ServerKeys
from fastxfer.net.conn import Buffer, Conn
from fastxfer.store.facade import Store
from fastxfer.store.seam import Receiving
from fastxfer.trust.clients import ClientList

log = logging.getLogger("fastxfer.server")


class StreamSession:
    def __init__(self, conn: Conn, server_keys: ServerKeys, store: Store, clients: ClientList,
                 proven: Callable[[str], None]) -> None:
        self.clients = clients
        self.proven = proven
        self.conn = conn
        self.keys = server_keys
        self.store = store
        self.files: dict[bytes, Receiving] = {}
        self.unflushed = 0
        self.acks: list[tuple[bytes, int]] = []
        # Two chunk-sized buffers whatever the connection does: what arrives
        # and what it opens to (or, restoring, what is read and what is sent).
        self._buf = Buffer()
        self._plain = Buffer()
        self._out = Buffer()

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
            pass  # peer vanished: what was flushed is recorded, the rest is resent
        finally:
            for f in self.files.values():
                f.close()
            self.conn.close()
            for buf in (self._buf, self._plain, self._out):
                buf.close()

    def _try_error(self, exc: FxError) -> None:
        if getattr(self, "sealer", None) is None:
            return
        try:
            body = wire.encode_error(wire_code(exc).number, exc.message)
            self.conn.send(wire.frame_prefix(wire.ERROR, b"", len(body)),
                           self.sealer.seal(bytes([wire.ERROR]), body))
        except FxError:
            pass

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
        self.sealer, self.opener = keys.pair(c2s, s2c, "server")
        kind, rest = wire.parse_prefix(self.conn.recv_exact(wire.FRAME_PREFIX), wire.SYNC_FRAME)
        self.state = states.SERVER_STREAM.step(states.OPENING, kind)
        self.opener.open(bytes([kind]), self.conn.recv_exact(rest))
        if self.clients.name_of(session.client_fp) != session.client_name:
            raise TrustError("this client is no longer authorized on this server")
        self.proven(session.client_name)
        self.client = session.client_name
        self.client_fp = session.client_fp

    def _run(self) -> None:
        self.sealer = None
        self._open()
        self.conn.settimeout(limits.STREAM_IDLE)
        while True:
            if self.unflushed and not self.conn.readable(limits.FLUSH_IDLE):
                self._flush()
            kind, rest = wire.parse_prefix(self.conn.recv_exact(wire.FRAME_PREFIX))
            view = self._buf.view(rest)
            self.conn.recv_into_exact(view)
            head = wire.split_rest(kind, view)
            self.state = states.SERVER_STREAM.step(self.state, kind)
            HANDLERS[kind](self, head, view[len(head.header):])

    def _sync(self, head: wire.FrameHead, sealed: memoryview) -> None:
        self.opener.open(head.aad, sealed)
        self._flush()

    def _data(self, head: wire.FrameHead, sealed: memoryview) -> None:
        fid, offset, length = wire.parse_data_header(head.header, head.sealed_len)
        plain_len = length + wire.DIGEST
        plain = self._plain.view(plain_len)
        self.opener.open_into(head.aad, sealed, plain)
        data, digest = plain[:length], bytes(plain[length:])
        if hashlib.sha256(data).digest() != digest:
            raise ProtocolError("chunk digest does not match its bytes")
        staging = self.files.get(fid)
        if staging is None:
            staging = self.store.receive(self.client, fid)
            self.files[fid] = staging
        staging.write(offset, data, digest)
        self.acks.append((fid, offset))
        self.unflushed += length
        if self.unflushed >= limits.FLUSH_BYTES or len(self.acks) >= wire.MAX_ACKS:
            self._flush()

    def _request(self, head: wire.FrameHead, sealed: memoryview) -> None:
        """Restore: read a chunk of a stored file, hash it, seal it, send it."""
        body = self.opener.open(head.aad, sealed)
        tag, offset, length, size, mtime_ns, path = wire.parse_req(head.header, body)
        self._still_authorized()
        plain = self._plain.view(length + wire.DIGEST)
        try:
            self.store.read_chunk(self.client, os.fsdecode(path), size, mtime_ns, offset, plain[:length])
        except FxError as exc:
            text = wire.encode_error(wire_code(exc).number, exc.message)
            self.conn.send(wire.frame_prefix(wire.NAK, tag, len(text)),
                           self.sealer.seal(bytes([wire.NAK]) + tag, text))
            return
        plain[length:] = hashlib.sha256(plain[:length]).digest()
        header = wire.data_header(tag, offset, length)
        out = self._out.view(length + wire.DIGEST + wire.TAG)
        self.sealer.seal_into(bytes([wire.DATA]) + header, plain, out)
        self.conn.send(wire.frame_prefix(wire.DATA, header, length + wire.DIGEST), out)

    def _requests(self, head: wire.FrameHead, sealed: memoryview) -> None:
        """Restore of many small files: each read whole and hashed, all sealed in one DATAS frame."""
        batch, asks = wire.parse_reqs(head.header, self.opener.open(head.aad, sealed))
        self._still_authorized()
        plain = self._plain.view(sum(wire.answer_cost(a.size) for a in asks))
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
                    text = exc.message.encode()[: wire.DATAS_TEXT]
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
        header = wire.datas_header(batch, len(asks))
        out = self._out.view(pos + wire.TAG)
        self.sealer.seal_into(bytes([wire.DATAS]) + header, plain[:pos], out)
        self.conn.send(wire.frame_prefix(wire.DATAS, header, pos), out)

    def _bundle(self, head: wire.FrameHead, sealed: memoryview) -> None:
        plain = self._plain.view(head.sealed_len - wire.TAG)
        self.opener.open_into(head.aad, sealed, plain)
        self._still_authorized()
        bundle, entries = wire.parse_bundle(head.header, plain)
        for e in entries:
            if hashlib.sha256(e.data).digest() != e.digest:
                raise ProtocolError("a bundled file's digest does not match its bytes")
        results = self.store.commit_bundle(self.client, entries)
        stored = sum(1 for status, _, _ in results if status == 0)
        if stored:
            log.info("client %s stored %d small files", self.client, stored)
        del entries  # views into the buffer
        header, body = wire.encode_bundle_ack(bundle, results)
        self.conn.send(wire.frame_prefix(wire.BUNDLE_ACK, header, len(body)),
                       self.sealer.seal(bytes([wire.BUNDLE_ACK]) + header, body))

    def _still_authorized(self) -> None:
        """Revoking a client ends its running streams too, at their next piece of work."""
        if self.clients.name_of(self.client_fp) != self.client:
            raise TrustError("this client is no longer authorized on this server")

    def _flush(self) -> None:
        if self.unflushed:
            self._still_authorized()
        for staging in self.files.values():
            staging.flush()
            staging.close()
        # Reopened on their next chunk: a stream holds descriptors only for
        # the files it is receiving now, and never across a commit.
        self.files.clear()
        self.unflushed = 0
        while self.acks:
            batch, self.acks = self.acks[: wire.MAX_ACKS], self.acks[wire.MAX_ACKS:]
            header = wire.ack_header(len(batch))
            body = wire.encode_acks(batch)
            self.conn.send(wire.frame_prefix(wire.ACK, header, len(body)),
                           self.sealer.seal(bytes([wire.ACK]) + header, body))


# Every frame kind the stream state machine allows once open, and the
# handler that takes it (tests/unit/test_states.py checks they agree).
HANDLERS: dict[int, Callable[[StreamSession, wire.FrameHead, memoryview], None]] = {
    wire.DATA: StreamSession._data,
    wire.BUNDLE: StreamSession._bundle,
    wire.REQ: StreamSession._request,
    wire.REQS: StreamSession._requests,
    wire.SYNC: StreamSession._sync,
}
