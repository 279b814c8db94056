"""Pure tests of the chunk layout, hash list and chunk record in fastxfer.layout."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from fastxfer.protocol import layout
from fastxfer.protocol.wire import MAX_CHUNK
from fastxfer.protocol.layout import DEFAULT_CHUNK, MAX_CHUNKS, MIN_CHUNK, RECORD_ENTRY


def _digest(i: int) -> bytes:
    return hashlib.sha256(b"chunk %d" % i).digest()


# ---------------------------------------------------------------- choose_chunk


def test_choose_chunk_default() -> None:
    assert layout.choose_chunk(0) == DEFAULT_CHUNK
    assert layout.choose_chunk(10 << 30) == DEFAULT_CHUNK
    assert layout.choose_chunk(123, 0) == DEFAULT_CHUNK


@pytest.mark.parametrize(
    "requested, expected",
    [
        (1, MIN_CHUNK),
        (MIN_CHUNK - 1, MIN_CHUNK),
        (MIN_CHUNK, MIN_CHUNK),
        (1 << 20, 1 << 20),
        (MAX_CHUNK, MAX_CHUNK),
        (MAX_CHUNK + 1, MAX_CHUNK),
        (1 << 40, MAX_CHUNK),
    ],
)
def test_choose_chunk_clamped(requested: int, expected: int) -> None:
    assert layout.choose_chunk(1 << 20, requested) == expected


def test_choose_chunk_grows_to_keep_count() -> None:
    size = MIN_CHUNK * MAX_CHUNKS  # exactly MAX_CHUNKS chunks of MIN_CHUNK
    assert layout.choose_chunk(size, MIN_CHUNK) == MIN_CHUNK
    assert layout.choose_chunk(size + 1, MIN_CHUNK) == 2 * MIN_CHUNK
    big = 3 * DEFAULT_CHUNK * MAX_CHUNKS  # 12 TiB: 4 MiB would need 3 Mi chunks
    chunk = layout.choose_chunk(big)
    assert chunk == 4 * DEFAULT_CHUNK
    assert layout.chunk_count(big, chunk) <= MAX_CHUNKS
    assert layout.valid_layout(big, chunk)


# Sizes that are not MIN_CHUNK * 2**k once doubled straight past MAX_CHUNK.
_GRID = [
    (size, requested)
    for size in [0, 1, MIN_CHUNK, 7 << 30, MIN_CHUNK * MAX_CHUNKS * 5 + 3, MAX_CHUNK * MAX_CHUNKS]
    for requested in [None, 1, MIN_CHUNK, 3 * MIN_CHUNK, 3 << 20, DEFAULT_CHUNK, MAX_CHUNK]
]


@pytest.mark.parametrize("size, requested", _GRID)
def test_choose_chunk_always_valid(size: int, requested: int | None) -> None:
    chunk = layout.choose_chunk(size, requested)
    assert MIN_CHUNK <= chunk <= MAX_CHUNK
    assert layout.chunk_count(size, chunk) <= MAX_CHUNKS
    assert layout.valid_layout(size, chunk)


def test_choose_chunk_beyond_the_largest_layout() -> None:
    # Over MAX_CHUNK * MAX_CHUNKS (16 TiB) no chunk size fits: it stops at MAX_CHUNK
    # and valid_layout says no, which the client turns into an error.
    size = MAX_CHUNK * MAX_CHUNKS + 1
    chunk = layout.choose_chunk(size)
    assert chunk == MAX_CHUNK
    assert not layout.valid_layout(size, chunk)


def test_valid_layout() -> None:
    assert layout.valid_layout(100, MIN_CHUNK)
    assert not layout.valid_layout(100, MIN_CHUNK - 1)
    assert not layout.valid_layout(100, MAX_CHUNK + 1)
    assert not layout.valid_layout(MIN_CHUNK * MAX_CHUNKS + 1, MIN_CHUNK)


# ---------------------------------------------------------------- count and span

C = MIN_CHUNK


@pytest.mark.parametrize(
    "size, count, last",
    [
        (0, 0, None),
        (1, 1, (0, 1)),
        (C - 1, 1, (0, C - 1)),
        (C, 1, (0, C)),
        (C + 1, 2, (C, 1)),
        (2 * C, 2, (C, C)),
        (5 * C + 17, 6, (5 * C, 17)),
    ],
)
def test_count_and_span(size: int, count: int, last: tuple[int, int] | None) -> None:
    assert layout.chunk_count(size, C) == count
    if last is not None:
        assert layout.chunk_span(size, C, count - 1) == last
    spans = [layout.chunk_span(size, C, i) for i in range(count)]
    assert sum(length for _, length in spans) == size
    for i, (offset, length) in enumerate(spans):
        assert offset == i * C
        assert 0 < length <= C
        if i + 1 < count:
            assert length == C


# ---------------------------------------------------------------- file digest


def test_file_digest_is_a_hash_list() -> None:
    digests = [_digest(i) for i in range(3)]
    size, chunk = 2 * C + 5, C
    head = b"FXHASH1\x00" + size.to_bytes(8, "big") + chunk.to_bytes(4, "big")
    expected = hashlib.sha256(head + b"".join(digests)).digest()
    assert layout.file_digest(size, chunk, digests) == expected


def test_file_digest_sensitivity() -> None:
    digests = [_digest(i) for i in range(4)]
    base = layout.file_digest(4 * C, C, digests)
    assert layout.file_digest(4 * C, C, list(digests)) == base
    variants = [
        layout.file_digest(4 * C, C, digests[::-1]),  # order
        layout.file_digest(4 * C, C, [digests[1], digests[0]] + digests[2:]),
        layout.file_digest(4 * C - 1, C, digests),  # size
        layout.file_digest(4 * C, 2 * C, digests),  # chunk
        layout.file_digest(4 * C, C, digests[:3]),  # a chunk missing
        layout.file_digest(4 * C, C, digests + [digests[0]]),
        layout.file_digest(4 * C, C, [_digest(9)] + digests[1:]),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_file_digest_empty_file() -> None:
    a = layout.file_digest(0, C, [])
    assert len(a) == 32
    assert a != layout.file_digest(0, 2 * C, [])


# ---------------------------------------------------------------- chunk record


def test_record_entry_layout() -> None:
    entry = layout.record_entry(5, _digest(5))
    assert len(entry) == RECORD_ENTRY == 48
    assert entry[:8] == (5).to_bytes(8, "big")
    assert entry[8:40] == _digest(5)
    assert entry[40:] == hashlib.sha256(entry[:40]).digest()[:8]


def test_record_roundtrip() -> None:
    order = list(range(20))
    random.Random(1).shuffle(order)
    data = b"".join(layout.record_entry(i, _digest(i)) for i in order)
    assert layout.parse_record(data, 20) == {i: _digest(i) for i in range(20)}
    assert layout.parse_record(b"", 20) == {}


@pytest.mark.parametrize("cut", [1, 8, 40, 47])
def test_record_torn_tail_ignored(cut: int) -> None:
    data = layout.record_entry(0, _digest(0)) + layout.record_entry(1, _digest(1))
    torn = data + layout.record_entry(2, _digest(2))[:cut]
    assert layout.parse_record(torn, 10) == {0: _digest(0), 1: _digest(1)}


@pytest.mark.parametrize("pos", [0, 7, 8, 39, 40, 47])
def test_record_corrupt_entry_ignored(pos: int) -> None:
    entries = [layout.record_entry(i, _digest(i)) for i in range(3)]
    bad = bytearray(entries[1])
    bad[pos] ^= 0x04
    data = entries[0] + bytes(bad) + entries[2]
    assert layout.parse_record(data, 10) == {0: _digest(0), 2: _digest(2)}


def test_record_zeroed_entry_ignored() -> None:
    # A crash can leave a block of zeros where an entry was being written.
    data = layout.record_entry(0, _digest(0)) + bytes(RECORD_ENTRY) + layout.record_entry(2, _digest(2))
    assert layout.parse_record(data, 10) == {0: _digest(0), 2: _digest(2)}


def test_record_index_beyond_count_ignored() -> None:
    data = b"".join(layout.record_entry(i, _digest(i)) for i in (0, 4, 5, 2**64 - 1))
    assert layout.parse_record(data, 5) == {0: _digest(0), 4: _digest(4)}
    assert layout.parse_record(data, 0) == {}


def test_record_later_entry_wins() -> None:
    data = (
        layout.record_entry(3, _digest(100))
        + layout.record_entry(1, _digest(1))
        + layout.record_entry(3, _digest(3))
    )
    assert layout.parse_record(data, 5) == {1: _digest(1), 3: _digest(3)}


def test_record_later_damaged_entry_does_not_erase_earlier() -> None:
    good = layout.record_entry(3, _digest(3))
    bad = bytearray(layout.record_entry(3, _digest(4)))
    bad[20] ^= 1
    assert layout.parse_record(good + bytes(bad), 5) == {3: _digest(3)}


def test_automatic_streams_and_chunks_follow_the_path() -> None:
    from fastxfer.client import send as client

    cpus = os.cpu_count() or 2
    # near the server: one stream per core (at least 2, at most 8), never more than the work
    assert client.auto_streams(1000, long_path=False) == min(8, max(2, cpus))
    assert client.auto_streams(1, long_path=False) == 1
    # a long path starts wider
    assert client.auto_streams(1000, long_path=True) == client.LONG_PATH_STREAMS
    # chunks: big near the server; on a long path small enough for every stream tuning may add
    assert client.auto_chunk(1 << 30, long_path=False) == DEFAULT_CHUNK
    assert client.auto_chunk(16 << 20, long_path=True) == 1 << 20
    assert client.auto_chunk(1 << 30, long_path=True) == DEFAULT_CHUNK
    for size in (1, 5 << 20, 100 << 20, 1 << 34):
        chunk = client.auto_chunk(size, long_path=True)
        assert client.LONG_PATH_MIN_CHUNK <= chunk <= DEFAULT_CHUNK and chunk & (chunk - 1) == 0


def test_streams_double_while_the_rate_still_grows() -> None:
    from fastxfer.client.send import AUTO_MAX_STREAMS, full_rtt, link_full, more_streams

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
    from fastxfer.client.send import TUNE_INTERVAL, TUNE_MIN_INTERVAL, TUNE_RTTS, look_interval

    # 100 ms (capped, lossy): 0.8 s, once slow start to 50 Mbit/s (~430 packets, ~6 round trips) is over
    assert look_interval(0.100) == pytest.approx(TUNE_RTTS * 0.100)
    assert 0.5 <= look_interval(0.100) <= TUNE_INTERVAL
    assert look_interval(0.020) == TUNE_MIN_INTERVAL  # 20 ms (clean): never shorter than the floor
    assert look_interval(0.002) == TUNE_MIN_INTERVAL
    assert look_interval(0.600) == TUNE_INTERVAL  # a satellite path: never longer than the ceiling
    for rtt in (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 1.0, 10.0):
        assert TUNE_MIN_INTERVAL <= look_interval(rtt) <= TUNE_INTERVAL


def test_first_look_comes_once_every_stream_is_open(monkeypatch) -> None:
    """Sender._tune's timing, with a fake clock and control connection (no sockets)."""
    from fastxfer.client import send as client

    clock = [0.0]

    class FakeTime:
        monotonic = staticmethod(lambda: clock[0])
        process_time = staticmethod(lambda: 0.0)

    class FakeControl:
        rtt = 0.100  # capped and lossy: 100 ms idle
        ping_takes = [0.101]
        pings = 0

        def call(self, msg, reply):
            clock[0] += self.ping_takes[self.pings % len(self.ping_takes)]
            self.pings += 1
            return {"t": reply}

    def sender(control):
        s = client.Sender(control, None, None, None, False, False)
        s.threads = [object()] * 8
        s.streams_used = s.streams_alive = 8
        for _ in range(100):
            s.jobs.put((None, 0))
        s.spawned = []
        s._spawn_streams = lambda n: (s.spawned.append(n), setattr(s, "streams_used", s.streams_used + n))
        return s

    def tune(s, t):
        clock[0] = t
        with s.cond:  # as _tend holds it
            s._tune()

    monkeypatch.setattr(client, "time", FakeTime)
    s = sender(FakeControl())
    every = client.look_interval(0.100)
    s.opened_by = {1, 2, 3}  # streams still opening: the span has not begun
    for t in (0.0, 0.5, 1.0, 1.5):
        tune(s, t)
    assert s.spawned == [] and s.tune_mark[0] == 1.5
    s.opened_by = set(range(8))
    tune(s, 1.5 + every - 0.01)
    assert s.spawned == []
    assert s._tend_wait() == pytest.approx(0.01)  # the main thread wakes for the look
    tune(s, 1.5 + every + 0.001)  # the first look: no look skipped, no rate needed
    assert s.spawned == [8] and not s.tuning  # 16: the cap, tuning is over
    assert s._tend_wait() == 0.5

    assert s.control.pings == 1  # the first ping came back in time: enough

    # a passing burst: the first ping is late, the second is not
    control = FakeControl()
    control.ping_takes = [0.164, 0.110, 0.200]
    s = sender(control)
    s.opened_by = set(range(8))
    tune(s, 10.0)
    tune(s, 10.0 + every + 0.001)
    assert s.spawned == [8] and control.pings == 2

    # every ping late: a standing queue on a shared bottleneck, more streams would only fill it
    control = FakeControl()
    control.ping_takes = [0.200, 0.140, 0.180]
    s = sender(control)
    s.opened_by = set(range(8))
    tune(s, 20.0)
    tune(s, 20.0 + every + 0.001)
    assert s.spawned == [] and not s.tuning and control.pings == client.TUNE_PINGS
