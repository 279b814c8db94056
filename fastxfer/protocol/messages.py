"""The control channel's messages, as pure functions and a decoder with no I/O.

Control channel (inside TLS 1.3), both directions, one message per frame::

    0        4                 4+L
    | L u32  | JSON object, L bytes (UTF-8) |      L <= MAX_CONTROL

Everything a peer sends is read through the typed accessors below, so that
everything malformed becomes ProtocolError at one place.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from fastxfer.errors import ProtocolError, from_wire_name
from fastxfer.protocol.wire import MAX_PATH_BYTES

MAX_CONTROL = 4 << 20  # what a server takes from an authenticated client
MAX_BATCH = 4096  # files named in one put/commit
MAX_PROBE_TOPS = 64  # folders a first probe may ask "is anything stored below?" about
_LEN = struct.Struct(">I")
_HAVE = struct.Struct(">I32s")
MAX_REPLY = 64 << 20  # what a client accepts from its (authenticated) server


def encode_msg(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    if len(body) > MAX_REPLY:
        raise ValueError("control message too large")
    return _LEN.pack(len(body)) + body


class MsgDecoder:
    """Feed bytes in any split; take whole messages out."""

    def __init__(self, limit: int = MAX_CONTROL) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> dict[str, Any] | None:
        if len(self._buf) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buf)
        if size > self.limit:
            raise ProtocolError(f"control message of {size} bytes exceeds the limit")
        if len(self._buf) < 4 + size:
            return None
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return parse_msg(body)

    def wanted(self) -> int:
        """Bytes still missing for the next message (at least 1)."""
        if len(self._buf) < 4:
            return 4 - len(self._buf)
        (size,) = _LEN.unpack_from(self._buf)
        return max(1, 4 + min(size, self.limit) - len(self._buf))


def parse_msg(body: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("control message is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("control message has no type")
    return msg


# Typed accessors: everything the peer sends is checked at one place, and
# everything malformed becomes ProtocolError.


def get_str(msg: dict[str, Any], key: str, limit: int = MAX_PATH_BYTES) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a string of at most {limit} characters")
    return value


def get_int(msg: dict[str, Any], key: str, low: int = 0, high: int = 2**63 - 1) -> int:
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"field {key!r} must be an integer in [{low}, {high}]")
    return value


def get_hex(msg: dict[str, Any], key: str, size: int) -> bytes:
    value = get_str(msg, key, 2 * size)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ProtocolError(f"field {key!r} must be {size} bytes in hex")
    return raw


def get_list(msg: dict[str, Any], key: str, limit: int = MAX_BATCH) -> list[Any]:
    value = msg.get(key)
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a list of at most {limit} items")
    return value


def get_obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("expected an object")
    return value


def expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    if msg.get("t") == "error":
        raise from_wire_name(str(msg.get("code")), str(msg.get("message"))[:1000])
    if msg.get("t") != kind:
        raise ProtocolError(f"expected a {kind!r} message, got {str(msg.get('t'))[:40]!r}")
    return msg


def encode_have(have: dict[int, bytes]) -> str:
    """Durable chunks for a resume, compactly: base64 of (index u32 | digest 32)*."""
    return base64.b64encode(b"".join(_HAVE.pack(i, d) for i, d in sorted(have.items()))).decode()


def parse_have(text: str, count: int) -> dict[int, bytes]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ProtocolError("malformed chunk list") from None
    if len(raw) % _HAVE.size:
        raise ProtocolError("malformed chunk list")
    have = dict(_HAVE.iter_unpack(raw))
    if any(i >= count for i in have):
        raise ProtocolError("chunk list names a chunk beyond the file")
    return have


def page_answers(reply: dict[str, Any], asked: int, key: str = "files", least: int = 1) -> list[Any]:
    """The answers one page of a paged reply ("page": true in the request) holds:
    all *asked* when it has no "next", else the first "next" of them (at least
    *least*), which the client asks about again without those.  A server from
    before paging ignores "page" and answers everything."""
    answers = get_list(reply, key, max(asked, 1))
    if reply.get("next") is None:
        done = asked
    else:
        done = get_int(reply, "next", least, asked - 1)  # something left to ask for
    if len(answers) != done:
        raise ProtocolError("server answered a different number of files")
    return answers
