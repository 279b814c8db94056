"""The stream count of a send (client/tuning.py): its rules and the timing of
its looks, on injected clocks and pings (no sockets, no waiting)."""

from __future__ import annotations

import os

import pytest

from fastxfer.protocol.layout import DEFAULT_CHUNK
from fastxfer.client import tuning
from fastxfer.client.tuning import (AUTO_MAX_STREAMS, TUNE_INTERVAL, TUNE_MIN_INTERVAL, TUNE_PINGS, TUNE_RTTS,
                                    Tuner, control_rtts, full_rtt, link_full, look_interval, more_streams)
from fastxfer.errors import ConnectError


def test_automatic_streams_and_chunks_follow_the_path() -> None:
    cpus = os.cpu_count() or 2
    # near the server: one stream per core (at least 2, at most 8), never more than the work
    assert tuning.auto_streams(1000, long_path=False) == min(8, max(2, cpus))
    assert tuning.auto_streams(1, long_path=False) == 1
    # a long path starts wider
    assert tuning.auto_streams(1000, long_path=True) == tuning.LONG_PATH_STREAMS
    # chunks: big near the server; on a long path small enough for every stream tuning may add
    assert tuning.auto_chunk(1 << 30, long_path=False) == DEFAULT_CHUNK
    assert tuning.auto_chunk(16 << 20, long_path=True) == 1 << 20
    assert tuning.auto_chunk(1 << 30, long_path=True) == DEFAULT_CHUNK
    for size in (1, 5 << 20, 100 << 20, 1 << 34):
        chunk = tuning.auto_chunk(size, long_path=True)
        assert tuning.LONG_PATH_MIN_CHUNK <= chunk <= DEFAULT_CHUNK and chunk & (chunk - 1) == 0


def test_streams_double_while_the_rate_still_grows() -> None:
    def more(rate, before, streams=8, waiting=100, busy=False, full=False):
        return more_streams(rate, before, streams, waiting, busy, full)

    assert more(10.0, 0.0) == 8  # first look: double
    # first look, no chunk handed to the kernel yet (a 4 MiB chunk in slow start): the path decides
    assert more(0.0, 0.0) == 8
    assert more(0.0, 0.0, full=True) == 0
    assert more(20.0, 10.0) == min(8, AUTO_MAX_STREAMS - 8)  # it paid: again
    assert more(11.0, 10.0) == 0  # under 15 % more: stop
    assert more(0.0, 10.0) == 0  # nothing moved since the last growth: stop
    assert more(50.0, 10.0, busy=True) == 0  # CPU-bound: more streams cannot help
    assert more(50.0, 10.0, full=True) == 0  # the path's queue is filling: more streams only add loss
    assert more(50.0, 10.0, waiting=3) == 3  # no more streams than waiting pieces
    assert more(50.0, 10.0, streams=AUTO_MAX_STREAMS) == 0  # at the cap
    # the control connection's round trip under load against the idle one (perf/wan.py: 20 ms idle,
    # 34-74 ms once 8 streams fill a clean link; 101 ms on a link capped per connection, but for a
    # passing burst: single pings of 122 and 164 ms, the next ones 103-111 ms)
    assert not link_full(0.100, [0.101, 0.104, 0.110])
    assert not link_full(0.100, [0.164, 0.110])  # a burst, not a standing queue
    assert not link_full(0.100, [0.122])
    assert link_full(0.020, [0.028, 0.031, 0.036])
    assert link_full(0.020, [0.051, 0.074, 0.037])
    assert link_full(0.100, [float("inf")] * 3)  # the pings failed
    assert full_rtt(0.100) == pytest.approx(0.126) and full_rtt(0.020) == pytest.approx(0.026)
    assert not link_full(0.020, [])  # nothing measured: no verdict
    assert not link_full(0.0001, [0.0009])  # loopback jitter is not a full link


def test_looks_are_counted_in_round_trips() -> None:
    # 100 ms (capped, lossy): 0.8 s, once slow start to 50 Mbit/s (~430 packets, ~6 round trips) is over
    assert look_interval(0.100) == pytest.approx(TUNE_RTTS * 0.100)
    assert 0.5 <= look_interval(0.100) <= TUNE_INTERVAL
    assert look_interval(0.020) == TUNE_MIN_INTERVAL  # 20 ms (clean): never shorter than the floor
    assert look_interval(0.002) == TUNE_MIN_INTERVAL
    assert look_interval(0.600) == TUNE_INTERVAL  # a satellite path: never longer than the ceiling
    for rtt in (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 1.0, 10.0):
        assert TUNE_MIN_INTERVAL <= look_interval(rtt) <= TUNE_INTERVAL


class Path100ms:
    """A capped, lossy path: 100 ms idle; each ping takes the next of *takes* on the clock."""

    def __init__(self, clock: list[float], takes: list[float]) -> None:
        self.clock, self.takes, self.count = clock, takes, 0

    def pings(self, count: int, enough: float) -> list[float]:
        def ping() -> None:
            self.clock[0] += self.takes[self.count % len(self.takes)]
            self.count += 1

        return control_rtts(ping, count, enough, clock=lambda: self.clock[0])


