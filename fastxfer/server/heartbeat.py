"""Heartbeats: how the master tells a worker that hangs from one that is busy.

A worker's main loop, the one that takes sockets from the master, sends one
byte on its channel every ``HEARTBEAT_INTERVAL``.  It is that loop and no
other thread that beats, so the beats stop exactly when the worker can no
longer take a connection: the process stopped (SIGSTOP, a debugger), a
thread holding the GIL in a runaway call that never gives it back, or the
loop itself stuck.  A thread of its own would beat on through the last two.

The master reads the beats whenever its loop wakes (at least every 0.5 s)
and times each by when it read it, not when it was sent, so a master that
was itself stalled does not condemn workers whose beats waited in their
channels.  A worker late by ``HEARTBEAT_LATE`` gets no new connection while
another beats; one silent for the server's ``--worker-timeout`` is killed
and replaced (``Master.watch``).
"""

from __future__ import annotations

import select
import socket
import time

from fastxfer.protocol import limits

BEAT = b"\x01"
MAX_READ = 64  # beats read per channel per wake-up; more wait for the next one


class Pulse:
    """The worker's side: beat when due; wait for the master no longer than
    the channel's own timeout (0.2 s), and only when it has fallen behind."""

    def __init__(self, channel: socket.socket, interval: float = limits.HEARTBEAT_INTERVAL) -> None:
        self.channel = channel
        self.interval = interval
        self.due = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + self.interval
        try:
            self.channel.send(BEAT, socket.MSG_DONTWAIT)
        except OSError:
            # A full channel means the master is behind, not this worker; a
            # closed one is the master gone, which the loop notices itself.
            pass


def heard(channel: socket.socket) -> bool:
    """Read the beats waiting on the master's (non-blocking) end of a channel:
    whether there was one."""
    got = False
    for _ in range(MAX_READ):
        try:
            data = channel.recv(16)
        except OSError:  # nothing more now (BlockingIOError), or the worker is gone
            break
        if not data:
            break  # the worker is gone; the reaper sees it
        got = True
    return got


def wait_writable(channels: list[socket.socket], timeout: float) -> None:
    """Until one of the channels has room for another message, or *timeout*."""
    poll = select.poll()
    for ch in channels:
        poll.register(ch, select.POLLOUT)
    poll.poll(max(0, int(timeout * 1000)))
