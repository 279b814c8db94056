"""Client side of a pairing: `fastxfer pair HOST[:PORT] CODE`.

The server is not pinned yet, so TLS alone proves nothing about it; the
PAKE with the code does.  The client answers the challenge with ``pair``
(its certificate and signature as in ``auth``, the invitation's number,
its SPAKE2 message), checks the server's confirmation MAC, which covers
the fingerprint of the certificate this connection presented, sends its
own, and pins that fingerprint only once the server said ``paired``.  A
wrong MAC means a wrong code or a man in the middle: nothing more is
sent and nothing is pinned.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from fastxfer.errors import ProtocolError, TrustError, UsageError
from fastxfer.net.conn import Channel, Conn, connect, peer_cert, tls_wrap
from fastxfer.protocol import messages, pairing, states
from fastxfer.trust import identity
from fastxfer.trust.clients import NAME_RE, check_name
from fastxfer.trust.pake import Pake
from fastxfer.trust.pins import PinList, address_key

TIMEOUT = 15.0
LIMIT = 16 << 10  # nothing the server says before pairing is larger


@dataclass(frozen=True)
class Paired:
    address: str
    server_fp: bytes
    name: str
    was: str | None = None  # the name this client's identity had on the server before, if another


def pair(host: str, port: int, code: pairing.Code, ident: identity.Identity, pins: PinList) -> Paired:
    where = address_key(host, port)
    raw = connect(host, port, TIMEOUT)
    try:
        conn = tls_wrap(raw, ident.client_context(), TIMEOUT, server_side=False)
    except BaseException:
        raw.close()
        raise
    try:
        server_fp, name, was = _exchange(conn, where, code, ident, pins.get(host, port))
    finally:
        conn.close()
    pins.add(host, port, server_fp)
    return Paired(where, server_fp, name, was)


def _recv(chan: Channel, state: str, kind: str) -> tuple[str, dict]:
    msg = messages.expect(chan.recv(TIMEOUT), kind)  # an error raises its own class (a used code: 3)
    return states.CLIENT_PAIRING.step(state, msg.get("t")), msg


def _exchange(conn: Conn, where: str, code: pairing.Code, ident: identity.Identity,
              pinned: bytes | None) -> tuple[bytes, str, str | None]:
    server_fp = identity.fingerprint_of(peer_cert(conn))
    if pinned is not None and pinned != server_fp:
        raise TrustError(
            f"{where} is pinned to {identity.format_fp(pinned)} but presents {identity.format_fp(server_fp)}; "
            f"nothing was sent. If the server's identity changed on purpose, run: fastxfer unpin {where}, "
            "then pair again")
    chan = Channel(conn, limit=LIMIT)
    state, challenge = _recv(chan, states.CLIENT_PAIRING.start, "challenge")
    try:
        nonce = base64.b64decode(messages.get_str(challenge, "nonce", 64), validate=True)
    except ValueError:
        nonce = b""
    if len(nonce) != 32:
        raise ProtocolError("malformed challenge")
    client_fp = ident.fingerprint
    pake = Pake(True, code.password, client_fp, server_fp)
    chan.send({
        "t": "pair", "invite": code.number,
        "cert": base64.b64encode(ident.cert_der).decode(),
        "sig": base64.b64encode(ident.sign(identity.auth_message(nonce, server_fp, client_fp))).decode(),
        "pake": base64.b64encode(pake.outbound).decode(),
    })
    state, ok = _recv(chan, state, "pair_ok")
    try:
        name = check_name(messages.get_str(ok, "name", 64))
    except UsageError:
        raise ProtocolError("malformed pairing answer") from None
    server_msg = pairing.b64_field(ok, "pake", pairing.PAKE_MESSAGE)
    key = pake.finish(server_msg)

    def mac(role: bytes) -> bytes:
        return pairing.confirmation(key, role, nonce, pake.outbound, server_msg, server_fp, client_fp, name)

    if not pairing.confirms(mac(pairing.SERVER_ROLE), pairing.b64_field(ok, "confirm", pairing.MAC_SIZE)):
        raise TrustError(
            f"pairing with {where} failed: the code is wrong, or something between this machine and the server "
            "took part without knowing it; nothing was pinned. The code is used up: on the server run "
            f"`fastxfer invite --name {name}` again and pair with the new code")
    chan.send({"t": "pair_confirm", "confirm": base64.b64encode(mac(pairing.CLIENT_ROLE)).decode()})
    state, done = _recv(chan, state, "paired")
    was = done.get("was")  # this identity's name there before, when it had another
    if done.get("name") != name or not (was is None or isinstance(was, str) and NAME_RE.fullmatch(was)):
        raise ProtocolError("malformed pairing answer")
    return server_fp, name, was
