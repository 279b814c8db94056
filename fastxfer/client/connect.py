"""Client side of the handshakes: the control session and stream openings.

The server is checked against the fingerprint pinned for this exact
HOST:PORT right after the TLS handshake; until then the client has sent
nothing but its ClientHello.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass

from fastxfer.protocol import messages, wire
from fastxfer.trust import identity
from fastxfer.protocol import keys
from fastxfer.errors import ConnectError, ProtocolError, ResetError, TrustError
from fastxfer.net.conn import Channel, Conn, connect, keep_alive_probes, peer_cert, tls_wrap
from fastxfer.net.framed import FramedConn
from fastxfer.trust.pins import PinList, address_key
from fastxfer.client.retry import Backoff

CONNECT_TIMEOUT = 15.0
REPLY_TIMEOUT = 600.0
# The server is authenticated by then; a resume list of a file with the
# most chunks (layout.MAX_CHUNKS) must fit.
REPLY_LIMIT = messages.MAX_REPLY
# Calls that may have taken effect although their answer was lost: not
# repeated blindly (the caller finds out what happened).
NOT_REPEATED = frozenset({"commit"})
# What the server may call this client: its folder there (trust/clients.py's rule).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
SECRET_BYTES = 32  # a session secret: what keys.hkdf derives


@dataclass
class Welcome:
    name: str
    ticket: bytes
    secret: bytes
    features: frozenset[str] = frozenset()  # what the server takes beyond the first version


def features_of(welcome: dict) -> frozenset[str]:
    """The server's list of extra features; a server that predates them sends none."""
    listed = welcome.get("features")
    if not isinstance(listed, list):
        return frozenset()
    return frozenset(f for f in listed[:64] if isinstance(f, str))


def parse_challenge(msg: dict) -> bytes:
    """The nonce of the server's challenge, or ProtocolError."""
    challenge = messages.expect(msg, "challenge")
    try:
        nonce = base64.b64decode(messages.get_str(challenge, "nonce", 64), validate=True)
    except ValueError:
        raise ProtocolError("malformed challenge") from None
    if len(nonce) != 32:
        raise ProtocolError("malformed challenge")
    return nonce


def parse_welcome(msg: dict) -> Welcome:
    """The server's welcome, or ProtocolError: the name is printed before every
    stored path, and a ticket or secret that no stream opening can carry
    would fail later, in a stream thread, with no word the user could read."""
    welcome = messages.expect(msg, "welcome")
    try:
        ticket = base64.b64decode(messages.get_str(welcome, "ticket", 1024), validate=True)
        secret = base64.b64decode(messages.get_str(welcome, "secret", 64), validate=True)
    except ValueError:
        raise ProtocolError("malformed welcome") from None
    name = messages.get_str(welcome, "name", 64)
    if not NAME.fullmatch(name) or not 0 < len(ticket) <= wire.MAX_TICKET or len(secret) != SECRET_BYTES:
        raise ProtocolError("malformed welcome")
    return Welcome(name, ticket, secret, features_of(welcome))


