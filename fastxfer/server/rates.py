"""``serve --client-bwlimit``: one bandwidth limit per client name, held
across every stream of that client in every worker of the server.

A client's streams are spread over the workers (the master hands out
connections in turn), so a bucket per worker would let a client of N workers
reach N times the limit.  The buckets live in one shared table instead, made
by the master before it forks: an anonymous memory file (memfd) mapped by
every worker, a slot per client name holding its bucket's one number (the
time it is empty, protocol/rate.py, on CLOCK_MONOTONIC, which every process
of the machine shares).  A reservation holds a POSIX record lock on that
file (lockf) for the few microseconds of its arithmetic: the kernel drops it
if its worker dies, so a worker killed for its silence cannot leave the
others waiting; a thread lock orders a worker's own threads, which the
record lock does not.

A stream takes its client's credit before it reads each slice of a frame's
body (DATA, BUNDLE: what the client sends) and before it sends each slice of
an answer (DATA, DATAS: what a restore receives); see net/framed.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from fastxfer.net.pace import Pacer
from fastxfer.protocol.rate import TokenBucket

SLOTS = 4096  # client names the table holds; beyond that a name gets a bucket per worker
SLOT = struct.Struct("<Qd")  # a name's 64-bit key (0: free slot), the time its bucket is empty


class ClientRates:
    """The shared table; made once in the master, inherited by every worker."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.fd = os.memfd_create("fastxfer-client-bwlimit", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, SLOTS * SLOT.size)
        self.table = mmap.mmap(self.fd, SLOTS * SLOT.size)
        self._threads = threading.Lock()
        self._alone: dict[str, Pacer] = {}  # names the full table has no slot for: this worker only

    def pacer(self, client: str) -> Pacer:
        """The pacer a stream of *client* takes its credit from."""
        key = int.from_bytes(hashlib.blake2b(client.encode(), digest_size=8).digest(), "little") or 1
        with self.locked():
            slot = self._slot(key)
        if slot is None:
            with self._threads:
                return self._alone.setdefault(client, Pacer(self.rate, self.clock))
        return SharedPacer(self, slot)

    def _slot(self, key: int) -> int | None:
        """The slot of *key*, taken if new (linear probing); None when the table is full.
        Called with the lock held."""
        start = key % SLOTS
        for i in range(SLOTS):
            slot = (start + i) % SLOTS
            held, _ = SLOT.unpack_from(self.table, slot * SLOT.size)
            if held == key:
                return slot
            if held == 0:
                SLOT.pack_into(self.table, slot * SLOT.size, key, float("-inf"))  # -inf: a full bucket
                return slot
        return None

    @contextmanager
    def locked(self):
        with self._threads:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def reserve(self, slot: int, bucket: TokenBucket, size: int) -> float:
        """Seconds to wait before *size* bytes of the slot's client may go."""
        offset = slot * SLOT.size
        with self.locked():
            key, empty_at = SLOT.unpack_from(self.table, offset)
            now = self.clock()
            bucket.empty_at = empty_at
            delay = bucket.reserve(size, now)
            SLOT.pack_into(self.table, offset, key, bucket.empty_at)
        return delay


class SharedPacer(Pacer):
    """A Pacer whose bucket is one slot of the shared table."""

    def __init__(self, rates: ClientRates, slot: int) -> None:
        super().__init__(rates.rate, rates.clock)
        self.rates = rates
        self.index = slot

    def take(self, size: int) -> None:
        delay = self.rates.reserve(self.index, self.bucket, size)
        if delay > 0:
            self.sleep(delay)
