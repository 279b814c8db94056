"""Server side of a pairing (`fastxfer pair`, docs/PROTOCOL.md § 3a).

A client that holds an invitation's code answers the challenge with
``pair`` instead of ``auth``: its certificate and the same signature as
an ``auth`` (so it holds the key it asks to have authorized), the
invitation's number and its SPAKE2 message.  The server uses the
invitation up before its PAKE runs, whatever follows (one guess per
code), answers with its own SPAKE2 message, the invitation's client name
and its confirmation MAC, and authorizes the client only once the
client's confirmation MAC checks out.  The session then ends; the client
opens a normal one.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import TYPE_CHECKING, Any

from fastxfer.errors import BusyError, FxError, ProtocolError, TrustError
from fastxfer.net.conn import Channel
from fastxfer.protocol import pairing, states
from fastxfer.protocol.messages import get_int
from fastxfer.trust import identity
from fastxfer.trust.invites import InviteBook
from fastxfer.trust.pake import Pake

if TYPE_CHECKING:
    from fastxfer.server.control import ControlSession

log = logging.getLogger("fastxfer.server")


def serve(session: ControlSession, chan: Channel, msg: dict[str, Any], nonce: bytes, deadline: float) -> None:
    """One pairing, from the client's pair message to paired; FxError: refused."""
    number = get_int(msg, "invite", 1, pairing.MAX_NUMBER)
    client_msg = pairing.b64_field(msg, "pake", pairing.PAKE_MESSAGE)
    client_fp = session.proof(msg, nonce)
    if session.draining():
        raise BusyError("the server is shutting down; try again in a minute")
    book = InviteBook(session.clients.path.parent)  # the state folder clients.json is in
    invite = book.claim(number)  # used up from here on: one PAKE run per code
    shown = identity.format_fp(client_fp)
    log.info("pairing with invitation %s (for %s) from %s, client %s",
             invite.code.shown, invite.name, session.raw.peer, shown)
    server_fp = session.ident.fingerprint
    pake = Pake(False, invite.code.password, client_fp, server_fp)
    key = pake.finish(client_msg)

    def mac(role: bytes) -> bytes:
        return pairing.confirmation(key, role, nonce, client_msg, pake.outbound, server_fp, client_fp, invite.name)

    chan.send({"t": "pair_ok", "pake": base64.b64encode(pake.outbound).decode(), "name": invite.name,
               "confirm": base64.b64encode(mac(pairing.SERVER_ROLE)).decode()})
    try:
        reply = chan.recv(max(0.1, deadline - time.monotonic()))
    except ProtocolError:
        raise  # a malformed message, answered as such
    except FxError:  # EOF, a reset, the deadline
        raise TrustError(f"pairing with invitation {invite.code.shown} ended: the client hung up "
                         "(its code was wrong?); the invitation is used up") from None
    states.SERVER_CONTROL.step(states.PAIRING, reply.get("t"))
    if not pairing.confirms(mac(pairing.CLIENT_ROLE), pairing.b64_field(reply, "confirm", pairing.MAC_SIZE)):
        raise TrustError(f"wrong pairing code: invitation {invite.code.shown} is used up; "
                         "on the server run: fastxfer invite --name NAME, and pair with the new code")
    before = session.clients.name_of(client_fp)
    session.clients.add(client_fp, invite.name)
    chan.send({"t": "paired", "name": invite.name, **({"was": before} if before and before != invite.name else {})})
    log.info("paired: authorized %s as %s%s (invitation %s)", shown, invite.name,
             f" (was {before})" if before and before != invite.name else "", invite.code.shown)