class ControlClient:
    def __init__(self, host: str, port: int, ident: identity.Identity, pins: PinList) -> None:
        self.host, self.port = host, port
        self.ident = ident
        self.pins = pins
        self.chan: Channel | None = None
        self.last_ping: float | None = None
        self.rtt = 0.0
        self.welcome: Welcome | None = None  # the latest: new streams open with its ticket
        self.reopened = 0  # times the connection was found gone and opened again

    def open(self) -> Welcome:
        """The first connection.  One the server refuses or resets before it says
        a word (a server starting, or one whose unauthenticated slots a flood
        keeps cycling) is tried again with the one backoff; anything else (a
        timeout, a pin mismatch, the server's own error) is final at once."""
        backoff = Backoff()
        while True:
            try:
                return self.connect()
            except ResetError:
                if not backoff.again():
                    raise

    def connect(self) -> Welcome:
        pinned = self.pins.get(self.host, self.port)
        where = address_key(self.host, self.port)
        raw = connect(self.host, self.port, CONNECT_TIMEOUT)
        keep_alive_probes(raw)  # a peer gone silent (a network change) is noticed in about 30 s
        try:
            conn = tls_wrap(raw, self.ident.client_context(), CONNECT_TIMEOUT, server_side=False)
        except BaseException:
            raw.close()
            raise
        try:
            return self._handshake(conn, pinned, where)
        except BaseException:  # reconnecting again and again must not leak descriptors
            conn.close()
            raise

    def _handshake(self, conn: Conn, pinned: bytes | None, where: str) -> Welcome:
        server_fp = identity.fingerprint_of(peer_cert(conn))
        shown = identity.format_fp(server_fp)
        if pinned is None:
            raise TrustError(
                f"server {where} is not pinned. It presents fingerprint {shown}. "
                f"If that is what `fastxfer id` prints on the server, run: fastxfer pin {where} {shown}"
            )
        if pinned != server_fp:
            raise TrustError(
                f"server {where} presents fingerprint {shown}, not the pinned "
                f"{identity.format_fp(pinned)}: someone may be impersonating it; nothing was sent. "
                f"If the server's identity changed on purpose, run: fastxfer unpin {where}, then pin the new one"
            )
        self.server_fp = server_fp
        chan = Channel(conn, limit=REPLY_LIMIT)
        nonce = parse_challenge(chan.recv(CONNECT_TIMEOUT))
        sig = self.ident.sign(identity.auth_message(nonce, server_fp, self.ident.fingerprint))
        chan.send({
            "t": "auth",
            "cert": base64.b64encode(self.ident.cert_der).decode(),
            "sig": base64.b64encode(sig).decode(),
        })
        welcome = parse_welcome(chan.recv(CONNECT_TIMEOUT))
        self.chan = chan
        # The least round trip the kernel saw during the handshakes: the path's
        # delay, which a send's tuning starts from (0 where it cannot be read: near).
        # The smoothed one would include the server's think time (signatures).
        self.rtt = self.rtt or conn.min_rtt() or 0.0
        self.welcome = welcome
        return self.welcome

    def call(self, msg: dict, reply: str) -> dict:
        """Send *msg* and return the server's *reply*.

        A connection found gone (the server restarted, the network changed) is
        opened again, with a fresh proof of identity and a new welcome, and the
        call made again, with the one backoff (client/retry.py).  A commit whose
        answer was lost is not repeated: it may have taken effect, and the
        ConnectError tells the caller to find out.
        """
        backoff = Backoff()
        while True:
            sent = False
            try:
                if self.chan is None:
                    self.connect()
                    self.reopened += 1
                assert self.chan is not None
                self.chan.send(msg)
                sent = True
                return messages.expect(self.chan.recv(REPLY_TIMEOUT), reply)
            except ConnectError:
                self.drop()
                if (sent and msg.get("t") in NOT_REPEATED) or not backoff.again():
                    raise

    def check(self) -> None:
        """Between calls the server has nothing to say: anything readable is its
        end.  A connection that ended is opened again at once (after a server
        restart, new streams need the new ticket); the server's own error (a
        revoked client, say) is raised, and so is a reconnection that failed."""
        if self.chan is not None and not self.chan.conn.readable(0):
            return
        if self.chan is not None:
            try:
                messages.expect(self.chan.recv(1.0), "nothing")
            except (ConnectError, ProtocolError):
                self.drop()
        self.call({"t": "ping"}, "pong")
        self.last_ping = time.monotonic()

    def drop(self) -> None:
        """Forget a connection found broken; the next call opens a new one."""
        if self.chan is not None:
            self.chan.conn.close()
            self.chan = None

    def close(self) -> None:
        if self.chan is not None:
            try:
                self.chan.send({"t": "bye"})
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            self.chan.conn.close()
            self.chan = None


KEEP_ALIVE = 60.0  # well inside the server's idle limit for control connections


def keep_alive(control: ControlClient) -> None:
    """A ping on an otherwise quiet control connection while streams do the work."""
    now = time.monotonic()
    if control.last_ping is None:
        control.last_ping = now
    elif now - control.last_ping >= KEEP_ALIVE:
        control.call({"t": "ping"}, "pong")
        control.last_ping = now


def open_stream(host: str, port: int, welcome: Welcome) -> FramedConn:
    """A new stream connection, its keys agreed and proven by a first SYNC."""
    conn = connect(host, port, CONNECT_TIMEOUT)
    client_random = os.urandom(wire.RANDOM)
    conn.send(wire.encode_open(welcome.ticket, client_random))
    server_random = wire.parse_open_reply(conn.recv_exact(4 + wire.RANDOM))
    c2s, s2c = keys.stream_keys(welcome.secret, client_random, server_random)
    fc = FramedConn(conn, *keys.pair(c2s, s2c, "client"))
    fc.send(wire.SYNC)
    return fc


def connect_control(address: str):
    from fastxfer.trust.identity import home, load_or_create
    from fastxfer.client.connect import ControlClient
    from fastxfer.trust.pins import PinList, parse_address

    host, port = parse_address(address)
    control = ControlClient(host, port, load_or_create(), PinList(home()))
    return control, control.open()
