"""Per-role state machines of control and stream connections, as tables.

Each machine maps (state, event) to the next state; an event is a control
message's type ``t`` or a stream frame's kind.  Whatever the table does not
list is the documented error: a ProtocolError whose text the machine's
``refuse`` writes (the texts are those the code gave before the tables).

Control, server role: what the server receives.  After its challenge the
server takes only ``auth``; once the proof checks out, any request of
REQUESTS, each answered before the next is read; ``bye`` ends it.  Or,
instead of ``auth``, ``pair`` (a pairing with an invitation's code): the
server answers ``pair_ok`` and takes only the client's ``pair_confirm``,
after which it answers ``paired`` (or an error) and the session ends.

Control, client role: what the client receives and the requests it sends
(the two directions use disjoint types, so one table holds both).  The
client sends one request and takes only its reply (REPLIES), or an
``error``, which ends the session except in reply to ``list``.

Stream, server role: the first frame must be a SYNC (it proves the stream
keys before the server takes any larger frame); then DATA, BUNDLE, REQ,
REQS and SYNC in any order.  Stream, client roles: a sending client takes
ACK and BUNDLE_ACK, a restoring client DATA, DATAS and NAK; both take an
ERROR, after which the server closes the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from fastxfer.errors import ProtocolError
from fastxfer.protocol import wire

CLOSED = "closed"


class Machine:
    """A table of allowed transitions and the text of everything else.

    A plain class, not a dataclass: both clients import this module, and a
    command's start-up pays ~0.35 ms for each dataclass it defines."""

    __slots__ = ("name", "start", "table", "refuse")

    def __init__(self, name: str, start: str, table: Mapping[tuple[str, Hashable], str],
                 refuse: Callable[[str, Hashable], str]) -> None:
        self.name = name
        self.start = start
        self.table = table
        self.refuse = refuse  # (state, event) -> the ProtocolError's text

    def __repr__(self) -> str:
        return f"Machine({self.name!r})"

    def step(self, state: str, event: Hashable) -> str:
        """The state after *event* in *state*, or ProtocolError."""
        try:
            return self.table[(state, event)]
        except (KeyError, TypeError):  # TypeError: an unhashable event a peer made up
            raise ProtocolError(self.refuse(state, event)) from None

    def allows(self, state: str, event: Hashable) -> bool:
        try:
            return (state, event) in self.table
        except TypeError:
            return False

    @property
    def states(self) -> set[str]:
        return {s for s, _ in self.table} | set(self.table.values())

    @property
    def events(self) -> set[Hashable]:
        return {e for _, e in self.table}


def _shown(event: Hashable) -> str:
    return repr(str(event)[:40])


# ---------------------------------------------------------------- control

# Requests a client may send once authenticated, and the reply to each.
REPLIES = {
    "put": "put_ok",
    "probe": "probe_ok",
    "commit": "committed",
    "list": "list_ok",
    "receipts": "receipts_ok",
    "sums": "sums_ok",
    "dirs": "dirs_ok",
    "snap_begin": "snap_begun",
    "snap_add": "snap_added",
    "snap_end": "snap_ended",
    "snapshots": "snapshots_ok",
    "forget": "forget_ok",
    "ping": "pong",
}
REQUESTS = tuple(REPLIES)

AUTH, READY, PAIRING = "auth", "ready", "pairing"


def _server_control_refusal(state: str, event: Hashable) -> str:
    if state == AUTH:
        return f"expected a 'auth' message, got {_shown(event)}"
    if state == PAIRING:
        return f"expected a 'pair_confirm' message, got {_shown(event)}"
    if state == CLOSED:
        return f"message {_shown(event)} after the session ended"
    return f"unexpected message {_shown(event)}"


SERVER_CONTROL = Machine(
    "server control",
    AUTH,
    {(AUTH, "auth"): READY, **{(READY, r): READY for r in REQUESTS}, (READY, "bye"): CLOSED,
     (AUTH, "pair"): PAIRING, (PAIRING, "pair_confirm"): CLOSED},
    _server_control_refusal,
)

