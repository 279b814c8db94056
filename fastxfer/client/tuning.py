"""How many streams a send uses, and how it adds more on a long path.

Near the server (a round trip under LONG_PATH_RTT) the CPUs set the pace:
one stream per core is as fast as any more, and more cost CPU and memory
(perf/README.md).  On a long path one TCP connection's window and its
recovery from loss set the pace, and parallel connections add up
(perf/README.md, perf/wan.py): start with LONG_PATH_STREAMS, then double
while the measured rate still grows by TUNE_GAIN, up to AUTO_MAX_STREAMS.
The looks are counted in round trips of the path, from the moment every
stream is open: the first comes once TCP slow start is over, and decides
from the path alone (is a shared queue filling?), not from a rate that slow
start and whole-chunk counting still distort.

Nor are streams added when the server sets the pace: when, over a look's
span, the server's receive windows held the streams back for SERVER_BOUND of
the time they had data to send (TCP_INFO's rwnd_limited), the server reads
slower than the path delivers (its disk syncs, or its CPUs are busy), and
more streams would only hold more unsynced data there.  Chunk sizes are
never raised either: a long path gets smaller ones (auto_chunk).

Under a bandwidth limit (``--bwlimit``) the limit, not the path, may set the
pace.  The rate then stays flat however many streams there are, which the
looks read as "more streams do not pay": they stop, so a limit is never
taken for a slow network that more streams would beat.  The first look needs
no rate and would double the streams; it does not once the rate is within
LIMIT_SHARE of the limit (``at_limit``), the limit being what holds the
streams back.  Below that share the path is, and streams are added as
without a limit (perf/README.md, "Bandwidth limits": a lossy long path
whose 8 streams carried less than the limit).  How long the streams waited for
the limit's credit cannot tell this: each stream waits its turn whether or
not the path could carry more.  A slow limit's first look may still double
the streams, as a span then holds one whole chunk or none; the extra streams
only wait their turn, and the limit holds.  Near the server a limited send
starts with one stream per LIMITED_STREAM_RATE of the limit, not one per
core: there one stream carries far more than such a limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from fastxfer.errors import FxError
from fastxfer.protocol import layout

LONG_PATH_RTT = 0.002  # seconds: the least round trip of the control connection (tcpi_min_rtt)
LONG_PATH_STREAMS = 8
AUTO_MAX_STREAMS = 16
TUNE_RTTS = 8  # round trips between two looks: slow start to ~1,000 packets takes ~7
TUNE_MIN_INTERVAL = 0.25  # seconds: the rate of shorter spans is mostly chunk boundaries
TUNE_INTERVAL = 2.0  # seconds: the longest span between two looks (250 ms round trips)
TUNE_GAIN = 1.15
LINK_FULL_RTT = 1.25  # loaded / idle round trip beyond which the path is full
TUNE_PINGS = 3  # pings on the control connection per look at most; the least counts
LONG_PATH_MIN_CHUNK = 1 << 20
TEND_WAIT = 0.5  # seconds the main thread waits at most between two turns of its chores
SERVER_BOUND = 0.5  # share of the streams' busy time the server's receive windows held them back
LIMIT_SHARE = 0.9  # a rate this close to the bandwidth limit is the limit's, not the path's
LIMITED_STREAM_RATE = 128 << 20  # bytes a second one stream carries near the server with CPU to spare


def auto_streams(work: int, long_path: bool, limit: int = 0) -> int:
    """Streams to start with for *work* pieces (chunks and bundles), under a
    bandwidth *limit* in bytes a second (0: none)."""
    cpus = os.cpu_count() or 2
    wanted = LONG_PATH_STREAMS if long_path else min(8, max(2, cpus))
    if limit and not long_path:
        wanted = min(wanted, -(-limit // LIMITED_STREAM_RATE))
    return max(1, min(wanted, work))


def look_interval(rtt: float) -> float:
    """Seconds of sending (every stream open) between two looks at the rate:
    TUNE_RTTS round trips, enough for new streams to leave TCP slow start
    (~log2(window / 10) round trips: 6 for 50 Mbit/s at 100 ms) and for the
    queue of a shared bottleneck to fill, within TUNE_MIN_INTERVAL and
    TUNE_INTERVAL."""
    return min(TUNE_INTERVAL, max(TUNE_MIN_INTERVAL, TUNE_RTTS * rtt))


def more_streams(rate: float, rate_before: float, streams: int, waiting: int, cpu_busy: bool,
                 link_full: bool, server_bound: bool = False) -> int:
    """Streams to add after a look (0: tuning is over).  At the first look
    (*rate_before* 0) as many as there are, at a later one as many again if the
    last growth paid (the rate grew by TUNE_GAIN); never beyond the cap or the
    pieces waiting, never when this process already keeps the CPUs busy, and
    never once the path's queue is filling (its round trip has grown): then
    more streams only add losses and delay, not speed; nor when the server
    is what holds the streams back (*server_bound*).  The first look needs
    no rate: a chunk counts once the kernel took all of it, and a stream in
    slow start may not have finished its first one yet."""
    if cpu_busy or link_full or server_bound:
        return 0
    if rate_before > 0 and rate < rate_before * TUNE_GAIN:
        return 0
    return max(0, min(streams, AUTO_MAX_STREAMS - streams, waiting))


def full_rtt(base_rtt: float) -> float:
    """The round trip beyond which a path whose idle round trip is *base_rtt* is full."""
    return base_rtt * LINK_FULL_RTT + 0.001


def link_full(base_rtt: float, loaded_rtts: list[float]) -> bool:
    """Whether every round trip under load (samples taken one after the other
    on the quiet control connection) is beyond full_rtt: a standing queue that
    every connection shares, not a passing burst (the least of the samples,
    as CoDel judges a queue; perf/README.md: single pings of 122 and 164 ms on
    the capped path, whose next ones took 103-110 ms against 100 idle)."""
    if not loaded_rtts or base_rtt <= 0:
        return False
    return min(loaded_rtts) > full_rtt(base_rtt)


def auto_chunk(size: int, long_path: bool) -> int:
    """On a long path a file is cut so that every stream tuning may open gets
    pieces of it; near the server big chunks cost the least CPU."""
    if not long_path:
        return layout.DEFAULT_CHUNK
    chunk = LONG_PATH_MIN_CHUNK
    while chunk < layout.DEFAULT_CHUNK and chunk * 2 * AUTO_MAX_STREAMS < size:
        chunk *= 2
    return chunk


def server_bound(busy: float, held: float) -> bool:
    """Whether the server's receive windows held the streams back for SERVER_BOUND of
    the *busy* seconds they had data to send (*held*: seconds so held, all streams)."""
    return busy > 0 and held >= SERVER_BOUND * busy


def at_limit(rate: float, limit: int) -> bool:
    """Whether *rate* (bytes a second) is the bandwidth *limit*'s doing (0: no limit)."""
    return limit > 0 and rate >= LIMIT_SHARE * limit


