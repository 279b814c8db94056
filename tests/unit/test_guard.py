"""The guard on real socket pairs: a stranger's cost is bounded per address
and in all, and at the bound a stranger is cut, not the newcomer: the oldest
of the address holding the most."""

from __future__ import annotations

import socket

from fastxfer.protocol import limits
from fastxfer.server.guard import Guard


def pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    return [socket.socketpair() for _ in range(n)]


def cut(peer: socket.socket) -> bool:
    """The server side was shut down: the peer reads the end at once."""
    peer.settimeout(1.0)
    try:
        return peer.recv(1) == b""
    except OSError:
        return True


def still_open(peer: socket.socket) -> bool:
    peer.settimeout(0.01)
    try:
        peer.recv(1)
    except socket.timeout:
        return True
    return False


def test_at_the_bound_the_oldest_stranger_is_cut_for_the_new_one() -> None:
    guard = Guard(per_address=100, bound=4)
    conns = pairs(6)
    watches = [guard.admit(server, f"10.0.0.{i}:1000") for i, (server, _) in enumerate(conns)]
    assert all(w is not None for w in watches)  # nobody new is turned away
    assert cut(conns[0][1]) and cut(conns[1][1])  # the two oldest made room
    assert all(still_open(peer) for _, peer in conns[2:])
    assert len(guard.deadlines) == 4 and "10.0.0.0" not in guard.strangers
    for w in watches:
        guard.forget(w)  # an evicted one's own end counts nothing twice
    assert guard.strangers == {} and guard.deadlines == {}


def test_a_promoted_connection_is_never_cut_to_make_room() -> None:
    guard = Guard(per_address=100, bound=2)
    conns = pairs(5)
    proven = guard.admit(conns[0][0], "127.0.0.1:1")
    assert proven is not None
    guard.promote(proven)
    for server, _ in conns[1:]:
        guard.admit(server, "10.0.0.9:2")
    assert still_open(conns[0][1])
    assert cut(conns[1][1]) and cut(conns[2][1])
    assert {a: len(held) for a, held in guard.strangers.items()} == {"10.0.0.9": 2}


def test_the_address_holding_the_most_gives_up_its_oldest_not_an_older_client() -> None:
    guard = Guard(per_address=100, bound=4)
    conns = pairs(7)
    client = guard.admit(conns[0][0], "127.0.0.1:5")  # the oldest of all, but alone at its address
    for i, (server, _) in enumerate(conns[1:]):
        assert guard.admit(server, f"10.0.0.{i % 2}:{i}") is not None
    assert client is not None and still_open(conns[0][1])
    assert cut(conns[1][1]) and cut(conns[2][1]) and cut(conns[3][1])  # each time the heaviest's oldest
    assert {a: len(held) for a, held in guard.strangers.items()} == {"127.0.0.1": 1, "10.0.0.0": 1, "10.0.0.1": 2}


def test_one_address_is_refused_at_its_own_limit_before_it_can_cut_others() -> None:
    guard = Guard(per_address=2, bound=3)
    conns = pairs(4)
    other = guard.admit(conns[0][0], "10.0.0.1:1")
    assert guard.admit(conns[1][0], "10.0.0.2:1") and guard.admit(conns[2][0], "10.0.0.2:2")
    assert guard.admit(conns[3][0], "10.0.0.2:3") is None
    assert other is not None and still_open(conns[0][1])


def test_the_default_bound_leaves_half_of_every_workers_slots() -> None:
    assert Guard().bound == limits.unauth_per_worker(limits.MAX_CONNECTIONS_PER_WORKER) == 256
    assert limits.unauth_per_worker(limits.MIN_SLOTS) == limits.MIN_SLOTS // 2
    assert limits.UNAUTH_PER_ADDRESS <= limits.unauth_per_worker(limits.MAX_CONNECTIONS_PER_WORKER)
