"""Pairing without sockets: the code's form, the confirmation MACs, the PAKE's
agreement, and invitations (single use, expiry, one name) on a real folder
with a clock the test sets."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fastxfer.errors import ProtocolError, TrustError, UsageError
from fastxfer.protocol import pairing
from fastxfer.protocol.words import WORDS
from fastxfer.trust.invites import REMEMBERED, InviteBook
from fastxfer.trust.pake import Pake

SECRETS = st.integers(0, len(WORDS) ** pairing.WORD_COUNT - 1)
NUMBERS = st.integers(1, pairing.MAX_NUMBER)


# ---------------------------------------------------------------- the code


def test_the_word_list() -> None:
    assert len(WORDS) == 2048 == len(set(WORDS))
    assert len({w[:4] for w in WORDS}) == len(WORDS)  # four letters name a word
    assert all(w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 8 for w in WORDS)
    assert pairing.SECRET_BITS == 22 and pairing.GUESS_CHANCE == 2.0 ** -22 < 1e-6


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(NUMBERS, SECRETS)
def test_a_code_is_a_number_and_two_words_and_parses_back(number: int, secret: int) -> None:
    code = pairing.code_from(number, secret)
    text = str(code)
    head, *words = text.split("-")
    assert head == str(number) and len(words) == 2 and all(w in WORDS for w in words)
    assert pairing.parse_code(text) == code
    assert pairing.parse_code(f"  {text.upper().replace('-', ' ')} ") == code
    assert pairing.parse_code("-".join([head, *(w[:4] for w in words)])) == code
    assert code.password == text.encode()
    assert code.shown == f"{number}-\u2026" and words[0] not in code.shown


def test_distinct_secrets_give_distinct_codes() -> None:
    seen = {str(pairing.code_from(7, s)) for s in range(0, 2**22, 4099)}
    assert len(seen) == len(range(0, 2**22, 4099))
    with pytest.raises(ValueError):
        pairing.code_from(7, 2**22)
    with pytest.raises(ValueError):
        pairing.code_from(0, 1)


@pytest.mark.parametrize("text", [
    "", "7", "7-absurd", "7-absurd-vessel-extra", "absurd-vessel-7", "0-absurd-vessel", "10000-absurd-vessel",
    "x-absurd-vessel", "7-absurdx-vessel", "7-abs-vessel", "7-vess-absurdity", "٧-absurd-vessel",
])
def test_what_is_not_a_code(text: str) -> None:
    with pytest.raises(UsageError, match="not a pairing code"):
        pairing.parse_code(text)


# ---------------------------------------------------------------- the PAKE and its confirmation

CFP, SFP, NONCE = b"c" * 32, b"s" * 32, b"n" * 32


def _run(client_code: bytes, server_code: bytes, client_fp: bytes = CFP, server_fp: bytes = SFP,
         seen_fp: bytes = SFP) -> tuple[bytes, bytes]:
    """The server's MAC as the client expects it and as the server made it;
    *seen_fp*: the server fingerprint the client saw in TLS."""
    client = Pake(True, client_code, client_fp, seen_fp)
    server = Pake(False, server_code, client_fp, server_fp)
    kc, ks = client.finish(server.outbound), server.finish(client.outbound)
    expected = pairing.confirmation(kc, pairing.SERVER_ROLE, NONCE, client.outbound, server.outbound,
                                    seen_fp, client_fp, "laptop")
    made = pairing.confirmation(ks, pairing.SERVER_ROLE, NONCE, client.outbound, server.outbound,
                                server_fp, client_fp, "laptop")
    return expected, made


def test_the_same_code_confirms() -> None:
    expected, made = _run(b"7-absurd-vessel", b"7-absurd-vessel")
    assert pairing.confirms(expected, made)


def test_a_wrong_code_does_not_confirm() -> None:
    expected, made = _run(b"7-absurd-vessel", b"7-absurd-vesper")
    assert not pairing.confirms(expected, made)


def test_a_man_in_the_middle_with_its_own_certificate_does_not_confirm() -> None:
    # Even with the right code, a client that saw another certificate than the
    # server's own computes another key and another MAC.
    expected, made = _run(b"7-absurd-vessel", b"7-absurd-vessel", seen_fp=b"m" * 32)
    assert not pairing.confirms(expected, made)


def test_every_field_of_the_confirmation_counts() -> None:
    base = dict(key=b"k" * 32, role=pairing.SERVER_ROLE, nonce=NONCE, client_msg=b"A" * 33, server_msg=b"B" * 33,
                server_fp=SFP, client_fp=CFP, name="laptop")
    ref = pairing.confirmation(**base)
    changes = dict(key=b"K" * 32, role=pairing.CLIENT_ROLE, nonce=b"N" * 32, client_msg=b"a" * 33,
                   server_msg=b"b" * 33, server_fp=b"S" * 32, client_fp=b"C" * 32, name="laptop2")
    for field, value in changes.items():
        assert pairing.confirmation(**{**base, field: value}) != ref, field
    assert len(ref) == pairing.MAC_SIZE
    with pytest.raises(ValueError):
        pairing.confirmation(**{**base, "server_fp": b"short"})


def test_a_malformed_pake_message_is_a_protocol_error() -> None:
    for bad in (b"", b"B" * 10, b"X" + b"\0" * 32, b"A" + b"\xff" * 32):
        with pytest.raises(ProtocolError, match="malformed pairing message"):
            Pake(False, b"7-absurd-vessel", CFP, SFP).finish(bad)


def test_b64_field_takes_exactly_its_size() -> None:
    import base64

    ok = {"x": base64.b64encode(b"a" * 32).decode()}
    assert pairing.b64_field(ok, "x", 32) == b"a" * 32
    for bad in ({"x": base64.b64encode(b"a" * 31).decode()}, {"x": "!!!"}, {"x": 5}, {}, {"x": "A" * 5000}):
        with pytest.raises(ProtocolError):
            pairing.b64_field(bad, "x", 32)


# ---------------------------------------------------------------- invitations

T0 = 1_800_000_000.0


def test_an_invitation_is_stored_privately_and_claimed_once(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    inv = book.create("laptop", now=T0)
    assert 1 <= inv.number <= 99 and inv.expires == T0 + 600
    assert stat.S_IMODE(os.stat(tmp_path / "invites.json").st_mode) == 0o600
    assert json.loads((tmp_path / "invites.json").read_text())[str(inv.number)]["name"] == "laptop"
    got = book.claim(inv.number, now=T0 + 599)
    assert got.code == inv.code and got.name == "laptop"
    with pytest.raises(TrustError, match="already used") as info:
        book.claim(inv.number, now=T0 + 1)
    assert str(inv.code) not in info.value.message  # never the secret words


def test_an_invitation_expires(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    inv = book.create("laptop", ttl=90, now=T0)
    with pytest.raises(TrustError, match="expired 10 s ago"):
        book.claim(inv.number, now=T0 + 100)
    # Long after, it is forgotten: no such invitation.
    with pytest.raises(TrustError, match=f"no pairing invitation {inv.number} is open"):
        book.claim(inv.number, now=T0 + 90 + REMEMBERED)
    assert book.all() == []


def test_an_unknown_number_is_refused_and_uses_nothing_up(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    inv = book.create("laptop", now=T0)
    other = inv.number % 99 + 1
    with pytest.raises(TrustError, match=f"no pairing invitation {other} is open"):
        book.claim(other, now=T0)
    assert book.claim(inv.number, now=T0).name == "laptop"


def test_numbers_are_distinct_and_each_code_is_for_its_name(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    made = [book.create(f"c{i}", now=T0) for i in range(120)]  # past 99 the numbers grow
    assert len({inv.number for inv in made}) == 120
    assert all(book.claim(inv.number, now=T0).name == inv.name for inv in made)


def test_cancel_uses_up_the_open_invitations_of_a_name(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    a, b, c = book.create("laptop", now=T0), book.create("laptop", now=T0), book.create("desk", now=T0)
    assert book.cancel("laptop") == 2
    for inv in (a, b):
        with pytest.raises(TrustError, match="already used"):
            book.claim(inv.number, now=T0)
    assert book.claim(c.number, now=T0).name == "desk"


def test_bad_names_durations_and_damaged_entries(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    with pytest.raises(UsageError):
        book.create("../etc", now=T0)
    with pytest.raises(UsageError):
        book.create("laptop", ttl=0, now=T0)
    with pytest.raises(UsageError):
        book.create("laptop", ttl=86401, now=T0)
    inv = book.create("laptop", now=T0)
    raw = json.loads(book.path.read_text())
    raw["5000"] = {"code": "5000-not-words", "name": "x", "expires": T0 + 600}  # skipped, never trusted
    raw["5001"] = {"code": f"{inv.code}", "name": "x", "expires": T0 + 600}  # number and code disagree
    book.path.write_text(json.dumps(raw))
    assert [i.number for i in book.all()] == [inv.number]
    with pytest.raises(TrustError):
        book.claim(5001, now=T0)


def test_invite_durations() -> None:
    import argparse

    from fastxfer.cli.pair import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h", " 2H ")] == [90, 90, 600, 5400, 7200]
    for bad in ("", "m", "10 minutes", "-5m", "1d"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
