"""What a stranger can cost a worker: a slot, a deadline, nothing more.

Every connection starts unauthenticated, with a hard deadline for its whole
opening (first byte, TLS handshake, client proof or stream ticket): a
reaper thread shuts down any connection past it, so a peer that trickles
one byte a second is cut off no matter how its bytes are spaced.
Unauthenticated connections are also counted per source address, so one
stranger cannot use up the slots that authorized clients need, and in all:
a worker holds at most ``bound`` of them (half its slots), and when a new
one needs room the address holding the most gives up its oldest.  So
strangers from however many addresses never hold the slots an authorized
client needs, and a flood only shortens the strangers' own lives: a
client's opening is cut only once no address holds more than its own,
and then only after ``bound`` newer strangers came (an opening takes
milliseconds; a flood needs far longer to cycle the bound).
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
        # Per address, its strangers in admission order (dicts keep it): the first is the oldest.
        self.strangers: dict[str, dict[Watch, None]] = {}
        self.deadlines: dict[Watch, float] = {}
        threading.Thread(target=self._reap, name="deadline-reaper", daemon=True).start()

    def admit(self, sock: socket.socket, peer: str) -> Watch | None:
        """Count a new connection as a stranger; None if its address has too many.
        At the bound a stranger is cut to make room (``_make_room``)."""
        address = peer.rsplit(":", 1)[0]
        evicted = None
        with self.lock:
            if len(self.strangers.get(address, ())) >= self.per_address:
                return None
            if len(self.deadlines) >= self.bound:
                evicted = self._make_room()
            # Our own descriptor of the connection: TLS wrapping detaches the
            # original socket object, and a closed number may be reused.
            watch = Watch(sock.dup(), address, peer)
            self.deadlines[watch] = time.monotonic() + limits.OPENING_DEADLINE
            self.strangers.setdefault(address, {})[watch] = None
        if evicted is not None:
            log.warning("cut %s: the oldest of the address holding the most of %d unauthenticated "
                        "connections, to make room for %s", evicted.peer, self.bound, peer)
        return watch

    def _make_room(self) -> Watch:
        # The address holding the most gives one up, its oldest: a flood from
        # a few dozen addresses cuts its own connections, never the one of a
        # client whose address holds fewer; with one each it is the oldest of all.
        heaviest = max(self.strangers.values(), key=len)
        victim = next(iter(heaviest))
        _cut(victim)
        self._uncount(victim)  # now, not when its thread ends: the room is for the newcomer
        return victim

    def promote(self, watch: Watch) -> None:
        """The peer proved itself: no longer a stranger, no opening deadline."""
        with self.lock:
            if watch in self.deadlines:
                self._uncount(watch)
        watch.watch.close()

    forget = promote

    def _uncount(self, watch: Watch) -> None:
        del self.deadlines[watch]
        held = self.strangers[watch.address]
        del held[watch]
        if not held:
            del self.strangers[watch.address]

    def _reap(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self.lock:
                for watch in [s for s, t in self.deadlines.items() if t < now]:
                    _cut(watch)
