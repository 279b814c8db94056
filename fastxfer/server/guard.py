"""What a stranger can cost a worker: a slot, a deadline, nothing more.

Every connection starts unauthenticated, with a hard deadline for its whole
opening (first byte, TLS handshake, client proof or stream ticket): a
reaper thread shuts down any connection past it, so a peer that trickles
one byte a second is cut off no matter how its bytes are spaced.
Unauthenticated connections are also counted per source address, so one
stranger cannot use up the slots that authorized clients need.
"""

from __future__ import annotations

import socket
import threading
import time

from fastxfer.protocol import limits


class Watch:
    def __init__(self, watch: socket.socket, address: str) -> None:
        self.watch = watch
        self.address = address


class Guard:
    def __init__(self, per_address: int = limits.UNAUTH_PER_ADDRESS) -> None:
        self.per_address = per_address
        self.lock = threading.Lock()
        self.strangers: dict[str, int] = {}
        self.deadlines: dict[Watch, float] = {}
        threading.Thread(target=self._reap, name="deadline-reaper", daemon=True).start()

    def admit(self, sock: socket.socket, address: str) -> Watch | None:
        """Count a new connection as a stranger; None if its address has too many."""
        with self.lock:
            if self.strangers.get(address, 0) >= self.per_address:
                return None
            self.strangers[address] = self.strangers.get(address, 0) + 1
            # Our own descriptor of the connection: TLS wrapping detaches the
            # original socket object, and a closed number may be reused.
            watch = Watch(sock.dup(), address)
            self.deadlines[watch] = time.monotonic() + limits.OPENING_DEADLINE
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
                late = [s for s, t in self.deadlines.items() if t < now]
                for watch in late:
                    try:
                        watch.watch.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it
                    except OSError:
                        pass
