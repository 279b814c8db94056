"""The one module that touches sockets for reading and writing.

Everything above sees ``Conn`` (exact reads and whole writes with a
deadline) and ``Channel`` (control messages).  Low-level failures become
``ConnectError`` here and nowhere else.
"""

from __future__ import annotations

import mmap
import socket
import ssl
import struct
import time
from typing import Any

from fastxfer.protocol import messages
from fastxfer.errors import ConnectError, ResetError


# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
# sacked, lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv,
# last_ack_recv, pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss,
# reordering, rcv_rtt, rcv_space, total_retrans (ends at 104), four u64 rates and
# counts, segs_out, segs_in, notsent_bytes, then min_rtt (microseconds) at 148;
# data_segs_in, data_segs_out, u64 delivery_rate, then the u64 microseconds the
# connection had data to send (busy_time, 168) and of those, the time the peer's
# receive window held it back (rwnd_limited, 176; Linux 4.10+).
_TCPI_MIN_RTT = 148
_TCPI_BUSY_TIME = 168
_TCPI_RWND_LIMITED = 176

# A peer that closed or reset the connection, as against one that went silent:
# a first connection lost this way is worth trying again at once.
_RESETS = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
           ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _lost(exc: OSError, text: str) -> ConnectError:
    return (ResetError if isinstance(exc, _RESETS) else ConnectError)(text)


class Buffer:
    """A receive buffer in its own mapping, so its memory goes back to the
    system when the connection ends (the heap would keep it)."""

    def __init__(self) -> None:
        self._map: mmap.mmap | None = None

    def view(self, size: int) -> memoryview:
        if self._map is None or len(self._map) < size:
            self.close()
            self._map = mmap.mmap(-1, max(size, 1))
        return memoryview(self._map)[:size]

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with it
            self._map = None


class Conn:
    def __init__(self, sock: socket.socket, peer: str = "") -> None:
        self.sock = sock
        self.peer = peer

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def min_rtt(self) -> float | None:
        """The least round trip this connection has seen (tcpi_min_rtt, Linux 4.6+):
        the path's own delay, without the peer's think time or queues."""
        return self._tcp_info_us(_TCPI_MIN_RTT)

    def window_stalls(self) -> tuple[float, float] | None:
        """(seconds this connection had data to send, seconds of those the peer's
        receive window held it back): a peer that reads slower than the path
        delivers, its disk or its CPU the limit, not the path."""
        info = self._tcp_info()
        if len(info) < _TCPI_RWND_LIMITED + 8:
            return None
        busy, held = struct.unpack_from("<QQ", info, _TCPI_BUSY_TIME)
        return busy / 1e6, held / 1e6

    def _tcp_info_us(self, offset: int) -> float | None:
        info = self._tcp_info()
        if len(info) < offset + 4:
            return None
        return int.from_bytes(info[offset : offset + 4], "little") / 1e6

    def _tcp_info(self) -> bytes:
        try:
            return self.sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 192)
        except (OSError, ValueError):
            return b""

    def recv_exact(self, size: int) -> bytes:
        buf = bytearray(size)
        self.recv_into_exact(memoryview(buf))
        return bytes(buf)

    def recv_into_exact(self, view: memoryview) -> None:
        got = 0
        total = len(view)
        try:
            while got < total:
                n = self.sock.recv_into(view[got:], total - got)
                if n == 0:
                    raise ResetError(f"connection closed by {self.peer or 'peer'}")
                got += n
        except socket.timeout:
            raise ConnectError(f"{self.peer or 'peer'} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise _lost(exc, f"connection to {self.peer or 'peer'} failed: {exc}") from None

    def send(self, *parts: bytes | memoryview) -> None:
        try:
            if len(parts) == 1 or isinstance(self.sock, ssl.SSLSocket):
                for part in parts:
                    self.sock.sendall(part)
                return
            self._sendmsg_all(list(parts))
        except socket.timeout:
            raise ConnectError(f"{self.peer or 'peer'} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise _lost(exc, f"connection to {self.peer or 'peer'} failed: {exc}") from None

    def _sendmsg_all(self, parts: list[bytes | memoryview]) -> None:
        # One syscall for header and body, without joining them (no copy).
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def readable(self, timeout: float) -> bool:
        import select

        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:  # poll, not select: a descriptor numbered 1024 or more is fine (a restore holds many)
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(max(0, int(timeout * 1000))))
        except (OSError, ValueError):
            return True  # let the next read report the failure

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def linger(self, seconds: float, limit: int = 64 << 20) -> None:
        """After a last word the peer must read: shut our side for writing and
        read and drop what the peer still sends, until it closes (it does once
        it has read that word) or for *seconds* at most.  Closing with its bytes
        unread would reset the connection, and a reset can destroy the last
        word in the peer's receive queue before it is read."""
        deadline = time.monotonic() + seconds
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while limit > 0:
                wait = deadline - time.monotonic()
                if wait <= 0 or not self.readable(wait):
                    return
                data = self.sock.recv(min(limit, 1 << 20))
                if not data:
                    return
                limit -= len(data)
        except OSError:
            pass

    def abort(self) -> None:
        """Shut the connection down both ways, waking a thread blocked sending on it
        (a peer that stopped reading would otherwise hold it until its timeout)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Channel:
    """Control messages over a (TLS) connection."""

    def __init__(self, conn: Conn, limit: int = messages.MAX_CONTROL) -> None:
        self.conn = conn
        self._decoder = messages.MsgDecoder(limit)

    def set_limit(self, limit: int) -> None:
        self._decoder.limit = limit

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send(messages.encode_msg(msg))

    def recv(self, timeout: float | None) -> dict[str, Any]:
        self.conn.settimeout(timeout)
        while True:
            msg = self._decoder.next()
            if msg is not None:
                return msg
            self._decoder.feed(self.conn.recv_exact(self._decoder.wanted()))


def connect(host: str, port: int, timeout: float) -> Conn:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise ConnectError(f"cannot connect to {host}:{port}: timed out") from None
    except OSError as exc:
        raise _lost(exc, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock, f"{host}:{port}")


def keep_alive_probes(conn: Conn, idle: int = 15, interval: int = 5, count: int = 3) -> None:
    """TCP keep-alive: a peer that went silent without closing (a network that
    changed under a long wait) is found gone in idle + interval * count seconds."""
    sock = conn.sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


def tls_wrap(conn: Conn, ctx: ssl.SSLContext, timeout: float, server_side: bool) -> Conn:
    try:
        conn.sock.settimeout(timeout)
        tls = ctx.wrap_socket(conn.sock, server_side=server_side)
    except socket.timeout:
        raise ConnectError(f"TLS handshake with {conn.peer} timed out") from None
    except (OSError, ssl.SSLError) as exc:
        raise _lost(exc, f"TLS handshake with {conn.peer} failed: {exc}") from None
    return Conn(tls, conn.peer)


def peer_cert(conn: Conn) -> bytes:
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise ConnectError(f"{conn.peer} presented no certificate")
    return der
