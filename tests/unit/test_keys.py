"""Pure tests of the key schedule and nonce discipline in fastxfer.keys."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastxfer.protocol import keys
from fastxfer.errors import ProtocolError
from fastxfer.protocol.keys import C2S, S2C, Opener, Sealer, ServerKeys

KEY = bytes(range(32))
AAD = b"\x01" + bytes(28)
TICKET_ERROR = "stream ticket is not valid for this server run"


def _hkdf_reference(ikm: bytes, info: bytes, length: int, salt: bytes = b"") -> bytes:
    """RFC 5869 with the standard library only: an independent check of keys.hkdf."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


# ---------------------------------------------------------------- sealer / opener


def test_seal_open_roundtrip() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    plains = [b"", b"x", os.urandom(1000), os.urandom(70000)]
    for i, plain in enumerate(plains):
        aad = bytes([i]) * 5
        sealed = sealer.seal(aad, plain)
        assert len(sealed) == len(plain) + 16
        assert sealed[: len(plain)] != plain or not plain
        assert opener.open(aad, sealed) == plain


def test_seal_into_open_into() -> None:
    sealer, opener = Sealer(KEY, S2C), Opener(KEY, S2C)
    plain = os.urandom(4096)
    out = bytearray(len(plain) + 16)
    sealer.seal_into(AAD, plain, out)
    back = bytearray(len(plain))
    opener.open_into(AAD, memoryview(out), back)
    assert bytes(back) == plain


def test_nonce_is_label_and_counter() -> None:
    # The nonce is never sent: pin its construction against AESGCM directly.
    sealer = Sealer(KEY, C2S)
    first = sealer.seal(AAD, b"first")
    second = sealer.seal(AAD, b"second")
    aead = AESGCM(KEY)
    assert aead.decrypt(C2S + (0).to_bytes(8, "big"), first, AAD) == b"first"
    assert aead.decrypt(C2S + (1).to_bytes(8, "big"), second, AAD) == b"second"


def test_same_plaintext_never_same_ciphertext() -> None:
    sealer = Sealer(KEY, C2S)
    assert sealer.seal(AAD, b"same") != sealer.seal(AAD, b"same")


def test_out_of_order_fails() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    sealer.seal(AAD, b"a")  # the first frame, never delivered
    b = sealer.seal(AAD, b"b")
    with pytest.raises(ProtocolError):
        opener.open(AAD, b)


def test_replay_fails() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    a = sealer.seal(AAD, b"a")
    assert opener.open(AAD, a) == b"a"
    with pytest.raises(ProtocolError):
        opener.open(AAD, a)


def test_dropped_frame_breaks_the_rest() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    sealed = [sealer.seal(AAD, bytes([i])) for i in range(3)]
    assert opener.open(AAD, sealed[0]) == b"\x00"
    with pytest.raises(ProtocolError):
        opener.open(AAD, sealed[2])


def test_different_aad_fails() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    header = b"\x01" + bytes(range(16)) + (4096).to_bytes(8, "big") + (100).to_bytes(4, "big")
    moved = b"\x01" + bytes(range(16)) + (8192).to_bytes(8, "big") + (100).to_bytes(4, "big")
    sealed = sealer.seal(header, b"chunk")
    with pytest.raises(ProtocolError):
        opener.open(moved, sealed)


@pytest.mark.parametrize("bit", [0, 7, 8 * 5 + 3, 8 * 20 + 1, 8 * 21 - 1])
def test_flipped_bit_fails(bit: int) -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    sealed = bytearray(sealer.seal(AAD, b"abcde"))  # 5 bytes + 16 tag
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProtocolError):
        opener.open(AAD, bytes(sealed))


def test_open_into_rejects_tampering() -> None:
    sealer, opener = Sealer(KEY, C2S), Opener(KEY, C2S)
    out = bytearray(sealer.seal(AAD, b"x" * 64))
    out[0] ^= 0x80
    with pytest.raises(ProtocolError):
        opener.open_into(AAD, out, bytearray(64))


