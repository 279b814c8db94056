"""Pure tests of the stream's byte layout in fastxfer.protocol.wire (no sockets, no processes)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastxfer.protocol import frames, wire
from fastxfer.errors import ProtocolError
from fastxfer.protocol.wire import (
    ACK,
    DATA,
    DIGEST,
    ERROR,
    MAX_ACKS,
    MAX_CHUNK,
    MAX_FRAME,
    MAX_TICKET,
    RANDOM,
    STREAM_MAGIC,
    SYNC,
    TAG,
)

# ---------------------------------------------------------------- stream opening


def test_open_roundtrip() -> None:
    ticket = bytes(range(200))
    rnd = bytes(range(100, 132))
    encoded = wire.encode_open(ticket, rnd)
    assert encoded[:4] == STREAM_MAGIC
    assert len(encoded) == wire.OPEN_PREFIX + len(ticket) + RANDOM
    size = wire.parse_open_prefix(encoded[: wire.OPEN_PREFIX])
    assert size == len(ticket)
    assert encoded[wire.OPEN_PREFIX : wire.OPEN_PREFIX + size] == ticket
    assert encoded[wire.OPEN_PREFIX + size :] == rnd


def test_open_max_ticket() -> None:
    encoded = wire.encode_open(b"t" * MAX_TICKET, bytes(RANDOM))
    assert wire.parse_open_prefix(encoded[:6]) == MAX_TICKET
    with pytest.raises(ValueError):
        wire.encode_open(b"t" * (MAX_TICKET + 1), bytes(RANDOM))
    with pytest.raises(ValueError):
        wire.encode_open(b"t", bytes(RANDOM - 1))


@pytest.mark.parametrize(
    "prefix",
    [
        b"FXS0" + struct.pack(">H", 10),
        b"fxs1" + struct.pack(">H", 10),
        b"GET " + b"/ ",
        b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello
        STREAM_MAGIC + struct.pack(">H", 0),
        STREAM_MAGIC + struct.pack(">H", MAX_TICKET + 1),
        STREAM_MAGIC + struct.pack(">H", 0xFFFF),
    ],
)
def test_open_prefix_refused(prefix: bytes) -> None:
    with pytest.raises(ProtocolError):
        wire.parse_open_prefix(prefix)


def test_open_reply() -> None:
    rnd = bytes(range(32))
    encoded = wire.encode_open_reply(rnd)
    assert encoded == STREAM_MAGIC + rnd
    assert wire.parse_open_reply(encoded) == rnd
    for bad in (encoded[:-1], encoded + b"\x00", b"FXS2" + rnd, b""):
        with pytest.raises(ProtocolError):
            wire.parse_open_reply(bad)


# ---------------------------------------------------------------- frames


def test_header_sizes() -> None:
    assert wire.header_size(DATA) == 16 + 8 + 4
    assert wire.header_size(ACK) == 4
    assert wire.header_size(SYNC) == 0
    assert wire.header_size(ERROR) == 0
    assert wire.header_size(wire.BUNDLE) == 12 and wire.header_size(wire.BUNDLE_ACK) == 8
    assert wire.header_size(wire.REQS) == wire.header_size(wire.DATAS) == 8
    for kind in (0, 12, 255):
        with pytest.raises(ProtocolError):
            wire.header_size(kind)


@pytest.mark.parametrize("kind", [0, 12, 13, 127, 255])
def test_parse_prefix_unknown_kind(kind: int) -> None:
    with pytest.raises(ProtocolError):
        wire.parse_prefix(struct.pack(">IB", 100, kind))


@pytest.mark.parametrize("kind", [DATA, ACK, SYNC, ERROR, wire.BUNDLE, wire.BUNDLE_ACK, wire.REQS, wire.DATAS])
def test_parse_prefix_bounds(kind: int) -> None:
    smallest = 1 + wire.header_size(kind) + TAG
    assert wire.parse_prefix(struct.pack(">IB", smallest, kind)) == (kind, smallest - 1)
    assert wire.parse_prefix(struct.pack(">IB", MAX_FRAME, kind)) == (kind, MAX_FRAME - 1)
    for size in (0, 1, smallest - 1, MAX_FRAME + 1, 0xFFFFFFFF):
        with pytest.raises(ProtocolError):
            wire.parse_prefix(struct.pack(">IB", size, kind))


def test_parse_prefix_custom_limit() -> None:
    assert wire.parse_prefix(struct.pack(">IB", 1000, ACK), limit=1000) == (ACK, 999)
    with pytest.raises(ProtocolError):
        wire.parse_prefix(struct.pack(">IB", 1001, ACK), limit=1000)


def test_max_frame_fits_a_full_chunk() -> None:
    prefix = wire.frame_prefix(DATA, wire.data_header(bytes(16), 0, MAX_CHUNK), MAX_CHUNK + DIGEST)
    kind, rest = wire.parse_prefix(prefix[: wire.FRAME_PREFIX])
    assert kind == DATA
    assert rest == MAX_FRAME - 1


def test_data_frame_roundtrip() -> None:
    fid = bytes(range(16))
    offset = 2**40 + 7
    length = 12345
    header = wire.data_header(fid, offset, length)
    prefix = wire.frame_prefix(DATA, header, length + DIGEST)
    sealed = b"s" * (length + DIGEST + TAG)
    encoded = prefix + sealed
    kind, rest_len = wire.parse_prefix(encoded[: wire.FRAME_PREFIX])
    assert kind == DATA
    rest = encoded[wire.FRAME_PREFIX :]
    assert len(rest) == rest_len
    head = wire.split_rest(kind, rest)
    assert head.header == header
    assert head.aad == bytes([DATA]) + header
    assert head.sealed_len == len(sealed)
    assert wire.parse_data_header(head.header, head.sealed_len) == (fid, offset, length)


def test_parse_data_header_length_mismatch() -> None:
    header = wire.data_header(bytes(16), 0, 100)
    assert wire.parse_data_header(header, 100 + DIGEST + TAG)[2] == 100
    for sealed_len in (0, 100, 100 + DIGEST + TAG - 1, 100 + DIGEST + TAG + 1):
        with pytest.raises(ProtocolError):
            wire.parse_data_header(header, sealed_len)


def test_parse_data_header_over_max_chunk() -> None:
    length = MAX_CHUNK + 1
    header = wire.data_header(bytes(16), 0, length)
    with pytest.raises(ProtocolError):
        wire.parse_data_header(header, length + DIGEST + TAG)
    ok = wire.data_header(bytes(16), 0, MAX_CHUNK)
    assert wire.parse_data_header(ok, MAX_CHUNK + DIGEST + TAG)[2] == MAX_CHUNK


def test_acks_roundtrip() -> None:
    entries = [(bytes([i]) * 16, i * 1_000_003) for i in range(50)] + [(b"\xff" * 16, 2**64 - 1)]
    header = wire.ack_header(len(entries))
    body = wire.encode_acks(entries)
    assert len(body) == len(entries) * 24
    assert wire.parse_acks(header, body) == entries
    assert wire.parse_acks(wire.ack_header(0), b"") == []


def test_acks_malformed() -> None:
    entries = [(bytes(16), 0), (b"\x01" * 16, 1)]
    body = wire.encode_acks(entries)
    for count in (0, 1, 3):
        with pytest.raises(ProtocolError):
            wire.parse_acks(wire.ack_header(count), body)
    with pytest.raises(ProtocolError):
        wire.parse_acks(wire.ack_header(2), body[:-1])
    with pytest.raises(ProtocolError):
        wire.parse_acks(wire.ack_header(2), body + b"\x00")
    with pytest.raises(ProtocolError):
        wire.parse_acks(wire.ack_header(MAX_ACKS + 1), b"\x00" * 24 * (MAX_ACKS + 1))
    big = [(bytes(16), i) for i in range(MAX_ACKS)]
    assert len(wire.parse_acks(wire.ack_header(MAX_ACKS), wire.encode_acks(big))) == MAX_ACKS


def test_error_frame() -> None:
    body = wire.encode_error(7, "disk full \u2603")
    assert wire.parse_error(body) == (7, "disk full \u2603")
    assert wire.parse_error(b"\x02") == (2, "")
    assert wire.parse_error(b"\x03\xff\xfeabc") == (3, "\ufffd\ufffdabc")
    with pytest.raises(ProtocolError):
        wire.parse_error(b"")


def test_refusals_naming_a_name_that_is_not_utf8_still_encode() -> None:
    """A message holding a surrogate (a client's non-UTF-8 name) travels escaped, in every frame that carries text."""
    assert wire.parse_error(wire.encode_error(5, "a\udcff: gone")) == (5, "a\\udcff: gone")
    header, body = wire.encode_bundle_ack(1, [(1, 5, "\ud800 refused")])
    assert wire.parse_bundle_ack(header, body) == (1, [(1, 5, "\\ud800 refused")])
    assert wire.message_bytes("\u2603" * 10, 4) == "\u2603".encode() + b"\xe2"


def test_error_frame_message_bounded() -> None:
    code, text = wire.parse_error(wire.encode_error(1, "\u2603" * 1000))
    assert code == 1
    assert len(text.encode()) <= 1000 + 3  # a cut character becomes one U+FFFD
    assert text.startswith("\u2603" * 333)


# ---------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

@FUZZ
@given(prefix=st.binary(min_size=5, max_size=5))
def test_fuzz_parse_prefix(prefix: bytes) -> None:
    try:
        kind, rest = wire.parse_prefix(prefix)
    except ProtocolError:
        return
    assert kind in wire.FRAME_KINDS
    assert wire.header_size(kind) + TAG <= rest <= MAX_FRAME - 1


def test_parse_prefix_takes_exactly_the_known_kinds() -> None:
    # Every byte value, not a random one: a hand-kept list of kinds fell behind
    # when ZEROS was added, and a random prefix found it about 1 run in 25.
    accepted = set()
    for kind in range(256):
        try:
            wire.parse_prefix(struct.pack(">IB", 1 << 16, kind))
        except ProtocolError:
            continue
        accepted.add(kind)
    assert accepted == {wire.DATA, wire.ACK, wire.SYNC, wire.ERROR, wire.BUNDLE, wire.BUNDLE_ACK, wire.REQ,
                        wire.NAK, wire.REQS, wire.DATAS, wire.ZEROS} == wire.FRAME_KINDS


# ------------------------------------------------------------------ bundles


def _bundle(files: list[tuple[bytes, bytes, int, int]]) -> bytes:
    body = bytearray()
    for path, data, mtime, mode in files:
        head = bytearray(wire.BUNDLE_ENTRY_HEAD + len(path))
        wire.pack_bundle_entry_head(head, 0, path, len(data), mtime, mode)
        body += head + data + hashlib.sha256(data).digest()
    return bytes(body)


def test_bundle_round_trip() -> None:
    files = [(b"a/b.txt", b"hello", 123, 0o644), (b"empty", b"", -5, 0o600), (b"\xff\xfe", b"x" * 1000, 0, 0o4755)]
    header = wire.bundle_header(7, len(files), 12)
    number, entries, snap = wire.parse_bundle(header, memoryview(_bundle(files)))
    assert (number, snap) == (7, 12)
    assert wire.parse_bundle(wire.bundle_header(7, len(files)), memoryview(_bundle(files)))[2] == 0
    assert [(e.path, bytes(e.data), e.mtime_ns, e.mode) for e in entries] == files
    assert all(e.digest == hashlib.sha256(bytes(e.data)).digest() for e in entries)


@pytest.mark.parametrize("cut", [1, 10, 20, 40])
def test_bundle_truncated_or_padded_is_refused(cut: int) -> None:
    body = _bundle([(b"f", b"0123456789", 1, 0o644), (b"g", b"abc", 1, 0o644)])
    header = wire.bundle_header(1, 2)
    with pytest.raises(ProtocolError):
        wire.parse_bundle(header, memoryview(body[:-cut]))
    with pytest.raises(ProtocolError):
        wire.parse_bundle(header, memoryview(body + b"\x00" * cut))


def test_bundle_limits() -> None:
    with pytest.raises(ProtocolError):
        wire.parse_bundle(wire.bundle_header(1, wire.MAX_BUNDLE_FILES + 1), memoryview(b""))
    with pytest.raises(ProtocolError):  # an empty path
        wire.parse_bundle(wire.bundle_header(1, 1), memoryview(_bundle([(b"", b"x", 0, 0)])))


def test_bundle_ack_round_trip() -> None:
    statuses = [(0, 0, ""), (1, 0, ""), (2, 6, "refused: \u00e9")]
    header, body = wire.encode_bundle_ack(9, statuses)
    assert wire.parse_bundle_ack(header, body) == (9, statuses)
    with pytest.raises(ProtocolError):
        wire.parse_bundle_ack(header, body[:-1])
    bad_header, bad_body = wire.encode_bundle_ack(9, [(3, 0, "")])
    with pytest.raises(ProtocolError):
        wire.parse_bundle_ack(bad_header, bad_body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_bundle_parser_fuzz(body: bytes, count: int) -> None:
    try:
        _, entries, _snap = wire.parse_bundle(wire.bundle_header(0, count), memoryview(body))
    except ProtocolError:
        return
    assert len(entries) == count


# ------------------------------------------------------ many files restored


def test_reqs_round_trip() -> None:
    asks = [wire.Ask(b"t" * 16, 5, -1, b"a/b"), wire.Ask(b"u" * 16, 0, 2**62, b"\xff" * 300)]
    header, body = wire.encode_reqs(3, asks)
    assert wire.parse_reqs(header, body) == (3, asks)
    for bad in (body[:-1], body + b"x"):
        with pytest.raises(ProtocolError):
            wire.parse_reqs(header, bad)


def test_reqs_limits() -> None:
    with pytest.raises(ProtocolError):  # nothing asked
        wire.parse_reqs(*wire.encode_reqs(0, []))
    with pytest.raises(ProtocolError):  # an empty path
        wire.parse_reqs(*wire.encode_reqs(0, [wire.Ask(b"t" * 16, 1, 0, b"")]))
    # The answer must fit in one frame: at most MAX_CHUNK of answer, counted per file.
    fits = wire.MAX_CHUNK - wire.answer_cost(0)
    size = fits - wire.answer_cost(0) + wire.DATAS_TEXT - wire.DIGEST
    ok = [wire.Ask(b"t" * 16, 0, 0, b"a"), wire.Ask(b"u" * 16, size, 0, b"b")]
    assert len(wire.parse_reqs(*wire.encode_reqs(0, ok))[1]) == 2
    too_much = [wire.Ask(b"t" * 16, 0, 0, b"a"), wire.Ask(b"u" * 16, size + 1, 0, b"b")]
    with pytest.raises(ProtocolError):
        wire.parse_reqs(*wire.encode_reqs(0, too_much))
    assert 1 + wire.header_size(wire.DATAS) + wire.MAX_CHUNK + TAG <= MAX_FRAME


def _datas(entries: list[tuple[bytes, int, int, bytes]]) -> bytes:
    body = bytearray()
    for tag, status, code, payload in entries:
        head = bytearray(wire.DATAS_ENTRY_HEAD)
        wire.pack_datas_entry_head(head, 0, tag, status, code, len(payload))
        body += head + payload
    return bytes(body)


def test_datas_round_trip() -> None:
    data = b"hello"
    entries = [(b"t" * 16, 0, 0, data + hashlib.sha256(data).digest()), (b"u" * 16, 1, 6, "refused: é".encode())]
    number, got = wire.parse_datas(wire.datas_header(4, 2), memoryview(_datas(entries)))
    assert number == 4 and [(t, s, c, bytes(p)) for t, s, c, p in got] == entries


@pytest.mark.parametrize("entries", [
    [(b"t" * 16, 2, 0, b"x" * 40)],  # unknown status
    [(b"t" * 16, 0, 0, b"x" * 31)],  # data shorter than its digest
])
def test_datas_malformed(entries) -> None:
    with pytest.raises(ProtocolError):
        wire.parse_datas(wire.datas_header(0, len(entries)), memoryview(_datas(entries)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_many_files_parsers_fuzz(body: bytes, count: int) -> None:
    for parse, header in ((wire.parse_reqs, wire.encode_reqs(0, [])[0][:4] + count.to_bytes(4, "big")),
                          (wire.parse_datas, wire.datas_header(0, count))):
        try:
            _, got = parse(header, memoryview(body))
        except ProtocolError:
            continue
        assert len(got) == count


# --------------------------------------------------------- frames as events


def test_parse_frame_gives_one_event_per_kind() -> None:
    data = b"some bytes"
    digest = hashlib.sha256(data).digest()
    fid = bytes(range(16))
    event = frames.parse_frame(DATA, wire.data_header(fid, 7, len(data)), data + digest)
    assert event == frames.Data(fid, 7, data, digest)
    assert frames.parse_frame(ACK, wire.ack_header(1), wire.encode_acks([(fid, 3)])) == frames.Ack([(fid, 3)])
    assert frames.parse_frame(SYNC, b"", b"") == frames.Sync()
    assert frames.parse_frame(ERROR, b"", wire.encode_error(8, "no")) == frames.Error(8, "no")
    assert frames.parse_frame(wire.NAK, fid, wire.encode_error(6, "gone")) == frames.Nak(fid, 6, "gone")
    header, body = wire.encode_req(fid, 0, 10, 20, -1, b"a/b")
    assert frames.parse_frame(wire.REQ, header, body) == frames.Req(fid, 0, 10, 20, -1, b"a/b")
    header, body = wire.encode_bundle_ack(4, [(0, 0, ""), (2, 6, "full")])
    assert frames.parse_frame(wire.BUNDLE_ACK, header, body) == frames.BundleAck(4, [(0, 0, ""), (2, 6, "full")])
    header, body = wire.encode_reqs(5, [wire.Ask(fid, 1, 2, b"x")])
    assert frames.parse_frame(wire.REQS, header, body) == frames.Reqs(5, [wire.Ask(fid, 1, 2, b"x")])


@pytest.mark.parametrize("kind, header, body", [
    (DATA, bytes(28), b"short"),
    (ACK, struct.pack(">I", 2), bytes(24)),
    (SYNC, b"", b"x"),
    (ERROR, b"", b""),
    (wire.NAK, bytes(16), b""),
    (wire.BUNDLE, struct.pack(">III", 1, 1, 0), b"\x00"),
    (wire.REQS, struct.pack(">II", 1, 0), b""),
    (0, b"", b""),
    (99, b"", b""),
])
def test_parse_frame_refuses_malformed(kind: int, header: bytes, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        frames.parse_frame(kind, header, body)
