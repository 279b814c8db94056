"""Bandwidth limits: the token bucket (protocol/rate.py) on an injected
clock, the pacer that threads share (net/pace.py), a frame paced slice by
slice over a real socket pair, the server's table shared by its workers
(server/rates.py) across a real fork, and what a limit does to the stream
count (client/tuning.py).  Nothing here waits on a real timer."""

from __future__ import annotations

import argparse
import os
import socket
import threading

import pytest
from hypothesis import given, settings, strategies as st

from fastxfer.cli.args import parse_rate
from fastxfer.client import tuning
from fastxfer.net.conn import Conn
from fastxfer.net.framed import FramedConn
from fastxfer.net.pace import SLICE_MAX, SLICE_MIN, Pacer
from fastxfer.protocol import keys, wire
from fastxfer.protocol.rate import MAX_BURST, TokenBucket, burst_for
from fastxfer.server import rates as server_rates
from fastxfer.server.rates import ClientRates

MiB = 1 << 20


class FakeTime:
    """A clock that only the sleeps move."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_full_bucket_lets_its_burst_through_then_holds_to_the_rate() -> None:
    b = TokenBucket(8 * MiB, now=0.0)
    assert b.burst == MAX_BURST
    assert b.reserve(MiB, 0.0) == 0.0  # the burst: at once
    assert b.reserve(MiB, 0.0) == pytest.approx(1 / 8)  # then an eighth of a second per MiB
    assert b.reserve(4 * MiB, 0.0) == pytest.approx(5 / 8)  # larger than the burst: waits behind the debt
    assert b.credit(0.0) == pytest.approx(-5 * MiB)


def test_an_idle_bucket_refills_to_its_burst_and_no_further() -> None:
    b = TokenBucket(8 * MiB, now=0.0)
    b.reserve(3 * MiB, 0.0)
    assert b.credit(0.25) == pytest.approx(0.0)
    assert b.credit(3600.0) == MAX_BURST  # an hour idle is still one burst
    assert b.reserve(2 * MiB, 3600.0) == pytest.approx(1 / 8)


def test_a_slow_limit_has_a_burst_of_one_second() -> None:
    assert burst_for(100 << 10) == 100 << 10
    assert burst_for(64 * MiB) == MAX_BURST
    assert TokenBucket(1000, 0.0).reserve(1000, 0.0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket(0, 0.0)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.integers(min_value=1 << 10, max_value=64 * MiB),
       st.lists(st.tuples(st.floats(min_value=0, max_value=2.0), st.integers(min_value=1, max_value=4 * MiB)),
                min_size=1, max_size=60))
def test_no_span_carries_more_than_the_burst_and_the_rate(rate: int, asks: list[tuple[float, int]]) -> None:
    """Each reservation is sent when its wait ends; over any span [a, b] of send
    times the bytes sent are at most burst + rate * (b - a) + one reservation
    (the one sent at a, whole), and N bytes take at least (N - burst) / rate."""
    b = TokenBucket(rate, now=0.0)
    now, sent = 0.0, []
    for gap, size in asks:
        now += gap
        sent.append((now + b.reserve(size, now), size))
    times = [t for t, _ in sent]
    assert times == sorted(times)  # served in order
    biggest = max(size for _, size in asks)
    for i in range(len(sent)):
        total = 0
        for j in range(i, len(sent)):
            total += sent[j][1]
            assert total <= b.burst + rate * (sent[j][0] - sent[i][0]) + biggest + 1e-6 * rate
    assert sent[-1][0] >= (sum(size for _, size in asks) - b.burst - biggest) / rate - 1e-9


def test_the_pacer_sleeps_off_its_debt_on_the_clock_it_is_given() -> None:
    t = FakeTime()
    p = Pacer(8 * MiB, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(32):
        p.take(MiB)
    # 32 MiB at 8 MiB/s with a 1 MiB burst: the last MiB goes after 31/8 s
    assert t.now - start == pytest.approx(31 / 8)
    # slices of 1/128 s of the rate, within bounds: short waits, so no stream idles long
    assert p.slice == 64 << 10 and Pacer(1 << 30).slice == SLICE_MAX and Pacer(1000).slice == SLICE_MIN


def test_threads_sharing_a_pacer_lose_no_reservation() -> None:
    # The clock stands still and nobody sleeps: every reservation must land in the one bucket.
    slept: list[float] = []
    p = Pacer(MiB, clock=lambda: 0.0, sleep=slept.append)

    def take() -> None:
        for _ in range(500):
            p.take(1024)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert p.bucket.credit(0.0) == pytest.approx(MiB - 8 * 500 * 1024)
    assert max(slept) == pytest.approx((8 * 500 * 1024 - MiB) / MiB)


def test_a_paced_frame_goes_out_slice_by_slice_and_arrives_whole() -> None:
    a, b = socket.socketpair()
    c2s, s2c = os.urandom(32), os.urandom(32)
    sender = FramedConn(Conn(a), *keys.pair(c2s, s2c, "client"))
    receiver = FramedConn(Conn(b), *keys.pair(c2s, s2c, "server"))
    out, into = FakeTime(), FakeTime()
    taken_out: list[int] = []
    pacer_out = Pacer(4 * MiB, clock=out.clock, sleep=out.sleep)
    pacer_in = Pacer(4 * MiB, clock=into.clock, sleep=into.sleep)
    original = pacer_out.take
    pacer_out.take = lambda n: (taken_out.append(n), original(n))  # type: ignore[method-assign]
    body = os.urandom(3 * MiB)
    got = []
    reading = threading.Thread(target=lambda: got.append(bytes(receiver.receive(pacer=pacer_in).body)))
    reading.start()
    header = wire.data_header(b"f" * 16, 0, len(body) - wire.DIGEST)
    sender.send(wire.DATA, header, body, pacer=pacer_out)
    reading.join(10)
    a.close()
    b.close()
    assert got == [body]
    sealed = len(body) + wire.TAG
    assert max(taken_out) <= SLICE_MAX + wire.FRAME_PREFIX + len(header)
    assert sum(taken_out) == sealed + wire.FRAME_PREFIX + len(header)
    # 3 MiB against 4 MiB/s and a 1 MiB burst: half a second, on each side's own clock
    assert sum(out.slept) == pytest.approx(0.5, rel=0.01) and sum(into.slept) == pytest.approx(0.5, rel=0.01)


def test_the_server_table_holds_across_a_fork() -> None:
    """Two workers (this process and a forked child) share a client's bucket."""
    now = [50.0]
    rates = ClientRates(8 * MiB, clock=lambda: now[0])
    pid = os.fork()
    if pid == 0:  # the other worker: takes 5 MiB of laptop's credit, not of phone's
        code = 0
        try:
            theirs = rates.pacer("laptop")
            theirs.sleep = lambda s: None
            theirs.take(5 * MiB)
        except BaseException:  # noqa: BLE001 - a child must never return into pytest
            code = 1
        os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    laptop = rates.pacer("laptop")
    slept: list[float] = []
    laptop.sleep = slept.append
    laptop.take(MiB)  # behind the child's debt of 4 MiB: 5/8 s
    assert slept == [pytest.approx(5 / 8)]
    phone = rates.pacer("phone")
    phone.sleep = slept.append
    phone.take(MiB)  # another name, its own full bucket
    assert len(slept) == 1


