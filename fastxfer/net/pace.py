"""A bandwidth limit shared by threads: one token bucket (protocol/rate.py)
behind a lock, on the monotonic clock, and the sleep that pays its debt.

One Pacer serves every stream of a ``send --bwlimit`` or ``get --bwlimit``,
and one per client name serves a server worker's streams of that client
(``serve --client-bwlimit``).  FramedConn paces a frame's body a slice at a
time (``Pacer.slice``), so a large frame trickles out (or in) at the rate
instead of waiting whole and then rushing, and neither peer's socket
timeout sees a silence longer than a slice's wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fastxfer.protocol.rate import TokenBucket

SLICE_MAX = 256 << 10  # bytes a paced frame moves between two waits
SLICE_MIN = 16 << 10


class Pacer:
    """*rate* bytes a second over every thread that takes from it.

    The clock and the sleep are passed in, so tests need not wait."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, burst: int | None = None) -> None:
        self.clock = clock
        self.sleep = sleep
        self.bucket = TokenBucket(rate, clock(), burst)
        self.rate = rate
        # 1/128 s of the rate: each stream's turns come often, so its TCP connection is never
        # idle long enough to fall back to slow start (perf/README.md, a lossy long path:
        # slices of a quarter second carried 0.8 of a 2 MiB/s limit over 16 streams, these 0.93).
        self.slice = max(SLICE_MIN, min(SLICE_MAX, rate // 128))
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Wait until *size* more bytes may go (at once when there is credit)."""
        with self._lock:
            delay = self.bucket.reserve(size, self.clock())
        if delay > 0:
            self.sleep(delay)  # outside the lock: the other threads reserve behind this one meanwhile

    def slices(self, size: int) -> list[tuple[int, int]]:
        """(start, end) of each slice of *size* bytes."""
        return [(start, min(size, start + self.slice)) for start in range(0, size, self.slice)] or [(0, 0)]
