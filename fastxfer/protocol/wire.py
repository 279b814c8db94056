"""The byte layout of stream openings and frames, as pure functions.

The control channel's messages are in messages.py.

Stream connection (plain TCP, every byte after the opening authenticated)::

    client -> server opening
    0        4       6          6+T             6+T+32
    | "FXS1" | T u16 | ticket T | client_random 32 |

    server -> client opening
    0        4                   36
    | "FXS1" | server_random 32  |

    then frames, both directions
    0        4       5                   5+H            5+H+B-H
    | B u32  | kind  | header (H bytes,   | sealed body    |
    |        | u8    |  fixed per kind)   | + 16-byte tag  |

    B counts everything after itself.  AAD of the seal = kind + header;
    the nonce is implicit (a counter per direction, see keys.py).

    kind DATA (1): header = fid 16 | offset u64 | length u32
                   body   = data (length) | SHA-256(data) 32
    kind ACK  (2): header = count u32
                   body   = (fid 16 | offset u64) * count
    kind SYNC (3): header = empty, body = empty: make everything sent so
                   far durable, then ACK it.  The client's first frame on
                   every stream is a SYNC: it proves the stream keys before
                   the server takes any larger frame.
    kind ERROR(4): header = empty, body = code u8 | UTF-8 message
    kind BUNDLE(5): header = bundle u32 | count u32 | snapshot u32
                   body   = count * ( path_len u16 | size u32 | mtime_ns i64 |
                                      mode u32 | path | data (size) | SHA-256 32 )
                   many small files in one frame, each committed on its own
                   (atomically, by rename) but made durable together; a
                   snapshot other than 0 (open, the client's) records each
                   file stored or found unchanged as one of its entries
    kind BUNDLE_ACK(6): header = bundle u32 | count u32
                   body   = count * ( status u8 | code u8 | len u16 | UTF-8 message )
                   status 0 stored, 1 unchanged, 2 failed (code = exit code)
    kind REQ  (7): header = tag 16 | offset u64 | length u32
                   body   = size u64 | mtime_ns i64 | path   (restore: the
                   client asks for a chunk of a stored file; the server
                   answers with a DATA frame whose fid is the tag, a ZEROS
                   frame when that span of the stored file is a hole, or a NAK)
    kind NAK  (8): header = tag 16, body = code u8 | UTF-8 message
    kind REQS (9): header = batch u32 | count u32
                   body   = count * ( tag 16 | size u64 | mtime_ns i64 |
                                      path_len u16 | path )
                   restore: the whole of many small files at once; the
                   answer is one DATAS frame with the same batch number
    kind DATAS(10): header = batch u32 | count u32
                   body   = count * ( tag 16 | status u8 | code u8 | len u32 |
                                      len bytes )
                   in the order asked: status 0, data (size) | SHA-256 32;
                   status 1, a UTF-8 message (code = exit code)
    kind ZEROS(11): header = tag 16 | offset u64 | length u32, body = empty
                   restore: the chunk asked for lies in a hole of the stored
                   file; it is zeros, and neither sent nor written (the client
                   still checks the whole file against its recorded digest)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from fastxfer.errors import ProtocolError

MAX_PATH_BYTES = 4096
MAX_CHUNK = 16 << 20
TAG = 16
DIGEST = 32
RANDOM = 32
MAX_TICKET = 512
MAX_ACKS = 4096
STREAM_MAGIC = b"FXS1"

DATA, ACK, SYNC, ERROR, BUNDLE, BUNDLE_ACK, REQ, NAK, REQS, DATAS, ZEROS = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
_HEADER = {
    DATA: struct.Struct(">16sQI"),
    ACK: struct.Struct(">I"),
    SYNC: struct.Struct(""),
    ERROR: struct.Struct(""),
    BUNDLE: struct.Struct(">III"),
    BUNDLE_ACK: struct.Struct(">II"),
    REQ: struct.Struct(">16sQI"),
    NAK: struct.Struct(">16s"),
    REQS: struct.Struct(">II"),
    DATAS: struct.Struct(">II"),
    ZEROS: struct.Struct(">16sQI"),
}
FRAME_KINDS = frozenset(_HEADER)
_REQ_BODY = struct.Struct(">Qq")
MAX_BUNDLE_FILES = 4096
_BENTRY = struct.Struct(">HIqI")
_BSTATUS = struct.Struct(">BBH")
_FRAME_PREFIX = struct.Struct(">IB")
_ACK_ENTRY = struct.Struct(">16sQ")
_OPEN = struct.Struct(">4sH")
_RENTRY = struct.Struct(">16sQqH")  # a REQS entry before its path
_DENTRY = struct.Struct(">16sBBI")  # a DATAS entry before its bytes

# The size a SYNC frame announces (kind + tag), the only frame allowed first.
SYNC_FRAME = 1 + TAG

# The largest frame a peer may announce: a full chunk with its digest.
MAX_FRAME = 1 + _HEADER[DATA].size + MAX_CHUNK + DIGEST + TAG


def encode_open(ticket: bytes, client_random: bytes) -> bytes:
    if len(ticket) > MAX_TICKET or len(client_random) != RANDOM:
        raise ValueError("bad opening")
    return _OPEN.pack(STREAM_MAGIC, len(ticket)) + ticket + client_random


def parse_open_prefix(prefix: bytes) -> int:
    """Given the first 6 bytes of a stream opening, return the ticket length."""
    magic, size = _OPEN.unpack(prefix)
    if magic != STREAM_MAGIC or not 0 < size <= MAX_TICKET:
        raise ProtocolError("not a fastxfer stream opening")
    return size


OPEN_PREFIX = _OPEN.size


def encode_open_reply(server_random: bytes) -> bytes:
    return STREAM_MAGIC + server_random


def parse_open_reply(data: bytes) -> bytes:
    if len(data) != 4 + RANDOM or data[:4] != STREAM_MAGIC:
        raise ProtocolError("server did not answer the stream opening")
    return data[4:]


@dataclass(frozen=True)
class FrameHead:
    """What the 5-byte prefix and the header of a frame say."""

    kind: int
    header: bytes  # raw header bytes: they are the AAD with the kind
    sealed_len: int  # bytes of sealed body that follow the header

    @property
    def aad(self) -> bytes:
        return bytes([self.kind]) + self.header


FRAME_PREFIX = _FRAME_PREFIX.size


def header_size(kind: int) -> int:
    try:
        return _HEADER[kind].size
    except KeyError:
        raise ProtocolError(f"unknown frame kind {kind}") from None


def parse_prefix(prefix: bytes, limit: int = MAX_FRAME) -> tuple[int, int]:
    """(kind, bytes after the kind byte) from a frame's first 5 bytes."""
    size, kind = _FRAME_PREFIX.unpack(prefix)
    hsize = header_size(kind)
    if size > limit or size < 1 + hsize + TAG:
        raise ProtocolError(f"frame of {size} bytes is out of bounds")
    return kind, size - 1


