"""Sealed frames over a stream connection: the one place a frame is sealed
and sent, and the one place a frame is received and opened.

The layout of a frame is protocol/wire.py's; the keys and nonces are
protocol/keys.py's.  Large frames are sealed into a buffer kept for the
connection and sent without joining header and body (sendmsg).  Under a
bandwidth limit (a Pacer) a frame's bytes go out, or are read in, a slice at
a time, each slice after its credit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from fastxfer.net.conn import Buffer, Conn
from fastxfer.net.pace import Pacer
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

    def send(self, kind: int, header: bytes = b"", body: bytes | memoryview = b"",
             pacer: Pacer | None = None) -> None:
        """Seal *body* with kind + header as associated data and send the frame
        (at *pacer*'s rate when given)."""
        aad = bytes([kind]) + header
        with self._sending:
            prefix = wire.frame_prefix(kind, header, len(body))
            if len(body) < 64 << 10:
                sealed: bytes | memoryview = self.sealer.seal(aad, bytes(body))
            else:
                sealed = self._out.view(len(body) + wire.TAG)
                self.sealer.seal_into(aad, body, sealed)
            if pacer is None:
                self.conn.send(prefix, sealed)
                return
            with memoryview(sealed) as view:
                for start, end in pacer.slices(len(view)):
                    pacer.take(end - start + (len(prefix) if start == 0 else 0))
                    if start == 0:
                        self.conn.send(prefix, view[start:end])
                    else:
                        self.conn.send(view[start:end])

    def receive(self, limit: int = wire.MAX_FRAME, reserve: Callable[[int], None] | None = None,
                pacer: Pacer | None = None) -> Frame:
        """The next frame, read whole and opened (ProtocolError if it does not open).

        *reserve* is told the bytes the frame and its plaintext will hold,
        before any of its body is read; it may wait, or raise to refuse it.
        With a *pacer*, the body is read a slice at a time at its rate: the
        sender's TCP window closes meanwhile, which holds it to the rate."""
        kind, rest = wire.parse_prefix(self.conn.recv_exact(wire.FRAME_PREFIX), limit)
        if reserve is not None:
            reserve(2 * rest - wire.header_size(kind) - wire.TAG)
        sealed = self._sealed.view(rest)
        if pacer is None:
            self.conn.recv_into_exact(sealed)
        else:
            for start, end in pacer.slices(rest):
                pacer.take(end - start + (wire.FRAME_PREFIX if start == 0 else 0))
                self.conn.recv_into_exact(sealed[start:end])
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
