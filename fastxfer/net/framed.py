"""Sealed frames over a stream connection: the one place a frame is sealed
and sent, and the one place a frame is received and opened.

The layout of a frame is protocol/wire.py's; the keys and nonces are
protocol/keys.py's.  Large frames are sealed into a buffer kept for the
connection and sent without joining header and body (sendmsg).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from fastxfer.net.conn import Buffer, Conn
from fastxfer.protocol import wire
from fastxfer.protocol.keys import Opener, Sealer


class Frame(NamedTuple):
    """A received frame, opened: its views end when the next frame is received.

    A named tuple: one is built per frame, and defining it costs every
    command's start-up less than a frozen dataclass."""

    kind: int
    header: bytes
    body: memoryview

    @property
    def sealed_len(self) -> int:
        return len(self.body) + wire.TAG


class FramedConn:
    """One stream connection's frames, both directions.

    Sending and receiving may run in two threads (send's reader); each side
    uses its own buffers.  Frames may be sent from several threads (a server
    stream acknowledges from its flusher): one at a time, in nonce order.
    """

    def __init__(self, conn: Conn, sealer: Sealer, opener: Opener) -> None:
        self.conn = conn
        self.sealer = sealer
        self.opener = opener
        self._out = Buffer()
        self._sealed = Buffer()
        self._plain = Buffer()
        self._sending = threading.Lock()

    def send(self, kind: int, header: bytes = b"", body: bytes | memoryview = b"") -> None:
        """Seal *body* with kind + header as associated data and send the frame."""
        aad = bytes([kind]) + header
        with self._sending:
            if len(body) < 64 << 10:
                self.conn.send(wire.frame_prefix(kind, header, len(body)), self.sealer.seal(aad, bytes(body)))
                return
            out = self._out.view(len(body) + wire.TAG)
            self.sealer.seal_into(aad, body, out)
            self.conn.send(wire.frame_prefix(kind, header, len(body)), out)

    def receive(self, limit: int = wire.MAX_FRAME, reserve: Callable[[int], None] | None = None) -> Frame:
        """The next frame, read whole and opened (ProtocolError if it does not open).

        *reserve* is told the bytes the frame and its plaintext will hold,
        before any of its body is read; it may wait, or raise to refuse it."""
        kind, rest = wire.parse_prefix(self.conn.recv_exact(wire.FRAME_PREFIX), limit)
        if reserve is not None:
            reserve(2 * rest - wire.header_size(kind) - wire.TAG)
        sealed = self._sealed.view(rest)
        self.conn.recv_into_exact(sealed)
        head = wire.split_rest(kind, sealed)
        plain = self._plain.view(head.sealed_len - wire.TAG)
        self.opener.open_into(head.aad, sealed[len(head.header):], plain)
        return Frame(kind, head.header, plain)

    def drop_buffers(self) -> None:
        """Give the buffers' memory back to the system; the next large frame maps them again.
        Only the receiving thread may call it, with no frame of it still in use."""
        with self._sending:  # another thread may be sealing into the out buffer
            for buf in (self._out, self._sealed, self._plain):
                buf.close()

    def close(self) -> None:
        self.conn.close()
        for buf in (self._out, self._sealed, self._plain):
            buf.close()
