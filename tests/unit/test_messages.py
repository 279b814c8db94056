"""Pure tests of the control channel's messages in fastxfer.protocol.messages (no sockets, no processes)."""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastxfer.errors import (
    BusyError,
    FxError,
    ProtocolError,
    RefusedError,
    TrustError,
    VerifyError,
)
from fastxfer.protocol import messages, wire
from fastxfer.protocol.messages import MAX_CONTROL, MsgDecoder

MESSAGES = [
    {"t": "hello", "v": 1},
    {"t": "put", "files": [{"path": "a/b.txt", "size": 12}, {"path": "c", "size": 0}]},
    {"t": "x"},
    {"t": "unicode", "name": "caf\u00e9 \u2603 \U0001f600", "raw": "bad\udcff"},
    {"t": "big", "blob": "z" * 70000},
    {"t": "nested", "o": {"a": [1, 2, {"b": None}], "f": 1.5, "neg": -3}},
]


def _drain(dec: MsgDecoder) -> list[dict]:
    out = []
    while (msg := dec.next()) is not None:
        out.append(msg)
    return out


def _random_splits(data: bytes, rng: random.Random) -> list[bytes]:
    pieces = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 1, 2, 3, 4, 5, 7, 64, 1000, 40000])
        pieces.append(data[pos : pos + n])
        pos += n
    return pieces


# ---------------------------------------------------------------- control


def test_encode_msg_layout() -> None:
    encoded = messages.encode_msg({"t": "a", "n": 1})
    (size,) = struct.unpack(">I", encoded[:4])
    assert size == len(encoded) - 4
    assert json.loads(encoded[4:]) == {"t": "a", "n": 1}


def test_encode_msg_too_large() -> None:
    with pytest.raises(ValueError):
        messages.encode_msg({"t": "a", "blob": "x" * messages.MAX_REPLY})


def test_decoder_whole_stream_at_once() -> None:
    dec = MsgDecoder()
    dec.feed(b"".join(messages.encode_msg(m) for m in MESSAGES))
    assert _drain(dec) == MESSAGES
    assert dec.next() is None
    assert dec.wanted() == 4


def test_decoder_one_byte_at_a_time() -> None:
    encoded = b"".join(messages.encode_msg(m) for m in MESSAGES[:4] + MESSAGES[5:])
    dec = MsgDecoder()
    got = []
    for i in range(len(encoded)):
        dec.feed(encoded[i : i + 1])
        got.extend(_drain(dec))
        assert dec.wanted() >= 1
    assert got == MESSAGES[:4] + MESSAGES[5:]


@pytest.mark.parametrize("seed", range(25))
def test_decoder_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    msgs = [rng.choice(MESSAGES) for _ in range(rng.randint(1, 12))]
    encoded = b"".join(messages.encode_msg(m) for m in msgs)
    dec = MsgDecoder()
    got = []
    for piece in _random_splits(encoded, rng):
        dec.feed(piece)
        got.extend(_drain(dec))
        assert dec.wanted() >= 1
    assert got == msgs


def test_decoder_wanted_counts_missing_bytes() -> None:
    encoded = messages.encode_msg({"t": "abc"})
    dec = MsgDecoder()
    assert dec.wanted() == 4
    dec.feed(encoded[:2])
    assert dec.wanted() == 2
    dec.feed(encoded[2:4])
    assert dec.wanted() == len(encoded) - 4
    dec.feed(encoded[4:-1])
    assert dec.wanted() == 1
    assert dec.next() is None
    dec.feed(encoded[-1:])
    assert dec.wanted() == 1  # whole message buffered: still at least 1
    assert dec.next() == {"t": "abc"}
    assert dec.wanted() == 4


def test_decoder_wanted_capped_by_limit() -> None:
    dec = MsgDecoder(limit=100)
    dec.feed(struct.pack(">I", 10**9))
    assert 1 <= dec.wanted() <= 100


def test_decoder_over_limit_prefix() -> None:
    dec = MsgDecoder()
    dec.feed(struct.pack(">I", MAX_CONTROL + 1))
    with pytest.raises(ProtocolError):
        dec.next()


def test_decoder_custom_limit() -> None:
    encoded = messages.encode_msg({"t": "a", "pad": "x" * 50})
    dec = MsgDecoder(limit=len(encoded) - 5)
    dec.feed(encoded)
    with pytest.raises(ProtocolError):
        dec.next()
    ok = MsgDecoder(limit=len(encoded) - 4)
    ok.feed(encoded)
    assert ok.next() == {"t": "a", "pad": "x" * 50}


