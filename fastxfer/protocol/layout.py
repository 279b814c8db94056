"""How a file is cut into chunks, and the digests that prove it (pure).

One layout per file: chunk i covers [i*chunk, min((i+1)*chunk, size)).
The server records the chunk size when a send starts, so a resumed send
uses the same offsets.  The file digest is a SHA-256 over the ordered
chunk digests (a hash list) so hashing runs in parallel across streams and
no byte is hashed twice.

Chunk record (server side, append-only, one 48-byte entry per durable
chunk; a torn or damaged entry is skipped and the next sound one found, so
the record can only understate what is on disk)::

    | index u64 | SHA-256 of the chunk 32 | first 8 bytes of SHA-256(index|digest) |
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from fastxfer.protocol.wire import MAX_CHUNK

MIN_CHUNK = 64 << 10
DEFAULT_CHUNK = 4 << 20
MAX_CHUNKS = 1 << 20
_ENTRY = struct.Struct(">Q32s8s")
RECORD_ENTRY = _ENTRY.size
_HASHLIST_HEAD = struct.Struct(">8sQI")


def choose_chunk(size: int, requested: int | None = None) -> int:
    """The chunk size for a file: the requested one, grown until the count fits."""
    chunk = requested or DEFAULT_CHUNK
    chunk = max(MIN_CHUNK, min(MAX_CHUNK, chunk))
    while chunk < MAX_CHUNK and chunk_count(size, chunk) > MAX_CHUNKS:
        chunk = min(MAX_CHUNK, chunk * 2)
    return chunk


def chunk_count(size: int, chunk: int) -> int:
    return (size + chunk - 1) // chunk


def chunk_span(size: int, chunk: int, index: int) -> tuple[int, int]:
    """(offset, length) of chunk *index*."""
    offset = index * chunk
    return offset, min(chunk, size - offset)


def valid_layout(size: int, chunk: int) -> bool:
    return MIN_CHUNK <= chunk <= MAX_CHUNK and chunk_count(size, chunk) <= MAX_CHUNKS


def file_digest(size: int, chunk: int, digests: Iterable[bytes]) -> bytes:
    h = hashlib.sha256(_HASHLIST_HEAD.pack(b"FXHASH1\x00", size, chunk))
    for d in digests:
        h.update(d)
    return h.digest()


def record_entry(index: int, digest: bytes) -> bytes:
    head = struct.pack(">Q", index) + digest
    return _ENTRY.pack(index, digest, hashlib.sha256(head).digest()[:8])


def parse_record(data: bytes, count: int) -> dict[int, bytes]:
    """Chunk index -> digest for every sound entry below *count* (the last entry of a chunk wins)."""
    return parse_record_conflicts(data, count)[0]


def parse_record_conflicts(data: bytes, count: int) -> tuple[dict[int, bytes], set[int]]:
    """As parse_record, and the chunks recorded with more than one digest.

    A chunk written twice with different bytes (by a hostile client, or from
    a file that changed under the sender) has two entries, and the order of
    entries need not be the order of the writes when two streams wrote it:
    for those chunks only the bytes on disk tell which one is there."""
    have: dict[int, bytes] = {}
    conflicts: set[int] = set()
    pos = 0
    while pos + RECORD_ENTRY <= len(data):
        index, digest, check = _ENTRY.unpack_from(data, pos)
        if hashlib.sha256(data[pos : pos + 40]).digest()[:8] != check:
            pos += 1  # a torn entry (a short write on a full disk): find the next sound one
            continue
        if index < count:
            if have.get(index, digest) != digest:
                conflicts.add(index)
            have[index] = digest
        pos += RECORD_ENTRY
    return have, conflicts


# ------------------------------------------------------------------ holes

MAX_HOLE_RANGES = 4096  # [first, count] pairs in one put item


_zero_digests: dict[int, bytes] = {}


def zero_digest(length: int) -> bytes:
    """SHA-256 of *length* zero bytes: a chunk that lies in a hole of a sparse file."""
    if length not in _zero_digests:
        _zero_digests[length] = hashlib.sha256(bytes(length)).digest()
    return _zero_digests[length]


def hole_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Chunk indices as [first, count] runs, as a put item carries them."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def hole_indices(runs: object, count: int) -> set[int]:
    """The chunk indices [first, count] runs name, every one below *count*; ValueError if malformed."""
    if not isinstance(runs, list) or len(runs) > MAX_HOLE_RANGES:
        raise ValueError("holes must be a list of at most 4096 [first, count] runs")
    out: set[int] = set()
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(type(v) is int for v in run)):
            raise ValueError("a hole run is [first, count]")
        first, n = run
        if first < 0 or n < 1 or first + n > count:
            raise ValueError("a hole run lies outside the file")
        out.update(range(first, first + n))
    return out
