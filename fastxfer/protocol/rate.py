"""A token bucket for bandwidth limits (pure: the caller passes the time).

``--bwlimit`` on send and get and ``serve --client-bwlimit`` share it; the
thread-safe pacer that sleeps is net/pace.py.

The bucket holds at most ``burst`` bytes of credit and refills at ``rate``
bytes a second.  A reservation may take more than the bucket holds (a 4 MiB
chunk against a 1 MiB burst): the bucket goes into debt and the caller waits
until the debt is paid before it sends.  So over any span of t seconds the
bytes let through are at most ``burst + rate * t``, whatever the sizes asked
for, and a long transfer of N bytes takes (N - burst) / rate seconds.

The state is one number, the time at which the bucket is empty (GCRA's
"theoretical arrival time"): the credit at time *now* is
``min(burst, (now - empty_at) * rate)``.
"""

from __future__ import annotations

MAX_BURST = 1 << 20  # the most a limited transfer sends at once after a pause


def burst_for(rate: int) -> int:
    """One second of the rate, at most MAX_BURST (a slow limit gets no 1 MiB rush)."""
    return max(1, min(MAX_BURST, rate))


class TokenBucket:
    """Credit in bytes at *rate* bytes a second, at most *burst*; full at *now*."""

    def __init__(self, rate: int, now: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("a rate limit must be a positive number of bytes a second")
        self.rate = float(rate)
        self.burst = burst_for(rate) if burst is None else max(1, min(MAX_BURST, burst))
        self.empty_at = now - self.burst / self.rate

    def credit(self, now: float) -> float:
        """Bytes that may go now without waiting (negative: the debt still to pay)."""
        return min(float(self.burst), (now - self.empty_at) * self.rate)

    def reserve(self, size: int, now: float) -> float:
        """Take *size* bytes of credit; the seconds to wait before sending them (0: at once).

        Reservations are served in the order they are made: one made while the
        bucket is in debt waits behind the earlier ones."""
        start = max(self.empty_at, now - self.burst / self.rate)  # never more credit than the burst
        self.empty_at = start + size / self.rate
        return max(0.0, self.empty_at - now)