def split_rest(kind: int, rest: bytes | memoryview) -> FrameHead:
    hsize = header_size(kind)
    return FrameHead(kind, bytes(rest[:hsize]), len(rest) - hsize)


def frame_prefix(kind: int, header: bytes, body_len: int) -> bytes:
    """Prefix + header for a frame whose plaintext body is *body_len* bytes."""
    return _FRAME_PREFIX.pack(1 + len(header) + body_len + TAG, kind) + header


def data_header(fid: bytes, offset: int, length: int) -> bytes:
    return _HEADER[DATA].pack(fid, offset, length)


def zeros_header(tag: bytes, offset: int, length: int) -> bytes:
    return _HEADER[ZEROS].pack(tag, offset, length)


def parse_zeros(header: bytes, body: bytes | memoryview) -> tuple[bytes, int, int]:
    tag, offset, length = _HEADER[ZEROS].unpack(header)
    if body or not 0 < length <= MAX_CHUNK:
        raise ProtocolError("malformed ZEROS frame")
    return tag, offset, length


def parse_data_header(header: bytes, sealed_len: int) -> tuple[bytes, int, int]:
    fid, offset, length = _HEADER[DATA].unpack(header)
    if sealed_len != length + DIGEST + TAG or length > MAX_CHUNK:
        raise ProtocolError("data frame length does not match its header")
    return fid, offset, length


def ack_header(count: int) -> bytes:
    return _HEADER[ACK].pack(count)


def encode_acks(entries: list[tuple[bytes, int]]) -> bytes:
    return b"".join(_ACK_ENTRY.pack(fid, off) for fid, off in entries)


