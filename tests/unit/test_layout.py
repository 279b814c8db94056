"""Pure tests of the chunk layout, hash list and chunk record in fastxfer.layout."""

from __future__ import annotations

import hashlib
import random

import pytest

from fastxfer.protocol import layout
from fastxfer.protocol.wire import MAX_CHUNK
from fastxfer.protocol.layout import DEFAULT_CHUNK, MAX_CHUNKS, MIN_CHUNK, RECORD_ENTRY


def _digest(i: int) -> bytes:
    return hashlib.sha256(b"chunk %d" % i).digest()


# ---------------------------------------------------------------- choose_chunk


def test_choose_chunk_default() -> None:
    assert layout.choose_chunk(0) == DEFAULT_CHUNK
    assert layout.choose_chunk(10 << 30) == DEFAULT_CHUNK
    assert layout.choose_chunk(123, 0) == DEFAULT_CHUNK


@pytest.mark.parametrize(
    "requested, expected",
    [
        (1, MIN_CHUNK),
        (MIN_CHUNK - 1, MIN_CHUNK),
        (MIN_CHUNK, MIN_CHUNK),
        (1 << 20, 1 << 20),
        (MAX_CHUNK, MAX_CHUNK),
        (MAX_CHUNK + 1, MAX_CHUNK),
        (1 << 40, MAX_CHUNK),
    ],
)
def test_choose_chunk_clamped(requested: int, expected: int) -> None:
    assert layout.choose_chunk(1 << 20, requested) == expected


def test_choose_chunk_grows_to_keep_count() -> None:
    size = MIN_CHUNK * MAX_CHUNKS  # exactly MAX_CHUNKS chunks of MIN_CHUNK
    assert layout.choose_chunk(size, MIN_CHUNK) == MIN_CHUNK
    assert layout.choose_chunk(size + 1, MIN_CHUNK) == 2 * MIN_CHUNK
    big = 3 * DEFAULT_CHUNK * MAX_CHUNKS  # 12 TiB: 4 MiB would need 3 Mi chunks
    chunk = layout.choose_chunk(big)
    assert chunk == 4 * DEFAULT_CHUNK
    assert layout.chunk_count(big, chunk) <= MAX_CHUNKS
    assert layout.valid_layout(big, chunk)


# Sizes that are not MIN_CHUNK * 2**k once doubled straight past MAX_CHUNK.
_GRID = [
    (size, requested)
    for size in [0, 1, MIN_CHUNK, 7 << 30, MIN_CHUNK * MAX_CHUNKS * 5 + 3, MAX_CHUNK * MAX_CHUNKS]
    for requested in [None, 1, MIN_CHUNK, 3 * MIN_CHUNK, 3 << 20, DEFAULT_CHUNK, MAX_CHUNK]
]


@pytest.mark.parametrize("size, requested", _GRID)
def test_choose_chunk_always_valid(size: int, requested: int | None) -> None:
    chunk = layout.choose_chunk(size, requested)
    assert MIN_CHUNK <= chunk <= MAX_CHUNK
    assert layout.chunk_count(size, chunk) <= MAX_CHUNKS
    assert layout.valid_layout(size, chunk)


def test_choose_chunk_beyond_the_largest_layout() -> None:
    # Over MAX_CHUNK * MAX_CHUNKS (16 TiB) no chunk size fits: it stops at MAX_CHUNK
    # and valid_layout says no, which the client turns into an error.
    size = MAX_CHUNK * MAX_CHUNKS + 1
    chunk = layout.choose_chunk(size)
    assert chunk == MAX_CHUNK
    assert not layout.valid_layout(size, chunk)


def test_valid_layout() -> None:
    assert layout.valid_layout(100, MIN_CHUNK)
    assert not layout.valid_layout(100, MIN_CHUNK - 1)
    assert not layout.valid_layout(100, MAX_CHUNK + 1)
    assert not layout.valid_layout(MIN_CHUNK * MAX_CHUNKS + 1, MIN_CHUNK)


# ---------------------------------------------------------------- count and span

C = MIN_CHUNK


@pytest.mark.parametrize(
    "size, count, last",
    [
        (0, 0, None),
        (1, 1, (0, 1)),
        (C - 1, 1, (0, C - 1)),
        (C, 1, (0, C)),
        (C + 1, 2, (C, 1)),
        (2 * C, 2, (C, C)),
        (5 * C + 17, 6, (5 * C, 17)),
    ],
)
def test_count_and_span(size: int, count: int, last: tuple[int, int] | None) -> None:
    assert layout.chunk_count(size, C) == count
    if last is not None:
        assert layout.chunk_span(size, C, count - 1) == last
    spans = [layout.chunk_span(size, C, i) for i in range(count)]
    assert sum(length for _, length in spans) == size
    for i, (offset, length) in enumerate(spans):
        assert offset == i * C
        assert 0 < length <= C
        if i + 1 < count:
            assert length == C


