"""Handing accepted sockets from the master to a worker (SCM_RIGHTS).

Each message carries one descriptor and the peer's address as text.  The
sender closes its copy right after sending.
"""

from __future__ import annotations

import socket

MAX_TAG = 256


def send_socket(channel: socket.socket, conn: socket.socket, peer: str) -> None:
    socket.send_fds(channel, [peer.encode()[:MAX_TAG]], [conn.fileno()])


def recv_socket(channel: socket.socket) -> tuple[socket.socket, str] | None:
    """The next handed-over socket, or None when the master is gone."""
    msg, fds, _flags, _addr = socket.recv_fds(channel, MAX_TAG, 1)
    if not fds:
        return None
    return socket.socket(fileno=fds[0]), msg.decode(errors="replace")