def test_wrong_key_or_label_fails() -> None:
    sealed = Sealer(KEY, C2S).seal(AAD, b"x")
    with pytest.raises(ProtocolError):
        Opener(bytes(32), C2S).open(AAD, sealed)
    with pytest.raises(ProtocolError):
        Opener(KEY, S2C).open(AAD, sealed)


def test_nonce_exhaustion() -> None:
    sealer = Sealer(KEY, C2S)
    sealer._counter = 2**64 - 2  # the private seam: 2**64 seals would take forever
    sealer.seal(AAD, b"last")
    with pytest.raises(ProtocolError):
        sealer.seal(AAD, b"one too many")


# ---------------------------------------------------------------- pairs and stream keys


def test_pairs_interoperate() -> None:
    c2s, s2c = keys.stream_keys(os.urandom(32), os.urandom(32), os.urandom(32))
    c_seal, c_open = keys.pair(c2s, s2c, "client")
    s_seal, s_open = keys.pair(c2s, s2c, "server")
    for i in range(3):
        assert s_open.open(AAD, c_seal.seal(AAD, b"up %d" % i)) == b"up %d" % i
        assert c_open.open(AAD, s_seal.seal(AAD, b"down %d" % i)) == b"down %d" % i


def test_directions_differ() -> None:
    c2s, s2c = keys.stream_keys(os.urandom(32), os.urandom(32), os.urandom(32))
    assert c2s != s2c
    assert C2S != S2C
    c_seal, c_open = keys.pair(c2s, s2c, "client")
    s_seal, s_open = keys.pair(c2s, s2c, "server")
    assert c_seal._label == C2S and s_open._label == C2S
    assert s_seal._label == S2C and c_open._label == S2C
    # A frame reflected back at its sender does not open.
    with pytest.raises(ProtocolError):
        c_open.open(AAD, c_seal.seal(AAD, b"echo"))
    with pytest.raises(ProtocolError):
        s_open.open(AAD, s_seal.seal(AAD, b"echo"))


def test_stream_keys_depend_on_every_input() -> None:
    secret, cr, sr = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    base = keys.stream_keys(secret, cr, sr)
    assert keys.stream_keys(secret, cr, sr) == base
    others = [
        keys.stream_keys(b"\x09" * 32, cr, sr),
        keys.stream_keys(secret, b"\x09" * 32, sr),
        keys.stream_keys(secret, cr, b"\x09" * 32),
        keys.stream_keys(secret, sr, cr),  # swapped randoms
    ]
    for other in others:
        assert other[0] != base[0] and other[1] != base[1]
    assert all(len(k) == 32 for k in base)


