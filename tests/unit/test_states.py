"""The state machines of fastxfer.protocol.states, without sockets: every pair
of (state, event) either ends in the table's next state or in the machine's
documented ProtocolError."""

from __future__ import annotations

import itertools

import pytest

from fastxfer.errors import ProtocolError
from fastxfer.protocol import states, wire
from fastxfer.protocol.states import (
    CLIENT_CONTROL,
    CLIENT_PAIRING,
    CLOSED,
    MACHINES,
    RESTORER_STREAM,
    SENDER_STREAM,
    SERVER_CONTROL,
    SERVER_STREAM,
)

CONTROL_TYPES = sorted(
    {"challenge", "auth", "welcome", "bye", "error", "", "no-such-type", "x" * 100,
     "pair", "pair_ok", "pair_confirm", "paired"}
    | set(states.REPLIES) | set(states.REPLIES.values())
)
FRAME_KINDS = list(range(0, 13)) + [255]
EVENTS = {
    SERVER_CONTROL: CONTROL_TYPES,
    CLIENT_CONTROL: CONTROL_TYPES,
    CLIENT_PAIRING: CONTROL_TYPES,
    SERVER_STREAM: FRAME_KINDS,
    SENDER_STREAM: FRAME_KINDS,
    RESTORER_STREAM: FRAME_KINDS,
}


def _all_pairs():
    for machine in MACHINES:
        for state, event in itertools.product(sorted(machine.states | {CLOSED}), EVENTS[machine]):
            yield pytest.param(machine, state, event, id=f"{machine.name}|{state}|{event!r}"[:120])


@pytest.mark.parametrize("machine, state, event", list(_all_pairs()))
def test_every_pair_ends_in_the_table_or_the_documented_error(machine, state, event) -> None:
    if (state, event) in machine.table:
        assert machine.step(state, event) == machine.table[(state, event)]
        assert machine.allows(state, event)
    else:
        with pytest.raises(ProtocolError) as info:
            machine.step(state, event)
        assert type(info.value) is ProtocolError
        assert info.value.message == machine.refuse(state, event)
        assert not machine.allows(state, event)


def test_every_event_in_a_table_is_one_the_tests_try() -> None:
    for machine in MACHINES:
        assert machine.events <= set(EVENTS[machine]), machine.name
        assert machine.start in machine.states


def test_nothing_leaves_closed() -> None:
    for machine in MACHINES:
        assert not any(s == CLOSED for s, _ in machine.table), machine.name


def test_an_unhashable_event_is_a_protocol_error() -> None:
    # A peer may send "t": [...]; the machine must refuse it, not crash.
    with pytest.raises(ProtocolError):
        SERVER_CONTROL.step(states.READY, ["put"])  # type: ignore[arg-type]
    assert not SERVER_CONTROL.allows(states.READY, ["put"])  # type: ignore[arg-type]


# ------------------------------------------------- the rules, stated on their own


def test_server_control_takes_only_auth_first() -> None:
    assert SERVER_CONTROL.start == states.AUTH
    assert SERVER_CONTROL.step(states.AUTH, "auth") == states.READY
    for t in CONTROL_TYPES:
        if t not in ("auth", "pair"):
            with pytest.raises(ProtocolError, match="expected a 'auth' message"):
                SERVER_CONTROL.step(states.AUTH, t)


def test_server_control_pairing_takes_one_confirmation_then_ends() -> None:
    assert SERVER_CONTROL.step(states.AUTH, "pair") == states.PAIRING
    assert SERVER_CONTROL.step(states.PAIRING, "pair_confirm") == CLOSED
    for t in CONTROL_TYPES:
        if t != "pair_confirm":  # no request of a session, no second pairing, no auth
            with pytest.raises(ProtocolError, match="expected a 'pair_confirm' message"):
                SERVER_CONTROL.step(states.PAIRING, t)
    with pytest.raises(ProtocolError):
        SERVER_CONTROL.step(states.READY, "pair")  # an authenticated session cannot pair


def test_client_pairing_challenge_pair_ok_paired() -> None:
    s = CLIENT_PAIRING.step(CLIENT_PAIRING.start, "challenge")
    s = CLIENT_PAIRING.step(s, "pair_ok")
    assert CLIENT_PAIRING.step(s, "paired") == CLOSED
    for state in (states.CHALLENGE, states.PAIR_OK, states.PAIRED):
        assert CLIENT_PAIRING.step(state, "error") == CLOSED
    for wrong in ("welcome", "paired", "put_ok"):
        with pytest.raises(ProtocolError, match="expected a 'pair_ok' message"):
            CLIENT_PAIRING.step(states.PAIR_OK, wrong)
    with pytest.raises(ProtocolError, match="expected a 'paired' message"):
        CLIENT_PAIRING.step(states.PAIRED, "welcome")


def test_server_control_requests_after_auth() -> None:
    for request in ("put", "probe", "commit", "list", "receipts", "sums", "dirs", "ping"):
        assert SERVER_CONTROL.step(states.READY, request) == states.READY
    assert SERVER_CONTROL.step(states.READY, "bye") == CLOSED
    for t in ("auth", "challenge", "welcome", "error", "put_ok", "no-such-type"):
        with pytest.raises(ProtocolError, match="^unexpected message"):
            SERVER_CONTROL.step(states.READY, t)