def parse_acks(header: bytes, body: bytes) -> list[tuple[bytes, int]]:
    (count,) = _HEADER[ACK].unpack(header)
    if count > MAX_ACKS or len(body) != count * _ACK_ENTRY.size:
        raise ProtocolError("malformed acknowledgement")
    return [_ACK_ENTRY.unpack_from(body, i * _ACK_ENTRY.size) for i in range(count)]


def bundle_header(bundle: int, count: int, snap: int = 0) -> bytes:
    return _HEADER[BUNDLE].pack(bundle, count, snap)


def pack_bundle_entry_head(buf: bytearray, pos: int, path: bytes, size: int, mtime_ns: int, mode: int) -> None:
    """A bundle entry's head (lengths, time, mode, path), written into *buf* at *pos*;
    the file's bytes and their SHA-256 follow it."""
    _BENTRY.pack_into(buf, pos, len(path), size, mtime_ns, mode)
    buf[pos + _BENTRY.size : pos + _BENTRY.size + len(path)] = path


BUNDLE_ENTRY_HEAD = _BENTRY.size  # before the path
BUNDLE_ENTRY_FIXED = _BENTRY.size + DIGEST


class BundleEntry(NamedTuple):  # a tuple: built for every bundled file, half the cost of a frozen dataclass
    path: bytes
    size: int
    mtime_ns: int
    mode: int
    data: memoryview
    digest: bytes


def parse_bundle(header: bytes, body: memoryview) -> tuple[int, list[BundleEntry], int]:
    """(bundle number, its entries, the snapshot they join or 0)."""
    bundle, count, snap = _HEADER[BUNDLE].unpack(header)
    if count > MAX_BUNDLE_FILES:
        raise ProtocolError("bundle names too many files")
    entries, pos = [], 0
    for _ in range(count):
        if pos + _BENTRY.size > len(body):
            raise ProtocolError("bundle is truncated")
        plen, size, mtime_ns, mode = _BENTRY.unpack_from(body, pos)
        pos += _BENTRY.size
        end = pos + plen + size + DIGEST
        if plen == 0 or plen > MAX_PATH_BYTES or end > len(body):
            raise ProtocolError("bundle entry is out of bounds")
        path = bytes(body[pos : pos + plen])
        data = body[pos + plen : pos + plen + size]
        entries.append(BundleEntry(path, size, mtime_ns, mode & 0o7777, data, bytes(body[end - DIGEST : end])))
        pos = end
    if pos != len(body):
        raise ProtocolError("bundle has bytes beyond its entries")
    return bundle, entries, snap


def encode_bundle_ack(bundle: int, statuses: list[tuple[int, int, str]]) -> tuple[bytes, bytes]:
    body = b""
    for status, code, message in statuses:
        text = message_bytes(message)
        body += _BSTATUS.pack(status, code, len(text)) + text
    return _HEADER[BUNDLE_ACK].pack(bundle, len(statuses)), body


def parse_bundle_ack(header: bytes, body: bytes) -> tuple[int, list[tuple[int, int, str]]]:
    bundle, count = _HEADER[BUNDLE_ACK].unpack(header)
    if count > MAX_BUNDLE_FILES:
        raise ProtocolError("malformed bundle acknowledgement")
    out, pos = [], 0
    for _ in range(count):
        if pos + _BSTATUS.size > len(body):
            raise ProtocolError("malformed bundle acknowledgement")
        status, code, size = _BSTATUS.unpack_from(body, pos)
        pos += _BSTATUS.size
        out.append((status, code, body[pos : pos + size].decode(errors="replace")))
        pos += size
    if pos != len(body) or any(s > 2 for s, _, _ in out):
        raise ProtocolError("malformed bundle acknowledgement")
    return bundle, out


def encode_req(tag: bytes, offset: int, length: int, size: int, mtime_ns: int, path: bytes) -> tuple[bytes, bytes]:
    return _HEADER[REQ].pack(tag, offset, length), _REQ_BODY.pack(size, mtime_ns) + path