def test_stream_keys_known_answer() -> None:
    c2s, s2c = keys.stream_keys(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    assert c2s.hex() == "d009c4d5c41a84190d78275ea0adacbe16b1aed6addededa87c694ed8630e920"
    assert s2c.hex() == "621a60afd9689bc6f9494d059956991148b95a8d8eb821a5141e66df227a4433"
    # ... and that vector is plain RFC 5869 HKDF-SHA256, as keys.py documents.
    expected = _hkdf_reference(b"\x01" * 32, b"fastxfer stream v1", 64, salt=b"\x02" * 32 + b"\x03" * 32)
    assert c2s + s2c == expected


# ---------------------------------------------------------------- tickets

SECRET = b"\x07" * 32
FP = b"\xaa" * 32
NOW = 1_700_000_000


def test_ticket_roundtrip() -> None:
    sk = ServerKeys(os.urandom(32))
    session, ticket = sk.new_session("laptop \u00e9", FP, NOW + 100)
    assert len(session.session_id) == keys.SESSION_ID
    assert len(session.secret) == 32
    opened = sk.open_ticket(ticket, NOW)
    assert opened == session
    assert opened.client_name == "laptop \u00e9"
    assert opened.client_fp == FP
    assert opened.session_id == session.session_id
    assert opened.secret == session.secret
    assert opened.expires == NOW + 100


def test_any_worker_opens_the_ticket() -> None:
    secret = os.urandom(32)
    session, ticket = ServerKeys(secret).new_session("a", FP, NOW + 1)
    other_worker = ServerKeys(secret)
    assert other_worker.open_ticket(ticket, NOW) == session
    assert other_worker.session_secret(session.session_id) == session.secret


def test_sessions_are_distinct() -> None:
    sk = ServerKeys(os.urandom(32))
    s1, t1 = sk.new_session("a", FP, NOW + 1)
    s2, t2 = sk.new_session("a", FP, NOW + 1)
    assert s1.session_id != s2.session_id
    assert s1.secret != s2.secret
    assert t1 != t2


def test_ticket_expiry_boundary() -> None:
    sk = ServerKeys(os.urandom(32))
    session, ticket = sk.new_session("a", FP, NOW)
    assert sk.open_ticket(ticket, NOW) == session  # now == expires still opens
    with pytest.raises(ProtocolError) as info:
        sk.open_ticket(ticket, NOW + 1)
    assert info.value.message == TICKET_ERROR


def _bad_tickets() -> list[tuple[str, bytes]]:
    sk = ServerKeys(SECRET)
    _, ticket = sk.new_session("laptop", FP, NOW + 10)
    _, foreign = ServerKeys(b"\x08" * 32).new_session("laptop", FP, NOW + 10)
    bad = [
        ("other server", foreign),
        ("empty", b""),
        ("nonce only", ticket[:12]),
        ("short nonce", ticket[:5]),
        ("truncated", ticket[:-1]),
        ("extended", ticket + b"\x00"),
    ]
    for pos in (0, 11, 12, 30, len(ticket) - 1):
        flipped = bytearray(ticket)
        flipped[pos] ^= 0x01
        bad.append((f"flip {pos}", bytes(flipped)))
    return bad


@pytest.mark.parametrize("label, ticket", _bad_tickets(), ids=[b[0] for b in _bad_tickets()])
def test_bad_tickets_all_fail_alike(label: str, ticket: bytes) -> None:
    sk = ServerKeys(SECRET)
    with pytest.raises(ProtocolError) as info:
        sk.open_ticket(ticket, NOW)
    assert info.value.message == TICKET_ERROR


def test_expired_fails_like_forged() -> None:
    sk = ServerKeys(SECRET)
    _, ticket = sk.new_session("laptop", FP, NOW - 1)
    with pytest.raises(ProtocolError) as expired:
        sk.open_ticket(ticket, NOW)
    with pytest.raises(ProtocolError) as forged:
        sk.open_ticket(ticket[:-1] + bytes([ticket[-1] ^ 1]), NOW)
    assert expired.value.message == forged.value.message == TICKET_ERROR
    assert type(expired.value) is type(forged.value)


def test_ticket_known_answer() -> None:
    def run() -> tuple[keys.Session, bytes]:
        return ServerKeys(SECRET, random=lambda n: bytes(n)).new_session("laptop", FP, NOW)

    (s1, t1), (s2, t2) = run(), run()
    assert t1 == t2
    assert s1 == s2
    assert s1.session_id == bytes(16)
    assert t1[:12] == bytes(12)  # the injected nonce leads the ticket
    assert len(t1) == 12 + 16 + 8 + 32 + len(b"laptop") + 16
    assert t1.hex() == (
        "000000000000000000000000"
        "50c2f94936c14f393e2855afa1de99d4c76177f53ae369cc064c5a510e3b070c"
        "0dff8366026516127866633c7b27c66669185252b923a5b01e2e5b7027c2da12"
        "a9cd082bf372c01a78c658b650f6"
    )
    assert s1.secret.hex() == "d36b48e468ebee01a25eefff6e7caf6a63c2678c9e5b9680941e624e6b08d365"
    ticket_key = _hkdf_reference(SECRET, b"fastxfer ticket key v1", 32)
    plain = AESGCM(ticket_key).decrypt(bytes(12), t1[12:], keys.TICKET_AAD)
    assert plain == bytes(16) + NOW.to_bytes(8, "big") + FP + b"laptop"
    assert s1.secret == _hkdf_reference(SECRET, b"fastxfer session v1" + bytes(16), 32)