# ---------------------------------------------------------------- file digest


def test_file_digest_is_a_hash_list() -> None:
    digests = [_digest(i) for i in range(3)]
    size, chunk = 2 * C + 5, C
    head = b"FXHASH1\x00" + size.to_bytes(8, "big") + chunk.to_bytes(4, "big")
    expected = hashlib.sha256(head + b"".join(digests)).digest()
    assert layout.file_digest(size, chunk, digests) == expected


def test_file_digest_sensitivity() -> None:
    digests = [_digest(i) for i in range(4)]
    base = layout.file_digest(4 * C, C, digests)
    assert layout.file_digest(4 * C, C, list(digests)) == base
    variants = [
        layout.file_digest(4 * C, C, digests[::-1]),  # order
        layout.file_digest(4 * C, C, [digests[1], digests[0]] + digests[2:]),
        layout.file_digest(4 * C - 1, C, digests),  # size
        layout.file_digest(4 * C, 2 * C, digests),  # chunk
        layout.file_digest(4 * C, C, digests[:3]),  # a chunk missing
        layout.file_digest(4 * C, C, digests + [digests[0]]),
        layout.file_digest(4 * C, C, [_digest(9)] + digests[1:]),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_file_digest_empty_file() -> None:
    a = layout.file_digest(0, C, [])
    assert len(a) == 32
    assert a != layout.file_digest(0, 2 * C, [])


# ---------------------------------------------------------------- chunk record


def test_record_entry_layout() -> None:
    entry = layout.record_entry(5, _digest(5))
    assert len(entry) == RECORD_ENTRY == 48
    assert entry[:8] == (5).to_bytes(8, "big")
    assert entry[8:40] == _digest(5)
    assert entry[40:] == hashlib.sha256(entry[:40]).digest()[:8]


def test_record_roundtrip() -> None:
    order = list(range(20))
    random.Random(1).shuffle(order)
    data = b"".join(layout.record_entry(i, _digest(i)) for i in order)
    assert layout.parse_record(data, 20) == {i: _digest(i) for i in range(20)}
    assert layout.parse_record(b"", 20) == {}


@pytest.mark.parametrize("cut", [1, 8, 40, 47])
def test_record_torn_tail_ignored(cut: int) -> None:
    data = layout.record_entry(0, _digest(0)) + layout.record_entry(1, _digest(1))
    torn = data + layout.record_entry(2, _digest(2))[:cut]
    assert layout.parse_record(torn, 10) == {0: _digest(0), 1: _digest(1)}


@pytest.mark.parametrize("pos", [0, 7, 8, 39, 40, 47])
def test_record_corrupt_entry_ignored(pos: int) -> None:
    entries = [layout.record_entry(i, _digest(i)) for i in range(3)]
    bad = bytearray(entries[1])
    bad[pos] ^= 0x04
    data = entries[0] + bytes(bad) + entries[2]
    assert layout.parse_record(data, 10) == {0: _digest(0), 2: _digest(2)}


def test_record_zeroed_entry_ignored() -> None:
    # A crash can leave a block of zeros where an entry was being written.
    data = layout.record_entry(0, _digest(0)) + bytes(RECORD_ENTRY) + layout.record_entry(2, _digest(2))
    assert layout.parse_record(data, 10) == {0: _digest(0), 2: _digest(2)}


def test_record_index_beyond_count_ignored() -> None:
    data = b"".join(layout.record_entry(i, _digest(i)) for i in (0, 4, 5, 2**64 - 1))
    assert layout.parse_record(data, 5) == {0: _digest(0), 4: _digest(4)}
    assert layout.parse_record(data, 0) == {}


def test_record_later_entry_wins() -> None:
    data = (
        layout.record_entry(3, _digest(100))
        + layout.record_entry(1, _digest(1))
        + layout.record_entry(3, _digest(3))
    )
    assert layout.parse_record(data, 5) == {1: _digest(1), 3: _digest(3)}


def test_record_later_damaged_entry_does_not_erase_earlier() -> None:
    good = layout.record_entry(3, _digest(3))
    bad = bytearray(layout.record_entry(3, _digest(4)))
    bad[20] ^= 1
    assert layout.parse_record(good + bytes(bad), 5) == {3: _digest(3)}