def test_a_worker_that_dies_holding_the_lock_releases_it() -> None:
    rates = ClientRates(MiB)
    pid = os.fork()
    if pid == 0:
        import fcntl

        fcntl.lockf(rates.fd, fcntl.LOCK_EX)
        os._exit(0)  # killed mid-reservation, as a hung worker is
    os.waitpid(pid, 0)
    done = threading.Event()
    threading.Thread(target=lambda: (rates.pacer("laptop").take(1), done.set()), daemon=True).start()
    assert done.wait(5)


def test_a_full_table_gives_a_bucket_per_worker(monkeypatch) -> None:
    monkeypatch.setattr(server_rates, "SLOTS", 2)
    rates = ClientRates(MiB)
    pacers = [rates.pacer(name) for name in ("a", "b", "c", "c")]
    assert isinstance(pacers[0], server_rates.SharedPacer) and isinstance(pacers[1], server_rates.SharedPacer)
    assert not isinstance(pacers[2], server_rates.SharedPacer) and pacers[2] is pacers[3]


def test_rates_are_read_with_binary_suffixes() -> None:
    assert parse_rate("8M") == 8 * MiB
    assert parse_rate("8M/s") == 8 * MiB
    assert parse_rate("500K") == 500 << 10
    assert parse_rate("1g") == 1 << 30
    assert parse_rate("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="not a rate"):
        parse_rate("fast")


def test_a_limit_near_the_server_starts_few_streams() -> None:
    cpus = os.cpu_count() or 2
    assert tuning.auto_streams(1000, long_path=False, limit=8 * MiB) == 1
    assert tuning.auto_streams(1000, long_path=False, limit=0) == min(8, max(2, cpus))
    assert tuning.auto_streams(1000, long_path=False, limit=1 << 40) == min(8, max(2, cpus))
    # on a long path one stream may carry far less than the limit: the path decides, as without one
    assert tuning.auto_streams(1000, long_path=True, limit=8 * MiB) == tuning.LONG_PATH_STREAMS


def test_streams_at_the_limit_get_no_company_and_streams_below_it_do() -> None:
    assert tuning.at_limit(7.2 * MiB, 8 * MiB) and not tuning.at_limit(7.1 * MiB, 8 * MiB)
    assert not tuning.at_limit(1 << 40, 0)  # no limit

    def first_look(sent: int) -> tuple[int, tuning.Tuner]:
        clock = [0.0]
        t = tuning.Tuner(0.100, True, clock=lambda: clock[0], cpu_clock=lambda: 0.0, limit=2 * MiB)
        pings = lambda n, e: [0.1005]  # noqa: E731 - a quiet path: the path is not full
        t.look(0, True, 8, 100, pings)
        clock[0] += tuning.look_interval(0.100)
        return t.look(sent, True, 8, 100, pings), t

    span = tuning.look_interval(0.100)
    more, t = first_look(int(2 * MiB * span))  # the limit's whole rate: more streams would only wait
    assert more == 0 and not t.active
    more, t = first_look(int(1.6 * MiB * span))  # the path carries less than the limit: as without one
    assert more == 8
