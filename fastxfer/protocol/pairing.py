"""Pairing codes and the confirmation that ends a pairing (docs/PROTOCOL.md § 3a).

A code is ``N-word-word``: N names the invitation on the server (it is
sent in the clear inside TLS, so it is no secret), the two words are the
secret, 11 bits each (protocol/words), 22 bits in all: one guess in
4,194,304 (2.4e-7) is right.  The whole code is the PAKE's password; the
server runs one PAKE per invitation, so each code grants one guess.

After the PAKE both sides hold a key K.  Each proves it with a MAC keyed
from K over the PAKE messages, the server's certificate fingerprint (the
one the client saw in TLS), the client's fingerprint and the client's
name: a peer that did not know the code, or that is not the server whose
certificate the client saw (a man in the middle with a certificate of its
own), cannot make the MAC the other side computes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from fastxfer.errors import ProtocolError, UsageError
from fastxfer.protocol.messages import get_str
from fastxfer.protocol.words import WORDS

WORD_COUNT = 2  # secret words per code
SECRET_BITS = 11 * WORD_COUNT
GUESS_CHANCE = 1 / (len(WORDS) ** WORD_COUNT)  # one online guess: 2.4e-7
MAX_NUMBER = 9999
PAKE_MESSAGE = 33  # bytes: SPAKE2's side byte and an Ed25519 element
MAC_SIZE = 32

CONFIRM_CONTEXT = b"fastxfer pair confirm v1\x00"
SERVER_ROLE = b"server\x00\x00"  # fixed length: the MAC's fields are unambiguous
CLIENT_ROLE = b"client\x00\x00"

_INDEX = {w: i for i, w in enumerate(WORDS)}
_BY_PREFIX = {w[:4]: w for w in WORDS}  # no two words share their first four letters


class Code:
    """A parsed pairing code: the invitation's number and its secret words."""

    __slots__ = ("number", "words")

    def __init__(self, number: int, words: tuple[str, ...]) -> None:
        self.number = number
        self.words = words

    def __str__(self) -> str:
        return "-".join([str(self.number), *self.words])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Code) and (self.number, self.words) == (other.number, other.words)

    def __hash__(self) -> int:
        return hash((self.number, self.words))

    @property
    def password(self) -> bytes:
        return str(self).encode()

    @property
    def shown(self) -> str:
        """What a log may say of it: the number only, never the secret."""
        return f"{self.number}-\u2026"


def code_from(number: int, secret: int) -> Code:
    """The code of invitation *number* whose secret is *secret* (0 <= secret < 2**22)."""
    if not 1 <= number <= MAX_NUMBER or not 0 <= secret < len(WORDS) ** WORD_COUNT:
        raise ValueError("pairing code out of range")
    words = []
    for _ in range(WORD_COUNT):
        secret, index = divmod(secret, len(WORDS))
        words.append(WORDS[index])
    return Code(number, tuple(words))


def _word(token: str) -> str | None:
    if token in _INDEX:
        return token
    # Four letters name a word; more must still be its beginning.
    full = _BY_PREFIX.get(token[:4]) if len(token) >= 4 else None
    return full if full is not None and full.startswith(token) else None


def parse_code(text: str) -> Code:
    """``7-crossover-clockwork`` in any case, with ``-`` or spaces between the
    parts; a word may be shortened to its first four letters or more."""
    parts = [p for p in re.split(r"[\s\-]+", text.strip().lower()) if p]
    usage = f"not a pairing code: {text!r} (expected what `fastxfer invite` printed, e.g. 7-absurd-vessel)"
    if len(parts) != 1 + WORD_COUNT or not parts[0].isascii() or not parts[0].isdigit():
        raise UsageError(usage)
    number = int(parts[0])
    if not 1 <= number <= MAX_NUMBER:
        raise UsageError(usage)
    words = []
    for token in parts[1:]:
        word = _word(token)
        if word is None:
            raise UsageError(f"not a pairing code: {token!r} is not one of the code words; "
                             "check the spelling (nothing was sent)")
        words.append(word)
    return Code(number, tuple(words))


def confirmation(key: bytes, role: bytes, nonce: bytes, client_msg: bytes, server_msg: bytes,
                 server_fp: bytes, client_fp: bytes, name: str) -> bytes:
    """The MAC that *role* sends to prove it holds the PAKE's key *key*.

    Every field but the name has a fixed length, and the name is last with
    its length before it, so no two field lists give the same input."""
    if len(server_fp) != 32 or len(client_fp) != 32 or len(nonce) != 32 or role not in (SERVER_ROLE, CLIENT_ROLE):
        raise ValueError("malformed confirmation input")
    raw_name = name.encode()
    if len(raw_name) > 255:
        raise ValueError("client name too long")
    confirm_key = hmac.new(key, CONFIRM_CONTEXT, hashlib.sha256).digest()
    transcript = hashlib.sha256(len(client_msg).to_bytes(2, "big") + client_msg + server_msg).digest()
    body = role + nonce + transcript + server_fp + client_fp + bytes([len(raw_name)]) + raw_name
    return hmac.new(confirm_key, body, hashlib.sha256).digest()


def confirms(expected: bytes, got: bytes) -> bool:
    return hmac.compare_digest(expected, got)


def b64_field(msg: dict[str, Any], key: str, size: int) -> bytes:
    """Field *key* of a pairing message: base64 of exactly *size* bytes."""
    try:
        raw = base64.b64decode(get_str(msg, key, 4 * ((size + 2) // 3)), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ProtocolError(f"field {key!r} must be base64 of {size} bytes")
    return raw