def test_decoder_limit_checked_before_body_arrives() -> None:
    # The announced size alone is enough to refuse: no need to buffer 4 GiB.
    dec = MsgDecoder()
    dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        dec.next()


def _framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe\x00",
        b"\x80abc",
        b"[1,2,3]",
        b'"t"',
        b"42",
        b"null",
        b"{}",
        b'{"t": 1}',
        b'{"t": null}',
        b'{"t": ["a"]}',
        b'{"type": "hello"}',
        b"[" * 100000 + b"]" * 100000,
        b"1" * 5000,
    ],
)
def test_decoder_bad_bodies(body: bytes) -> None:
    dec = MsgDecoder()
    dec.feed(_framed(body))
    with pytest.raises(ProtocolError):
        dec.next()


def test_parse_msg_accepts_minimal() -> None:
    assert messages.parse_msg(b'{"t":""}') == {"t": ""}


# ---------------------------------------------------------------- accessors


def test_get_str() -> None:
    msg = {"s": "abc", "n": 1, "b": b"abc", "l": ["a"], "none": None}
    assert messages.get_str(msg, "s") == "abc"
    assert messages.get_str(msg, "s", 3) == "abc"
    for key in ("n", "b", "l", "none", "missing"):
        with pytest.raises(ProtocolError):
            messages.get_str(msg, key)
    with pytest.raises(ProtocolError):
        messages.get_str(msg, "s", 2)
    with pytest.raises(ProtocolError):
        messages.get_str({"s": "x" * (wire.MAX_PATH_BYTES + 1)}, "s")


def test_get_int() -> None:
    msg = {"i": 5, "z": 0, "neg": -1, "t": True, "f": False, "fl": 5.0, "s": "5", "big": 2**63}
    assert messages.get_int(msg, "i") == 5
    assert messages.get_int(msg, "z") == 0
    assert messages.get_int(msg, "i", 5, 5) == 5
    assert messages.get_int(msg, "neg", -1) == -1
    for key in ("neg", "t", "f", "fl", "s", "big", "missing"):
        with pytest.raises(ProtocolError):
            messages.get_int(msg, key)
    with pytest.raises(ProtocolError):
        messages.get_int(msg, "i", 6)
    with pytest.raises(ProtocolError):
        messages.get_int(msg, "i", 0, 4)
    # bool is an int subclass: True must not pass as 1 even where 1 is allowed
    with pytest.raises(ProtocolError):
        messages.get_int(msg, "t", 0, 1)


def test_get_hex() -> None:
    raw = bytes(range(16))
    assert messages.get_hex({"h": raw.hex()}, "h", 16) == raw
    assert messages.get_hex({"h": raw.hex().upper()}, "h", 16) == raw
    bad = [
        raw.hex()[:-2],  # too short
        raw.hex() + "00",  # too long
        raw.hex()[:-1] + "g",  # not hex
        raw.hex()[:-1],  # odd length
        " " + raw.hex()[:-1],
        "",
        16,
        None,
        list(raw),
    ]
    for value in bad:
        with pytest.raises(ProtocolError):
            messages.get_hex({"h": value}, "h", 16)
    with pytest.raises(ProtocolError):
        messages.get_hex({}, "h", 16)


def test_get_list() -> None:
    assert messages.get_list({"l": [1, 2]}, "l") == [1, 2]
    assert messages.get_list({"l": []}, "l") == []
    assert messages.get_list({"l": [0] * 3}, "l", 3) == [0, 0, 0]
    for value in ({"a": 1}, "abc", (1, 2), None, 3):
        with pytest.raises(ProtocolError):
            messages.get_list({"l": value}, "l")
    with pytest.raises(ProtocolError):
        messages.get_list({"l": [0] * 4}, "l", 3)
    with pytest.raises(ProtocolError):
        messages.get_list({"l": [0] * (messages.MAX_BATCH + 1)}, "l")
    with pytest.raises(ProtocolError):
        messages.get_list({}, "l")


def test_get_obj() -> None:
    assert messages.get_obj({"a": 1}) == {"a": 1}
    for value in ([], "x", None, 1):
        with pytest.raises(ProtocolError):
            messages.get_obj(value)


def test_expect_passes_the_right_kind() -> None:
    msg = {"t": "welcome", "name": "laptop"}
    assert messages.expect(msg, "welcome") is msg