def cpu_busy(cpu_seconds: float, seconds: float) -> bool:
    """Whether this process kept (nearly) every core busy over the span."""
    return cpu_seconds / seconds >= 0.8 * (os.cpu_count() or 1)


Pings = Callable[[int, float], list[float]]  # (at most, enough) -> round trips of control pings
Stalls = Callable[[], tuple[float, float]]  # -> (busy, held) seconds, all streams so far (Conn.window_stalls)


class Tuner:
    """The looks at the rate of one send on a long path, and what each decides.

    The clocks are passed in, so the timing is tested without waiting.
    """

    def __init__(self, base_rtt: float, active: bool, clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time, limit: int = 0) -> None:
        self.base_rtt = base_rtt
        self.limit = limit  # --bwlimit, bytes a second (0: none)
        self.active = active  # may still add streams
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.mark: tuple[float, int, float, tuple[float, float]] | None = None  # (time, sent, CPU, stalls)
        self.rate = 0.0  # rate before the last growth
        self.skip = 0  # looks to let pass: new streams are still in TCP slow start
        self.every = look_interval(base_rtt)

    def look(self, sent: int, all_open: bool, streams: int, waiting: int, pings: Pings,
             stalls: Stalls = lambda: (0.0, 0.0)) -> int:
        """Streams to add now, given *sent* bytes so far, whether every stream
        opened, the streams started and the pieces waiting (0: none, now)."""
        if not self.active:
            return 0
        now, cpu, stalled = self.clock(), self.cpu_clock(), stalls()
        if self.mark is None or not all_open:
            self.mark = (now, sent, cpu, stalled)  # the span starts once every stream is open
            return 0
        then, sent_then, cpu_then, stalled_then = self.mark
        if now - then < self.every:
            return 0
        rate = (sent - sent_then) / (now - then)
        self.mark = (now, sent, cpu, stalled)
        if self.skip:
            self.skip -= 1
            return 0
        # Is a queue building that every connection shares?  The streams' own
        # round trips cannot tell: a per-connection cap fills a queue of its own
        # per stream.  The quiet control connection can (up to TUNE_PINGS pings a
        # look, until one comes back in time).
        full = link_full(self.base_rtt, pings(TUNE_PINGS, full_rtt(self.base_rtt)))
        held_back = (server_bound(stalled[0] - stalled_then[0], stalled[1] - stalled_then[1])
                     or at_limit(rate, self.limit))
        more = more_streams(rate, self.rate, streams, waiting, cpu_busy(cpu - cpu_then, now - then), full,
                            held_back)
        if not more:
            self.active = False  # this is as fast as more streams would make it
            return 0
        self.rate = rate
        self.skip = 1  # the new streams' slow start would pass for growth
        self.mark = None
        self.active = streams + more < AUTO_MAX_STREAMS
        return more

    def wait(self, all_open: bool) -> float:
        """How long the main thread may wait before it tends again: at most
        TEND_WAIT, less when a look at the rate is due sooner."""
        if not self.active:
            return TEND_WAIT
        if self.mark is None or not all_open:
            return min(TEND_WAIT, max(0.05, self.every / TUNE_RTTS))  # about a round trip
        return min(TEND_WAIT, max(0.01, self.mark[0] + self.every - self.clock()))


def control_rtts(ping: Callable[[], None], count: int, enough: float,
                 clock: Callable[[], float] = time.monotonic) -> list[float]:
    """Up to *count* pings, one after the other, each timed, until one takes
    at most *enough* seconds; a ping that fails counts as a full path."""
    rtts: list[float] = []
    try:
        while len(rtts) < count and not (rtts and rtts[-1] <= enough):
            started = clock()
            ping()
            rtts.append(clock() - started)
        return rtts
    except FxError:
        return rtts + [float("inf")] * (count - len(rtts))