CHALLENGE, WELCOME = "challenge", "welcome"


def awaiting(request: str) -> str:
    """The client's state after sending *request*: waiting for its reply."""
    return "awaiting " + REPLIES[request]


def _client_control_refusal(state: str, event: Hashable) -> str:
    if state in (CHALLENGE, WELCOME):
        return f"expected a {state!r} message, got {_shown(event)}"
    if state.startswith("awaiting "):
        return f"expected a {state.removeprefix('awaiting ')!r} message, got {_shown(event)}"
    if state == READY and event in REPLIES.values():
        return f"the server sent {_shown(event)} unasked"
    return f"unexpected message {_shown(event)}"


def _client_control_table() -> dict[tuple[str, Hashable], str]:
    table: dict[tuple[str, Hashable], str] = {
        (CHALLENGE, "challenge"): WELCOME,  # the client answers with auth
        (CHALLENGE, "error"): CLOSED,
        (WELCOME, "welcome"): READY,
        (WELCOME, "error"): CLOSED,
        (READY, "bye"): CLOSED,
    }
    for request, reply in REPLIES.items():
        table[(READY, request)] = awaiting(request)
        table[(awaiting(request), reply)] = READY
        # A refused prefix is answered by an error and the session goes on.
        table[(awaiting(request), "error")] = READY if request == "list" else CLOSED
    return table


CLIENT_CONTROL = Machine("client control", CHALLENGE, _client_control_table(), _client_control_refusal)

# A pairing client (`fastxfer pair`): it answers the challenge with pair,
# the server's pair_ok with pair_confirm, and the session ends at paired.
PAIR_OK, PAIRED = "awaiting pair_ok", "awaiting paired"
CLIENT_PAIRING = Machine(
    "pairing client control",
    CHALLENGE,
    {(CHALLENGE, "challenge"): PAIR_OK, (CHALLENGE, "error"): CLOSED,
     (PAIR_OK, "pair_ok"): PAIRED, (PAIR_OK, "error"): CLOSED,
     (PAIRED, "paired"): CLOSED, (PAIRED, "error"): CLOSED},
    _client_control_refusal,
)


# ----------------------------------------------------------------- stream

OPENING, OPEN = "opening", "open"
SERVER_TAKES = (wire.DATA, wire.BUNDLE, wire.REQ, wire.REQS, wire.SYNC)
SENDER_TAKES = (wire.ACK, wire.BUNDLE_ACK, wire.NAK)  # a NAK: that file's transfer is gone
RESTORER_TAKES = (wire.DATA, wire.DATAS, wire.NAK, wire.ZEROS)


def _server_stream_refusal(state: str, event: Hashable) -> str:
    if state == OPENING:
        return "a stream must start with a sealed SYNC frame"
    return f"unexpected frame kind {event} from client"


SERVER_STREAM = Machine(
    "server stream",
    OPENING,
    {(OPENING, wire.SYNC): OPEN, **{(OPEN, k): OPEN for k in SERVER_TAKES}},
    _server_stream_refusal,
)


def _client_stream_refusal(state: str, event: Hashable) -> str:
    return f"unexpected frame kind {event} from server"


def _client_stream(name: str, takes: tuple[int, ...]) -> Machine:
    table = {(OPEN, k): OPEN for k in takes}
    table[(OPEN, wire.ERROR)] = CLOSED
    # The client's own opening SYNC is not acknowledged: it starts open.
    return Machine(name, OPEN, table, _client_stream_refusal)


SENDER_STREAM = _client_stream("sending client stream", SENDER_TAKES)
RESTORER_STREAM = _client_stream("restoring client stream", RESTORER_TAKES)

MACHINES = (SERVER_CONTROL, CLIENT_CONTROL, CLIENT_PAIRING, SERVER_STREAM, SENDER_STREAM, RESTORER_STREAM)