def test_expect_wrong_kind() -> None:
    with pytest.raises(ProtocolError) as info:
        messages.expect({"t": "bye"}, "welcome")
    assert type(info.value) is ProtocolError


@pytest.mark.parametrize(
    "code, cls",
    [
        ("trust", TrustError),
        ("refused", RefusedError),
        ("verify", VerifyError),
        ("protocol", ProtocolError),
        ("busy", BusyError),
        ("no-such-code", FxError),
    ],
)
def test_expect_maps_error_codes(code: str, cls: type[FxError]) -> None:
    with pytest.raises(FxError) as info:
        messages.expect({"t": "error", "code": code, "message": "told you so"}, "welcome")
    assert type(info.value) is cls
    assert info.value.message == "told you so"


def test_expect_error_message_is_bounded() -> None:
    with pytest.raises(TrustError) as info:
        messages.expect({"t": "error", "code": "trust", "message": "m" * 5000}, "welcome")
    assert len(info.value.message) == 1000


# ---------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

@FUZZ
@given(data=st.binary(max_size=2000), chunks=st.lists(st.integers(1, 64), max_size=50))
def test_fuzz_decoder_random_bytes(data: bytes, chunks: list[int]) -> None:
    dec = MsgDecoder()
    pos = 0
    sizes = chunks or [len(data) or 1]
    i = 0
    try:
        while pos < len(data):
            n = sizes[i % len(sizes)]
            i += 1
            dec.feed(data[pos : pos + n])
            pos += n
            assert dec.wanted() >= 1
            for _ in range(len(data) + 1):  # bounded: every message eats >= 4 bytes
                if dec.next() is None:
                    break
            else:
                raise AssertionError("decoder did not run dry")
    except ProtocolError:
        pass


@FUZZ
@given(body=st.binary(max_size=500))
def test_fuzz_decoder_random_body(body: bytes) -> None:
    dec = MsgDecoder()
    dec.feed(_framed(body))
    try:
        msg = dec.next()
    except ProtocolError:
        return
    assert isinstance(msg, dict)
    assert isinstance(msg["t"], str)
    assert dec.next() is None


json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12)
json_values = json_scalars | st.lists(json_scalars, max_size=3)
json_messages = st.builds(
    lambda t, rest: {**rest, "t": t},
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)


@FUZZ
@given(msgs=st.lists(json_messages, min_size=1, max_size=4), seed=st.integers(0, 2**32))
def test_fuzz_roundtrip_random_splits(msgs: list[dict], seed: int) -> None:
    encoded = b"".join(messages.encode_msg(m) for m in msgs)
    dec = MsgDecoder()
    got = []
    for piece in _random_splits(encoded, random.Random(seed)):
        dec.feed(piece)
        got.extend(_drain(dec))
    assert got == msgs


@FUZZ
@given(
    msgs=st.lists(json_messages, min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, 10**6), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_mutated_sequence(msgs: list[dict], edits: list[tuple[str, int, int]]) -> None:
    encoded = bytearray(b"".join(messages.encode_msg(m) for m in msgs))
    for op, where, value in edits:
        if not encoded:
            break
        pos = where % len(encoded)
        if op == "flip":
            encoded[pos] ^= 1 << (value % 8)
        elif op == "insert":
            encoded.insert(pos, value)
        elif op == "delete":
            del encoded[pos]
        else:
            encoded[pos] = value
    dec = MsgDecoder()
    dec.feed(bytes(encoded))
    try:
        for _ in range(len(encoded) + 1):
            msg = dec.next()
            if msg is None:
                break
            assert isinstance(msg, dict) and isinstance(msg["t"], str)
        else:
            raise AssertionError("decoder did not run dry")
    except ProtocolError:
        pass
    assert dec.wanted() >= 1


def test_page_answers_takes_a_page_and_refuses_a_broken_cursor() -> None:
    assert messages.page_answers({"files": [1, 2, 3]}, 3) == [1, 2, 3]  # whole, as a server before pages
    assert messages.page_answers({"files": [1], "next": 1}, 3) == [1]
    for reply in ({"files": [], "next": 0}, {"files": [1, 2, 3], "next": 3}, {"files": [1], "next": 2},
                  {"files": [1, 2]}, {"files": [1], "next": "1"}, {"files": [1], "next": True}):
        with pytest.raises(ProtocolError):
            messages.page_answers(reply, 3)
    with pytest.raises(ProtocolError):
        messages.page_answers({"files": [1], "next": 1}, 1)  # a cursor past the last item
