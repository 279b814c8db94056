"""Key schedule and nonce discipline for stream connections (pure: no I/O).

    server_secret (32 random bytes, made by the master at start, shared by
                   inheritance with every worker, never written to disk)
      ticket_key      = HKDF(server_secret, info="fastxfer ticket key v1")
      session_secret  = HKDF(server_secret, info="fastxfer session v1" | session_id)

    A session starts on the authenticated control channel: the worker there
    makes a session_id and hands the client, inside TLS, the session_secret
    and a ticket = nonce 12 | AES-256-GCM(ticket_key, nonce,
    session_id | expires | client_fp | client name, aad="fastxfer ticket v1").
    Any worker can open a ticket and re-derive the session_secret: that is
    how a stream proves its session to whichever worker holds it.

    Each stream connection gets fresh keys from randoms of both sides:
      c2s_key | s2c_key = HKDF(session_secret, salt=client_random | server_random,
                               info="fastxfer stream v1", length=64)
    The nonce of a frame is a 4-byte direction label | a 64-bit counter that
    starts at 0 and only goes up; it is never sent.  Fresh keys per
    connection mean a reconnect never reuses a (key, nonce) pair.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fastxfer.errors import ProtocolError

TICKET_AAD = b"fastxfer ticket v1"
SESSION_ID = 16
_TICKET_HEAD = struct.Struct(">16sQ32s")
C2S = b"c2s\x00"
S2C = b"s2c\x00"


def hkdf(secret: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


@dataclass(frozen=True)
class Session:
    session_id: bytes
    client_name: str
    client_fp: bytes
    expires: int
    secret: bytes


class ServerKeys:
    """What every worker of one server run holds."""

    def __init__(self, server_secret: bytes, random: Callable[[int], bytes] = os.urandom) -> None:
        self._secret = server_secret
        self._ticket = AESGCM(hkdf(server_secret, b"fastxfer ticket key v1"))
        self._random = random

    def session_secret(self, session_id: bytes) -> bytes:
        return hkdf(self._secret, b"fastxfer session v1" + session_id)

    def new_session(self, name: str, client_fp: bytes, expires: int) -> tuple[Session, bytes]:
        session_id = self._random(SESSION_ID)
        session = Session(session_id, name, client_fp, expires, self.session_secret(session_id))
        nonce = self._random(12)
        plain = _TICKET_HEAD.pack(session_id, expires, client_fp) + name.encode()
        return session, nonce + self._ticket.encrypt(nonce, plain, TICKET_AAD)

    def open_ticket(self, ticket: bytes, now: int) -> Session:
        """Every way a ticket can be bad raises the same error."""
        try:
            plain = self._ticket.decrypt(ticket[:12], ticket[12:], TICKET_AAD)
            session_id, expires, client_fp = _TICKET_HEAD.unpack_from(plain)
            name = plain[_TICKET_HEAD.size :].decode()
        except (InvalidTag, ValueError, struct.error):
            raise ProtocolError("stream ticket is not valid for this server run") from None
        if now > expires:
            raise ProtocolError("stream ticket is not valid for this server run")
        return Session(session_id, name, client_fp, expires, self.session_secret(session_id))


def stream_keys(session_secret: bytes, client_random: bytes, server_random: bytes) -> tuple[bytes, bytes]:
    material = hkdf(session_secret, b"fastxfer stream v1", 64, salt=client_random + server_random)
    return material[:32], material[32:]


class Sealer:
    """Seals frames of one direction of one connection, nonce by counter."""

    def __init__(self, key: bytes, label: bytes) -> None:
        self._aead = AESGCM(key)
        self._label = label
        self._counter = 0

    def _nonce(self) -> bytes:
        if self._counter >= 2**64 - 1:
            raise ProtocolError("nonce space of this connection is exhausted")
        nonce = self._label + self._counter.to_bytes(8, "big")
        self._counter += 1
        return nonce

    def seal(self, aad: bytes, plain: bytes) -> bytes:
        return self._aead.encrypt(self._nonce(), plain, aad)

    def seal_into(self, aad: bytes, plain: bytes | memoryview, out: bytearray | memoryview) -> None:
        """Write ciphertext + tag (len(plain) + 16 bytes) into *out*."""
        self._aead.encrypt_into(self._nonce(), plain, aad, out)


class Opener:
    """Opens frames of one direction; a frame out of order fails to open."""

    def __init__(self, key: bytes, label: bytes) -> None:
        self._aead = AESGCM(key)
        self._label = label
        self._counter = 0

    def _nonce(self) -> bytes:
        nonce = self._label + self._counter.to_bytes(8, "big")
        self._counter += 1
        return nonce

    def open(self, aad: bytes, sealed: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(), sealed, aad)
        except InvalidTag:
            raise ProtocolError("a frame failed authentication (tampered, replayed or reordered)") from None

    def open_into(self, aad: bytes, sealed: bytes | memoryview, out: bytearray | memoryview) -> None:
        try:
            self._aead.decrypt_into(self._nonce(), sealed, aad, out)
        except InvalidTag:
            raise ProtocolError("a frame failed authentication (tampered, replayed or reordered)") from None


def pair(c2s: bytes, s2c: bytes, side: str) -> tuple[Sealer, Opener]:
    """(sealer, opener) for the 'client' or the 'server' end of a stream."""
    if side == "client":
        return Sealer(c2s, C2S), Opener(s2c, S2C)
    return Sealer(s2c, S2C), Opener(c2s, C2S)
