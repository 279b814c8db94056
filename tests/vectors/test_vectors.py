"""Known answers: every vector committed next to this file is built again from
its inputs with the code and compared byte for byte, and its bytes are parsed
back and compared field by field.  A change of the wire format fails here
until make_vectors.py is run again and the new files are committed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fastxfer.errors import ProtocolError
from fastxfer.protocol import keys, layout, messages, wire

import make_vectors as mv

HERE = Path(__file__).resolve().parent
FRAMES = json.loads((HERE / "frames.json").read_text())
MESSAGES = json.loads((HERE / "messages.json").read_text())
LAYOUT = json.loads((HERE / "layout.json").read_text())
RECEIPTS = json.loads((HERE / "receipts.json").read_text())
PAIRING = json.loads((HERE / "pairing.json").read_text())
u = bytes.fromhex


# ------------------------------------------------------------------ stream


def test_every_frame_kind_has_a_vector() -> None:
    kinds = {f["kind"].removesuffix("_C2S") for f in FRAMES["frames"]}
    assert kinds == set(mv.KINDS)
    # Every kind defined in wire.py is in the vectors' table.
    defined = {v for k, v in vars(wire).items() if k in mv.KINDS}
    assert defined == set(range(1, 11)) == set(mv.KINDS.values())


def test_stream_keys() -> None:
    k = FRAMES["keys"]
    c2s, s2c = keys.stream_keys(u(k["session_secret"]), u(k["client_random"]), u(k["server_random"]))
    assert (c2s.hex(), s2c.hex()) == (k["c2s"], k["s2c"])


def test_ticket() -> None:
    t = FRAMES["ticket"]
    randoms = iter([u(t["session_id"]), u(t["nonce"])])
    server = keys.ServerKeys(u(t["server_secret"]), random=lambda n: next(randoms))
    session, ticket = server.new_session(t["name"], u(t["client_fp"]), t["expires"])
    assert ticket.hex() == t["ticket"]
    assert session.secret.hex() == t["session_secret"]
    opened = keys.ServerKeys(u(t["server_secret"])).open_ticket(u(t["ticket"]), t["expires"])
    assert (opened.session_id.hex(), opened.client_name, opened.client_fp.hex(), opened.expires) == (
        t["session_id"], t["name"], t["client_fp"], t["expires"])


def test_opening() -> None:
    o, r = FRAMES["opening"], FRAMES["open_reply"]
    raw = u(o["bytes"])
    assert wire.encode_open(u(o["ticket"]), u(o["client_random"])) == raw
    size = wire.parse_open_prefix(raw[: wire.OPEN_PREFIX])
    assert raw[wire.OPEN_PREFIX : wire.OPEN_PREFIX + size].hex() == o["ticket"]
    assert raw[wire.OPEN_PREFIX + size :].hex() == o["client_random"]
    assert wire.encode_open_reply(u(r["server_random"])).hex() == r["bytes"]
    assert wire.parse_open_reply(u(r["bytes"])).hex() == r["server_random"]


@pytest.mark.parametrize("vector", FRAMES["frames"], ids=lambda v: v["kind"])
def test_frame_is_built_from_its_fields(vector: dict) -> None:
    header, body = mv.build_frame(vector["kind"], vector["fields"])
    assert header.hex() == vector["header"]
    assert body.hex() == vector["body"]
    k = FRAMES["keys"]
    c2s, s2c = u(k["c2s"]), u(k["s2c"])
    side = "client" if vector["kind"] in mv.C2S_KINDS else "server"
    sealer, _ = keys.pair(c2s, s2c, side)
    kind = mv.KINDS[vector["kind"].removesuffix("_C2S")]
    frame = wire.frame_prefix(kind, header, len(body)) + sealer.seal(bytes([kind]) + header, body)
    assert frame.hex() == vector["frame"]


@pytest.mark.parametrize("vector", FRAMES["frames"], ids=lambda v: v["kind"])
def test_frame_parses_back_to_its_fields(vector: dict) -> None:
    frame = u(vector["frame"])
    kind, rest = wire.parse_prefix(frame[: wire.FRAME_PREFIX])
    assert kind == mv.KINDS[vector["kind"].removesuffix("_C2S")]
    assert rest == len(frame) - wire.FRAME_PREFIX
    head = wire.split_rest(kind, frame[wire.FRAME_PREFIX :])
    assert head.header.hex() == vector["header"]
    k = FRAMES["keys"]
    # The receiving end opens it: the server what a client sealed, and the other way round.
    side = "server" if vector["kind"] in mv.C2S_KINDS else "client"
    _, opener = keys.pair(u(k["c2s"]), u(k["s2c"]), side)
    body = opener.open(head.aad, frame[wire.FRAME_PREFIX + len(head.header) :])
    assert body.hex() == vector["body"]
    assert mv.parse_frame(vector["kind"], head.header, body) == vector["fields"]


def test_a_sync_is_exactly_the_first_frame_size() -> None:
    sync = next(v for v in FRAMES["frames"] if v["kind"] == "SYNC")
    assert len(u(sync["frame"])) == wire.FRAME_PREFIX + wire.SYNC_FRAME - 1
    assert wire.parse_prefix(u(sync["frame"])[: wire.FRAME_PREFIX], wire.SYNC_FRAME) == (wire.SYNC, wire.TAG)


# ---------------------------------------------------------------- messages

CONTROL_TYPES = {"challenge", "auth", "welcome", "put", "put_ok", "probe", "probe_ok", "commit", "committed",
                 "dirs", "dirs_ok", "list", "list_ok", "receipts", "receipts_ok", "sums", "sums_ok", "snap_begin", "snap_begun",
                 "snap_add", "snap_added", "snap_end", "snap_ended", "snapshots", "snapshots_ok", "forget",
                 "forget_ok", "pair", "pair_ok", "pair_confirm", "paired", "ping",
                 "pong", "bye", "error"}


def test_every_control_message_type_has_a_vector() -> None:
    from fastxfer.protocol import states

    assert {m["t"] for m in MESSAGES["messages"]} == CONTROL_TYPES
    # Every type the state machines know is vectored.
    known = {e for m in (states.SERVER_CONTROL, states.CLIENT_CONTROL, states.CLIENT_PAIRING) for e in m.events}
    assert known <= CONTROL_TYPES


@pytest.mark.parametrize("vector", MESSAGES["messages"], ids=lambda v: v["t"])
def test_message_bytes(vector: dict) -> None:
    assert messages.encode_msg(vector["message"]).hex() == vector["bytes"]
    decoder = messages.MsgDecoder()
    decoder.feed(u(vector["bytes"]))
    assert decoder.next() == vector["message"]
    assert decoder.next() is None


def test_have_list() -> None:
    have = MESSAGES["have"]
    chunks = {int(i): u(d) for i, d in have["chunks"].items()}
    assert messages.encode_have(chunks) == have["text"]
    assert messages.parse_have(have["text"], have["count"]) == chunks
    with pytest.raises(ProtocolError):
        messages.parse_have(have["text"], max(chunks))  # names a chunk beyond the file


# ------------------------------------------------------------------ layout


def test_file_digest() -> None:
    f = LAYOUT["file"]
    data = mv.file_bytes(f["size"])
    count = layout.chunk_count(f["size"], f["chunk"])
    assert count == len(f["chunks"])
    digests = []
    for i in range(count):
        offset, length = layout.chunk_span(f["size"], f["chunk"], i)
        digests.append(mv.sha(data[offset : offset + length]))
    assert [d.hex() for d in digests] == f["chunks"]
    assert layout.file_digest(f["size"], f["chunk"], digests).hex() == f["digest"]


def test_record_entry() -> None:
    r = LAYOUT["record_entry"]
    entry = layout.record_entry(r["index"], u(r["digest"]))
    assert entry.hex() == r["bytes"]
    assert layout.parse_record(u(r["bytes"]), r["index"] + 1) == {r["index"]: u(r["digest"])}


# ---------------------------------------------------------------- receipts


def test_receipt_signed_bytes() -> None:
    from fastxfer.trust import identity, receipts

    body = RECEIPTS["body"]
    assert body["server"] == identity.fingerprint_of(u(RECEIPTS["cert"])).hex()
    assert receipts.canonical(body).hex() == RECEIPTS["canonical"]
    assert (receipts.CONTEXT + receipts.canonical(body)).hex() == RECEIPTS["signed"]


def test_receipt_committed_signature_checks_out(tmp_path: Path) -> None:
    # ECDSA signatures are not deterministic: the committed one is verified,
    # through the receipts file a client keeps, by the code that checks them.
    from fastxfer.errors import TrustError
    from fastxfer.trust import identity, receipts

    cert = u(RECEIPTS["cert"])
    path = tmp_path / "receipts.jsonl"
    receipt = {"body": u(RECEIPTS["canonical"]).decode(), "sig": base64.b64encode(
        u(RECEIPTS["sig"])).decode()}
    receipts.write(path, cert, [receipt])
    assert receipts.verify_file(path, {identity.fingerprint_of(cert)}) == [RECEIPTS["body"]]
    altered = tmp_path / "altered.jsonl"
    receipts.write(altered, cert, [dict(receipt, body=receipt["body"].replace("alice", "mallo"))])
    with pytest.raises(TrustError):
        receipts.verify_file(altered, {identity.fingerprint_of(cert)})


def test_receipt_signed_now_by_the_fixed_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from fastxfer.trust import identity, receipts

    key = mv.receipt_key()
    assert hex(key.private_numbers().private_value) == RECEIPTS["key"]
    (tmp_path / identity.KEY_FILE).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signed = receipts.sign(identity.Identity(tmp_path, u(RECEIPTS["cert"])), RECEIPTS["body"])
    assert signed["body"].encode().hex() == RECEIPTS["canonical"]
    identity.verify_auth(u(RECEIPTS["cert"]), base64.b64decode(signed["sig"]), u(RECEIPTS["signed"]))


# ----------------------------------------------------------------- pairing


def test_pairing_run() -> None:
    """The code's words, SPAKE2's messages and key (the library's wire format and
    our identities), and both confirmation MACs, from fixed randomness."""
    from fastxfer.protocol import pairing

    p = PAIRING
    assert str(pairing.code_from(p["number"], p["secret"])) == p["code"]
    assert pairing.parse_code(p["code"]) == pairing.code_from(p["number"], p["secret"])
    assert mv.pairing_vectors() == p
    key, nonce, cfp, sfp = u(p["key"]), u(p["nonce"]), u(p["client_fp"]), u(p["server_fp"])
    for role, want in ((pairing.SERVER_ROLE, p["server_confirm"]), (pairing.CLIENT_ROLE, p["client_confirm"])):
        got = pairing.confirmation(key, role, nonce, u(p["client_msg"]), u(p["server_msg"]), sfp, cfp, p["name"])
        assert got.hex() == want