def parse_req(header: bytes, body: bytes) -> tuple[bytes, int, int, int, int, bytes]:
    tag, offset, length = _HEADER[REQ].unpack(header)
    if len(body) <= _REQ_BODY.size or len(body) > _REQ_BODY.size + MAX_PATH_BYTES or length > MAX_CHUNK:
        raise ProtocolError("malformed chunk request")
    size, mtime_ns = _REQ_BODY.unpack_from(body)
    return tag, offset, length, size, mtime_ns, body[_REQ_BODY.size :]


class Ask(NamedTuple):
    """One small file a REQS frame asks for whole."""

    tag: bytes
    size: int
    mtime_ns: int
    path: bytes


DATAS_TEXT = 256  # bytes of a DATAS entry's message, at most


def answer_cost(size: int) -> int:
    """Bytes an asked file may take in the DATAS answer (its data and digest,
    or a message); a REQS frame may ask for MAX_CHUNK of them, so that the
    answer fits in MAX_FRAME."""
    return _DENTRY.size + max(size + DIGEST, DATAS_TEXT)


def encode_reqs(batch: int, asks: list[Ask]) -> tuple[bytes, bytes]:
    body = b"".join(_RENTRY.pack(a.tag, a.size, a.mtime_ns, len(a.path)) + a.path for a in asks)
    return _HEADER[REQS].pack(batch, len(asks)), body


def parse_reqs(header: bytes, body: bytes) -> tuple[int, list[Ask]]:
    batch, count = _HEADER[REQS].unpack(header)
    if not 0 < count <= MAX_BUNDLE_FILES:
        raise ProtocolError("malformed request for many files")
    asks, pos, cost = [], 0, 0
    for _ in range(count):
        if pos + _RENTRY.size > len(body):
            raise ProtocolError("malformed request for many files")
        tag, size, mtime_ns, plen = _RENTRY.unpack_from(body, pos)
        pos += _RENTRY.size
        if not 0 < plen <= MAX_PATH_BYTES or pos + plen > len(body):
            raise ProtocolError("malformed request for many files")
        asks.append(Ask(tag, size, mtime_ns, bytes(body[pos : pos + plen])))
        pos += plen
        cost += answer_cost(size)
    if pos != len(body) or cost > MAX_CHUNK:
        raise ProtocolError("malformed request for many files")
    return batch, asks


def datas_header(batch: int, count: int) -> bytes:
    return _HEADER[DATAS].pack(batch, count)


DATAS_ENTRY_HEAD = _DENTRY.size


def pack_datas_entry_head(buf: bytearray | memoryview, pos: int, tag: bytes, status: int, code: int,
                          length: int) -> None:
    """A DATAS entry's head, written into *buf* at *pos*; its *length* bytes follow."""
    _DENTRY.pack_into(buf, pos, tag, status, code, length)


def parse_datas(header: bytes, body: memoryview) -> tuple[int, list[tuple[bytes, int, int, memoryview]]]:
    """(batch, [(tag, status, code, bytes)]): status 0 carries data | SHA-256, 1 a message."""
    batch, count = _HEADER[DATAS].unpack(header)
    if count > MAX_BUNDLE_FILES:
        raise ProtocolError("malformed answer for many files")
    out, pos = [], 0
    for _ in range(count):
        if pos + _DENTRY.size > len(body):
            raise ProtocolError("malformed answer for many files")
        tag, status, code, length = _DENTRY.unpack_from(body, pos)
        pos += _DENTRY.size
        if status > 1 or pos + length > len(body) or (status == 0 and length < DIGEST):
            raise ProtocolError("malformed answer for many files")
        out.append((tag, status, code, body[pos : pos + length]))
        pos += length
    if pos != len(body):
        raise ProtocolError("malformed answer for many files")
    return batch, out


def message_bytes(message: str, limit: int = 1000) -> bytes:
    """A refusal's text for a frame: a surrogate (a name that is not UTF-8) as
    a backslash escape rather than an encoding error; cut to *limit* bytes."""
    return message.encode("utf-8", "backslashreplace")[:limit]


def encode_error(code: int, message: str) -> bytes:
    return bytes([code]) + message_bytes(message)


def parse_error(body: bytes) -> tuple[int, str]:
    if not body:
        raise ProtocolError("empty error frame")
    return body[0], body[1:].decode(errors="replace")


def parse_nak_header(header: bytes) -> bytes:
    """The tag of the request a NAK refuses."""
    (tag,) = _HEADER[NAK].unpack(header)
    return tag
