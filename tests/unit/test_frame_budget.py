"""The worker's frame budget: a share per client, a total, a bounded wait."""

from __future__ import annotations

import threading
import time

import pytest

from fastxfer.errors import BusyError
from fastxfer.server.buffers import FrameBudget, Room

MiB = 1 << 20


def test_a_client_gets_its_share_and_no_more() -> None:
    budget = FrameBudget(per_client=40 * MiB, per_worker=100 * MiB, wait=0.05)
    budget.take("a", 32 * MiB)
    budget.take("a", 8 * MiB)
    with pytest.raises(BusyError, match=r"client a's streams already hold 40.00 MiB of frame buffers on this "
                                        r"server \(at most 40.00 MiB\); try again with fewer streams"):
        budget.take("a", 1)
    budget.take("b", 40 * MiB)  # another client has its own share
    assert budget.total == 80 * MiB
    budget.give("a", 40 * MiB)
    assert budget.held == {"b": 40 * MiB} and budget.total == 40 * MiB


def test_the_worker_total_bounds_every_client_together() -> None:
    budget = FrameBudget(per_client=40 * MiB, per_worker=60 * MiB, wait=0.05)
    budget.take("a", 40 * MiB)
    with pytest.raises(BusyError, match=r"the server's frame buffers are full \(40.00 MiB of 60.00 MiB held\)"):
        budget.take("b", 30 * MiB)
    budget.take("b", 20 * MiB)


def test_a_stream_waits_for_room_given_back_and_only_so_long() -> None:
    budget = FrameBudget(per_client=40 * MiB, per_worker=100 * MiB, wait=2.0)
    budget.take("a", 40 * MiB)
    threading.Timer(0.2, budget.give, ("a", 16 * MiB)).start()
    start = time.monotonic()
    budget.take("a", 16 * MiB)  # granted once the other stream gave its room back
    assert 0.15 < time.monotonic() - start < 1.5
    budget.wait = 0.3
    start = time.monotonic()
    with pytest.raises(BusyError):
        budget.take("a", 1)
    assert 0.25 < time.monotonic() - start < 1.5


def test_a_room_counts_each_buffer_by_its_largest_and_small_ones_not_at_all() -> None:
    budget = FrameBudget(per_client=40 * MiB, per_worker=100 * MiB, wait=0.05)
    room = Room(budget)
    room.client = "a"
    room.need("frame", 1000)  # a SYNC, an ACK: free
    assert room.held == 0
    room.need("frame", 8 * MiB)
    room.need("frame", 4 * MiB)  # the buffers it has already hold it
    room.need("answer", 16 * MiB)
    room.need("frame", 16 * MiB)  # grows by the difference
    assert room.held == budget.held["a"] == 32 * MiB
    with pytest.raises(BusyError):
        room.need("answer", 32 * MiB)
    assert room.held == 32 * MiB  # a refusal takes nothing
    room.give_back()
    room.give_back()
    assert room.held == 0 and budget.held == {} and budget.total == 0