def test_client_control_opening_then_one_request_at_a_time() -> None:
    s = CLIENT_CONTROL.step(CLIENT_CONTROL.start, "challenge")
    s = CLIENT_CONTROL.step(s, "welcome")
    assert s == states.READY
    for request, reply in states.REPLIES.items():
        waiting = CLIENT_CONTROL.step(s, request)
        assert CLIENT_CONTROL.step(waiting, reply) == states.READY
        for other in set(states.REPLIES.values()) - {reply}:
            with pytest.raises(ProtocolError, match=f"expected a '{reply}' message"):
                CLIENT_CONTROL.step(waiting, other)
        with pytest.raises(ProtocolError):
            CLIENT_CONTROL.step(waiting, request)  # no pipelining
    with pytest.raises(ProtocolError, match="unasked"):
        CLIENT_CONTROL.step(states.READY, "pong")


def test_client_control_error_ends_the_session_except_after_list() -> None:
    for request in states.REQUESTS:
        after = CLIENT_CONTROL.step(states.awaiting(request), "error")
        assert after == (states.READY if request == "list" else CLOSED)
    assert CLIENT_CONTROL.step(states.CHALLENGE, "error") == CLOSED
    assert CLIENT_CONTROL.step(states.WELCOME, "error") == CLOSED


def test_server_stream_starts_with_sync() -> None:
    assert SERVER_STREAM.start == states.OPENING
    assert SERVER_STREAM.step(states.OPENING, wire.SYNC) == states.OPEN
    for kind in FRAME_KINDS:
        if kind != wire.SYNC:
            with pytest.raises(ProtocolError, match="must start with a sealed SYNC"):
                SERVER_STREAM.step(states.OPENING, kind)


def test_server_stream_takes_what_clients_send() -> None:
    takes = {wire.DATA, wire.BUNDLE, wire.REQ, wire.REQS, wire.SYNC}
    for kind in FRAME_KINDS:
        if kind in takes:
            assert SERVER_STREAM.step(states.OPEN, kind) == states.OPEN
        else:
            with pytest.raises(ProtocolError, match=f"unexpected frame kind {kind} from client"):
                SERVER_STREAM.step(states.OPEN, kind)


@pytest.mark.parametrize("machine, takes", [
    (SENDER_STREAM, {wire.ACK, wire.BUNDLE_ACK, wire.NAK}),
    (RESTORER_STREAM, {wire.DATA, wire.DATAS, wire.NAK, wire.ZEROS}),
])
def test_client_streams(machine, takes) -> None:
    assert machine.start == states.OPEN
    for kind in FRAME_KINDS:
        if kind in takes:
            assert machine.step(states.OPEN, kind) == states.OPEN
        elif kind == wire.ERROR:
            assert machine.step(states.OPEN, kind) == CLOSED
        else:
            with pytest.raises(ProtocolError, match=f"unexpected frame kind {kind} from server"):
                machine.step(states.OPEN, kind)


# ------------------------------------------------- the server dispatches by them


def test_server_control_handlers_are_the_machines_requests() -> None:
    from fastxfer.server import control

    after_auth = {e for (s, e), nxt in SERVER_CONTROL.table.items() if s == states.READY and nxt == states.READY}
    assert set(control.HANDLERS) == after_auth


def test_server_stream_handlers_are_the_machines_frames() -> None:
    from fastxfer.server import stream

    open_kinds = {e for (s, e) in SERVER_STREAM.table if s == states.OPEN}
    assert set(stream.HANDLERS) == open_kinds


# ------------------------------------------------- docs/PROTOCOL.md shows these tables

_KIND_NAMES = {getattr(wire, k): k for k in ("DATA", "ACK", "SYNC", "ERROR", "BUNDLE", "BUNDLE_ACK", "REQ", "NAK",
                                              "REQS", "DATAS", "ZEROS")}


def _doc_rows(machine, prefix: str = "") -> set[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    for (state, event), nxt in machine.table.items():
        groups.setdefault((state, nxt), []).append(_KIND_NAMES.get(event, event) if isinstance(event, int) else event)
    return {f"| {prefix}`{s}` | {', '.join(f'`{e}`' for e in events)} | `{n}` |" for (s, n), events in groups.items()}


def test_protocol_md_shows_the_tables() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    lines = set(doc.splitlines())
    wanted = (_doc_rows(SERVER_CONTROL) | _doc_rows(SERVER_STREAM)
              | _doc_rows(SENDER_STREAM, "`SENDER_STREAM` | ") | _doc_rows(RESTORER_STREAM, "`RESTORER_STREAM` | ")
              | {f"| `{r}` | `{p}` |" for r, p in states.REPLIES.items()})
    assert wanted <= lines, sorted(wanted - lines)
    # And the text of every refusal, with the event as the page writes it.
    flat = " ".join(doc.split())
    for machine in MACHINES:
        stream = machine in (SERVER_STREAM, SENDER_STREAM, RESTORER_STREAM)
        for state in machine.states - {CLOSED}:
            text = machine.refuse(state, "K" if stream else "\u2026").replace("'K'", "K")
            for reply in states.REPLIES.values():
                text = text.replace(f"'{reply}' message", "'P' message")
            assert text in flat, (machine.name, state, text)
