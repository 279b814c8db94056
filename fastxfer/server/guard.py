"""What a stranger can cost a worker: a slot, a deadline, nothing more.

Every connection starts unauthenticated, with a hard deadline for its whole
opening (first byte, TLS handshake, client proof or stream ticket): a
reaper thread shuts down any connection past it, so a peer that trickles
one byte a second is cut off no matter how its bytes are spaced.
Unauthenticated connections are also counted per source address, so one
stranger cannot use up the slots that authorized clients need, and in all:
a worker holds at most ``bound`` of them (half its slots), and when a new
one needs room the oldest is cut.  So strangers from however many
addresses never hold the slots an authorized client needs; a flood only
shortens the strangers' own lives, and an opening that takes milliseconds
completes long before a flood has cut through the ``bound`` connections
admitted after it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from fastxfer.protocol import limits

log = logging.getLogger("fastxfer.server")


class Watch:
    def __init__(self, watch: socket.socket, address: str, peer: str) -> None:
        self.watch = watch
        self.address = address
        self.peer = peer


def _cut(watch: Watch) -> None:
    """Wake the thread blocked on the connection; it ends and frees its slot.
    Only under the lock and while the watch is listed: its owner closes it
    only after taking it off the list, so the descriptor is still this one."""
    try:
        watch.watch.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Guard:
    def __init__(self, per_address: int = limits.UNAUTH_PER_ADDRESS,
                 bound: int = limits.unauth_per_worker(limits.MAX_CONNECTIONS_PER_WORKER)) -> None:
        self.per_address = per_address
        self.bound = bound
        self.lock = threading.Lock()
        self.strangers: dict[str, int] = {}
        # In admission order (dicts keep it), so the first is the oldest.
        self.deadlines: dict[Watch, float] = {}
        threading.Thread(target=self._reap, name="deadline-reaper", daemon=True).start()

    def admit(self, sock: socket.socket, peer: str) -> Watch | None:
        """Count a new connection as a stranger; None if its address has too many.
        At the bound the oldest stranger is cut to make room."""
        address = peer.rsplit(":", 1)[0]
        evicted = None
        with self.lock:
            if self.strangers.get(address, 0) >= self.per_address:
                return None
            if len(self.deadlines) >= self.bound:
                evicted = next(iter(self.deadlines))
                _cut(evicted)
                # Uncounted now, not when its thread ends: the room is for this one.
                del self.deadlines[evicted]
                self._uncount(evicted.address)
            self.strangers[address] = self.strangers.get(address, 0) + 1
            # Our own descriptor of the connection: TLS wrapping detaches the
            # original socket object, and a closed number may be reused.
            watch = Watch(sock.dup(), address, peer)
            self.deadlines[watch] = time.monotonic() + limits.OPENING_DEADLINE
        if evicted is not None:
            log.warning("cut %s: the oldest of %d unauthenticated connections, to make room for %s",
                        evicted.peer, self.bound, peer)
        return watch

    def promote(self, watch: Watch) -> None:
        """The peer proved itself: no longer a stranger, no opening deadline."""
        with self.lock:
            if self.deadlines.pop(watch, None) is not None:
                self._uncount(watch.address)
        watch.watch.close()

    forget = promote

    def _uncount(self, address: str) -> None:
        left = self.strangers.get(address, 1) - 1
        if left:
            self.strangers[address] = left
        else:
            self.strangers.pop(address, None)

    def _reap(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self.lock:
                for watch in [s for s, t in self.deadlines.items() if t < now]:
                    _cut(watch)