def tuner(clock: list[float]) -> Tuner:
    return Tuner(0.100, True, clock=lambda: clock[0], cpu_clock=lambda: 0.0)


def test_first_look_comes_once_every_stream_is_open() -> None:
    clock = [0.0]
    path = Path100ms(clock, [0.101])
    t = tuner(clock)
    every = look_interval(0.100)

    def look(at: float, all_open: bool = True) -> int:
        clock[0] = at
        return t.look(0, all_open, 8, 100, path.pings)

    for at in (0.0, 0.5, 1.0, 1.5):  # streams still opening: the span has not begun
        assert look(at, all_open=False) == 0
    assert t.mark[0] == 1.5
    assert look(1.5 + every - 0.01) == 0
    assert t.wait(True) == pytest.approx(0.01)  # the main thread wakes for the look
    assert look(1.5 + every + 0.001) == 8  # the first look: no look skipped, no rate needed
    assert not t.active  # 16: the cap, tuning is over
    assert t.wait(True) == tuning.TEND_WAIT
    assert path.count == 1  # the first ping came back in time: enough


def test_a_passing_burst_is_not_a_full_path() -> None:
    clock = [10.0]
    path = Path100ms(clock, [0.164, 0.110, 0.200])  # the first ping is late, the second is not
    t = tuner(clock)
    assert t.look(0, True, 8, 100, path.pings) == 0
    clock[0] += look_interval(0.100) + 0.001
    assert t.look(0, True, 8, 100, path.pings) == 8 and path.count == 2


def test_a_standing_queue_ends_tuning() -> None:
    clock = [20.0]
    path = Path100ms(clock, [0.200, 0.140, 0.180])  # every ping late: a shared bottleneck filling
    t = tuner(clock)
    t.look(0, True, 8, 100, path.pings)
    clock[0] += look_interval(0.100) + 0.001
    assert t.look(0, True, 8, 100, path.pings) == 0 and not t.active and path.count == TUNE_PINGS


def test_growth_that_pays_goes_on_and_one_that_does_not_ends_it() -> None:
    clock = [0.0]
    path = Path100ms(clock, [0.101])
    t = tuner(clock)
    every = look_interval(0.100) + 0.001
    t.look(0, True, 4, 100, path.pings)
    clock[0] += every
    assert t.look(10 << 20, True, 4, 100, path.pings) == 4  # first look: double to 8
    assert t.active and t.mark is None
    t.look(10 << 20, True, 8, 100, path.pings)  # a new span begins
    clock[0] += every
    assert t.look(20 << 20, True, 8, 100, path.pings) == 0  # the new streams' slow start: skipped
    clock[0] += every
    assert t.look(60 << 20, True, 8, 100, path.pings) == 8  # 40 MiB a span against 10: it paid
    assert not t.active  # 16: the cap
    t = tuner(clock)
    t.rate = 100.0  # the rate before the last growth
    t.look(0, True, 8, 100, path.pings)
    clock[0] += every
    assert t.look(int(100.0 * every), True, 8, 100, path.pings) == 0 and not t.active  # no gain: over


def test_a_failed_ping_counts_as_a_full_path() -> None:
    def ping() -> None:
        raise ConnectError("gone")

    assert control_rtts(ping, 3, 0.1) == [float("inf")] * 3


def test_an_inactive_tuner_never_adds() -> None:
    clock = [0.0]
    t = Tuner(0.001, False, clock=lambda: clock[0], cpu_clock=lambda: 0.0)
    clock[0] = 100.0
    assert t.look(1 << 30, True, 2, 100, lambda n, e: [0.0]) == 0
    assert t.wait(True) == tuning.TEND_WAIT


def test_no_stream_is_added_while_the_server_holds_the_streams_back() -> None:
    assert tuning.server_bound(busy=2.0, held=1.0)  # half the time: the server's window
    assert not tuning.server_bound(busy=2.0, held=0.9)
    assert not tuning.server_bound(busy=0.0, held=0.0)  # nothing to send yet: no verdict
    assert more_streams(10.0, 0.0, 8, 100, False, False, server_bound=True) == 0  # even at the first look
    clock = [0.0]
    path = Path100ms(clock, [0.101])  # the path's queue is empty: it is not the path
    stalls = [(0.0, 0.0)]
    t = tuner(clock)
    t.look(0, True, 8, 100, path.pings, lambda: stalls[0])
    clock[0] += look_interval(0.100)
    stalls[0] = (8 * 0.8, 8 * 0.6)  # 8 streams, 0.8 s each with data to send, 0.6 s held by the server
    assert t.look(10 << 20, True, 8, 100, path.pings, lambda: stalls[0]) == 0 and not t.active


def test_the_span_counts_only_its_own_stalls() -> None:
    clock = [0.0]
    path = Path100ms(clock, [0.101])
    stalls = [(100.0, 90.0)]  # held back long ago, before this span
    t = tuner(clock)
    t.look(0, True, 8, 100, path.pings, lambda: stalls[0])
    clock[0] += look_interval(0.100)
    stalls[0] = (106.4, 90.1)  # this span: 6.4 s busy, 0.1 s held
    assert t.look(10 << 20, True, 8, 100, path.pings, lambda: stalls[0]) == 8
