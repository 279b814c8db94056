"""Known-answer vectors of the wire format: run by hand, commit what it writes.

    PYTHONPATH=. python tests/vectors/make_vectors.py

writes frames.json (stream openings, the key schedule, a ticket and one
frame of every kind, sealed under fixed keys), messages.json (one control
message of every type, and a resume's chunk list), layout.json (the hash
list of a file and a chunk-record entry) and receipts.json (a receipt's
signed bytes and a committed signature under a fixed test key) next to this
file.  Every input is fixed, so running it again writes the same bytes,
except receipts.json's certificate and signature (ECDSA draws a random
nonce): an existing receipts.json keeps them.  test_vectors.py builds every
vector from its inputs with the code and compares with the committed bytes,
and parses the bytes back; a change of format fails it until this script is
run again and the change is committed on purpose.

The build and parse functions here are shared with test_vectors.py; the
committed files are the known answers.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fastxfer.protocol import frames as typed, keys, layout, messages, wire

HERE = Path(__file__).resolve().parent
KINDS = {"DATA": wire.DATA, "ACK": wire.ACK, "SYNC": wire.SYNC, "ERROR": wire.ERROR, "BUNDLE": wire.BUNDLE,
         "BUNDLE_ACK": wire.BUNDLE_ACK, "REQ": wire.REQ, "NAK": wire.NAK, "REQS": wire.REQS, "DATAS": wire.DATAS}
# Who seals each kind: the client's frames under c2s, the server's under s2c.
C2S_KINDS = {"DATA_C2S", "SYNC", "BUNDLE", "REQ", "REQS"}

SESSION_SECRET = bytes(range(32))
CLIENT_RANDOM = bytes(range(0x40, 0x60))
SERVER_RANDOM = bytes(range(0x80, 0xA0))
SERVER_SECRET = bytes(range(0xC0, 0xE0))
CLIENT_FP = hashlib.sha256(b"fastxfer vector client").digest()
RECEIPT_KEY = 0x5EED_F00D_CAFE_BEEF_0123_4567_89AB_CDEF_FEDC_BA98_7654_3210_1111_2222_3333_4444


def h(data: bytes) -> str:
    return data.hex()


def u(text: str) -> bytes:
    return bytes.fromhex(text)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ------------------------------------------------------------------ frames


def build_frame(kind: str, f: dict[str, Any]) -> tuple[bytes, bytes]:
    """(header, plaintext body) of a frame of *kind* from its fields."""
    k = KINDS[kind.removesuffix("_C2S")]
    if k == wire.DATA:
        data = u(f["data"])
        return wire.data_header(u(f["fid"]), f["offset"], len(data)), data + sha(data)
    if k == wire.ACK:
        entries = [(u(fid), off) for fid, off in f["entries"]]
        return wire.ack_header(len(entries)), wire.encode_acks(entries)
    if k == wire.SYNC:
        return b"", b""
    if k == wire.ERROR:
        return b"", wire.encode_error(f["code"], f["message"])
    if k == wire.BUNDLE:
        body = bytearray()
        for e in f["files"]:
            path, data = e["path"].encode(), u(e["data"])
            head = bytearray(wire.BUNDLE_ENTRY_HEAD + len(path))
            wire.pack_bundle_entry_head(head, 0, path, len(data), e["mtime_ns"], e["mode"])
            body += head + data + sha(data)
        return wire.bundle_header(f["bundle"], len(f["files"])), bytes(body)
    if k == wire.BUNDLE_ACK:
        return wire.encode_bundle_ack(f["bundle"], [tuple(s) for s in f["statuses"]])
    if k == wire.REQ:
        return wire.encode_req(u(f["tag"]), f["offset"], f["length"], f["size"], f["mtime_ns"], f["path"].encode())
    if k == wire.NAK:
        return u(f["tag"]), wire.encode_error(f["code"], f["message"])
    if k == wire.REQS:
        asks = [wire.Ask(u(a["tag"]), a["size"], a["mtime_ns"], a["path"].encode()) for a in f["asks"]]
        return wire.encode_reqs(f["batch"], asks)
    body = bytearray()
    for e in f["entries"]:
        payload = u(e["data"]) + sha(u(e["data"])) if e["status"] == 0 else e["message"].encode()
        head = bytearray(wire.DATAS_ENTRY_HEAD)
        wire.pack_datas_entry_head(head, 0, u(e["tag"]), e["status"], e["code"], len(payload))
        body += head + payload
    return wire.datas_header(f["batch"], len(f["entries"])), bytes(body)


def parse_frame(kind: str, header: bytes, body: bytes) -> dict[str, Any]:
    """The fields of a frame, read back as the code's typed event (digests checked here)."""
    e = typed.parse_frame(KINDS[kind.removesuffix("_C2S")], header, body)
    if isinstance(e, typed.Data):
        assert sha(e.data) == e.digest
        return {"fid": h(e.fid), "offset": e.offset, "data": h(bytes(e.data))}
    if isinstance(e, typed.Ack):
        return {"entries": [[h(fid), off] for fid, off in e.entries]}
    if isinstance(e, typed.Sync):
        return {}
    if isinstance(e, typed.Error):
        return {"code": e.code, "message": e.message}
    if isinstance(e, typed.Nak):
        return {"code": e.code, "message": e.message, "tag": h(e.tag)}
    if isinstance(e, typed.Bundle):
        assert all(sha(f.data) == f.digest for f in e.entries)
        return {"bundle": e.bundle, "files": [{"path": f.path.decode(), "mtime_ns": f.mtime_ns, "mode": f.mode,
                                               "data": h(bytes(f.data))} for f in e.entries]}
    if isinstance(e, typed.BundleAck):
        return {"bundle": e.bundle, "statuses": [list(s) for s in e.statuses]}
    if isinstance(e, typed.Req):
        return {"tag": h(e.tag), "offset": e.offset, "length": e.length, "size": e.size, "mtime_ns": e.mtime_ns,
                "path": e.path.decode()}
    if isinstance(e, typed.Reqs):
        return {"batch": e.batch, "asks": [{"tag": h(a.tag), "size": a.size, "mtime_ns": a.mtime_ns,
                                            "path": a.path.decode()} for a in e.asks]}
    assert isinstance(e, typed.Datas)
    out = []
    for tag, status, code, payload in e.entries:
        payload = bytes(payload)
        if status == 0:
            assert sha(payload[: -wire.DIGEST]) == payload[-wire.DIGEST :]
            out.append({"tag": h(tag), "status": 0, "code": code, "data": h(payload[: -wire.DIGEST])})
        else:
            out.append({"tag": h(tag), "status": status, "code": code, "message": payload.decode()})
    return {"batch": e.batch, "entries": out}


def seal_frame(kind: str, header: bytes, body: bytes) -> bytes:
    """The whole frame on the wire: prefix and header (frame_prefix), sealed body; each vector its
    connection's first frame of its direction (counter 0)."""
    c2s, s2c = keys.stream_keys(SESSION_SECRET, CLIENT_RANDOM, SERVER_RANDOM)
    side = "client" if kind in C2S_KINDS else "server"
    sealer, _ = keys.pair(c2s, s2c, side)
    k = KINDS[kind.removesuffix("_C2S")]
    return wire.frame_prefix(k, header, len(body)) + sealer.seal(bytes([k]) + header, body)


TAG1, TAG2 = sha(b"tag one")[:16], sha(b"tag two")[:16]
FID1, FID2 = sha(b"fid one")[:16], sha(b"fid two")[:16]
FRAME_FIELDS: dict[str, dict[str, Any]] = {
    "DATA_C2S": {"fid": h(FID1), "offset": 4 << 20, "data": h(b"chunk bytes \x00\x01\x02\xff")},
    "DATA": {"fid": h(TAG1), "offset": 0, "data": h(b"restored chunk")},
    "ACK": {"entries": [[h(FID1), 0], [h(FID1), 4 << 20], [h(FID2), 0]]},
    "SYNC": {},
    "ERROR": {"code": 6, "message": "not enough space on the server (disk full)"},
    "BUNDLE": {"bundle": 7, "files": [
        {"path": "docs/a.txt", "mtime_ns": 1764287418123456789, "mode": 0o644, "data": h(b"hello\n")},
        {"path": "caf\u00e9/empty", "mtime_ns": -5, "mode": 0o600, "data": ""}]},
    "BUNDLE_ACK": {"bundle": 7, "statuses": [[0, 0, ""], [1, 0, ""], [2, 6, "docs/b: a folder is in the way"]]},
    "REQ": {"tag": h(TAG1), "offset": 1 << 20, "length": 65536, "size": 3 << 20, "mtime_ns": 1764287418000000000,
            "path": "docs/a.pdf"},
    "NAK": {"tag": h(TAG1), "code": 6, "message": "docs/a.pdf: not stored on the server"},
    "REQS": {"batch": 3, "asks": [
        {"tag": h(TAG1), "size": 6, "mtime_ns": 1, "path": "a"},
        {"tag": h(TAG2), "size": 0, "mtime_ns": 2, "path": "b/c"}]},
    "DATAS": {"batch": 3, "entries": [
        {"tag": h(TAG1), "status": 0, "code": 0, "data": h(b"hello\n")},
        {"tag": h(TAG2), "status": 1, "code": 6, "message": "b/c: not stored on the server"}]},
}


def frames() -> dict[str, Any]:
    c2s, s2c = keys.stream_keys(SESSION_SECRET, CLIENT_RANDOM, SERVER_RANDOM)
    randoms = iter([bytes(range(0x10, 0x20)), bytes(range(0x20, 0x2C))])
    server = keys.ServerKeys(SERVER_SECRET, random=lambda n: next(randoms)[:n])
    session, ticket = server.new_session("alice", CLIENT_FP, 1800000000)
    out: dict[str, Any] = {
        "keys": {"session_secret": h(SESSION_SECRET), "client_random": h(CLIENT_RANDOM),
                 "server_random": h(SERVER_RANDOM), "c2s": h(c2s), "s2c": h(s2c)},
        "ticket": {"server_secret": h(SERVER_SECRET), "session_id": h(session.session_id),
                   "nonce": h(bytes(range(0x20, 0x2C))), "name": "alice", "client_fp": h(CLIENT_FP),
                   "expires": 1800000000, "session_secret": h(session.secret), "ticket": h(ticket)},
        "opening": {"ticket": h(ticket), "client_random": h(CLIENT_RANDOM),
                    "bytes": h(wire.encode_open(ticket, CLIENT_RANDOM))},
        "open_reply": {"server_random": h(SERVER_RANDOM), "bytes": h(wire.encode_open_reply(SERVER_RANDOM))},
        "frames": [],
    }
    for kind, fields in FRAME_FIELDS.items():
        header, body = build_frame(kind, fields)
        out["frames"].append({"kind": kind, "fields": fields, "header": h(header), "body": h(body),
                              "frame": h(seal_frame(kind, header, body))})
    return out


# ---------------------------------------------------------------- messages

HAVE = {0: sha(b"chunk 0"), 2: sha(b"chunk 2")}
MESSAGES: list[dict[str, Any]] = [
    {"t": "challenge", "v": 1, "nonce": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
    {"t": "auth", "cert": "MIIBfake", "sig": "MEUCIQfake"},
    {"t": "welcome", "name": "alice", "ticket": "dGlja2V0", "secret": "c2VjcmV0", "max_chunk": wire.MAX_CHUNK,
     "features": ["reqs"]},
    {"t": "put", "files": [{"path": "docs/a.pdf", "kind": "file", "size": 1048576, "mtime_ns": 1764287418123456789,
                            "mode": 420, "chunk": 4194304},
                           {"path": "docs", "kind": "dir"},
                           {"path": "docs/l", "kind": "link", "target": "a.pdf", "mtime_ns": 5}]},
    {"t": "put_ok", "files": [{"t": "ok", "fid": h(FID1), "chunk": 4194304, "status": "resume",
                               "have": messages.encode_have(HAVE)},
                              {"t": "error", "code": "refused", "message": "absolute path refused: '/etc/x'"}]},
    {"t": "probe", "files": [{"path": "a", "size": 6, "mtime_ns": 1}], "tops": ["a"]},
    {"t": "probe_ok", "files": [{"t": "ok", "status": "send"}], "empty": True},
    {"t": "commit", "files": [{"fid": h(FID1), "digest": h(sha(b"digest")), "sha256": None}]},
    {"t": "committed", "files": [{"t": "ok", "path": "docs/a.pdf", "status": "stored",
                                  "version": "a.pdf~20261127T233018.123456Z"}]},
    {"t": "dirs", "items": [{"path": "docs", "mode": 493, "mtime_ns": 7}]},
    {"t": "dirs_ok"},
    {"t": "list", "prefix": "docs", "versions": False, "after": None},
    {"t": "list_ok", "entries": [{"path": "docs/a.pdf", "kind": "file", "size": 1048576, "mtime_ns": 1,
                                  "mode": 420, "sha256": None, "target": None, "stored_ns": 2, "chunk": 4194304,
                                  "digest": h(sha(b"digest"))}], "next": "646f6373"},
    {"t": "receipts", "paths": ["docs/a.pdf"]},
    {"t": "receipts_ok", "cert": "MIIBfake", "receipts": [None]},
    {"t": "sums", "paths": ["docs/a.pdf"]},
    {"t": "sums_ok", "files": [{"path": "docs/a.pdf", "status": "ok", "sha256": h(sha(b"x"))}]},
    {"t": "snap_begin", "host": "laptop", "paths": [{"path": "docs", "source": "/home/alice/docs"}]},
    {"t": "snap_begun", "id": 12, "previous": ["/home/alice/docs"]},
    {"t": "snap_add", "id": 12, "entries": [
        {"path": "docs/a.pdf", "kind": "file", "size": 1048576, "mtime_ns": 1, "mode": 420, "uid": 1000,
         "gid": 1000, "user": "alice", "group": "alice"},
        {"path": "docs/l", "kind": "link", "size": 0, "mtime_ns": 5, "mode": 511, "uid": 0, "gid": 0,
         "target": "a.pdf"},
        {"path": "docs/p", "kind": "fifo", "size": 0, "mtime_ns": 6, "mode": 420, "uid": 0, "gid": 0}]},
    {"t": "snap_added", "dropped": []},
    {"t": "snap_end", "id": 12, "partial": False},
    {"t": "snap_ended", "id": 12, "state": "complete", "files": 1, "bytes": 1048576, "removed": 1, "dropped": 0},
    {"t": "snapshots", "prefix": "docs"},
    {"t": "snapshots_ok", "snapshots": [{"id": 12, "time_ns": 2, "state": "complete", "host": "laptop",
                                         "files": 1, "bytes": 1048576, "note": "", "dropped": 0,
                                         "paths": ["docs"], "sources": ["/home/alice/docs"]}]},
    {"t": "forget", "keep": {"last": 7, "daily": 14, "weekly": 8}, "dry_run": False, "prune": True},
    {"t": "forget_ok", "kept": [{"id": 12, "time_ns": 2, "paths": ["docs"], "why": ["last", "daily"]}],
     "forgotten": [{"id": 3, "time_ns": 1, "paths": ["docs"]}], "pruned_files": 4, "pruned_bytes": 4096,
     "min_age_ns": 604800000000000},
    {"t": "pair", "invite": 7, "cert": "MIIBfake", "sig": "MEUCIQfake",
     "pake": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"},
    {"t": "pair_ok", "pake": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC", "name": "laptop",
     "confirm": "U1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1M="},
    {"t": "pair_confirm", "confirm": "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M="},
    {"t": "paired", "name": "laptop"},
    {"t": "ping"},
    {"t": "pong"},
    {"t": "bye"},
    {"t": "error", "code": "busy", "message": "the server is shutting down; try again in a minute"},
]


def messages_vectors() -> dict[str, Any]:
    return {
        "messages": [{"t": m["t"], "message": m, "bytes": h(messages.encode_msg(m))} for m in MESSAGES],
        "have": {"count": 3, "chunks": {str(i): h(d) for i, d in HAVE.items()}, "text": messages.encode_have(HAVE)},
    }


# ----------------------------------------------------------------- pairing


def _fixed_entropy(seed: bytes):
    """SPAKE2's random scalar from a counter-mode SHA-256 stream: the vector's run is the same every time."""
    count = iter(range(1 << 20))
    return lambda n: b"".join(sha(seed + b"%d" % next(count)) for _ in range((n + 31) // 32))[:n]


def pairing_vectors() -> dict[str, Any]:
    from fastxfer.protocol import pairing
    from fastxfer.trust.pake import Pake

    code = pairing.code_from(7, 0x2A5F3C)
    client_fp, server_fp, nonce, name = sha(b"client cert"), sha(b"server cert"), sha(b"nonce"), "laptop"
    client = Pake(True, code.password, client_fp, server_fp, _fixed_entropy(b"client"))
    server = Pake(False, code.password, client_fp, server_fp, _fixed_entropy(b"server"))
    key = client.finish(server.outbound)
    assert key == server.finish(client.outbound)

    def mac(role: bytes) -> str:
        return h(pairing.confirmation(key, role, nonce, client.outbound, server.outbound, server_fp, client_fp, name))

    return {"code": str(code), "number": 7, "secret": 0x2A5F3C, "client_fp": h(client_fp),
            "server_fp": h(server_fp), "nonce": h(nonce), "name": name,
            "client_msg": h(client.outbound), "server_msg": h(server.outbound), "key": h(key),
            "server_confirm": mac(pairing.SERVER_ROLE), "client_confirm": mac(pairing.CLIENT_ROLE)}


# ------------------------------------------------------------------ layout

FILE_SIZE = 2 * layout.MIN_CHUNK + 1000


def file_bytes(size: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(size))


def layout_vectors() -> dict[str, Any]:
    data = file_bytes(FILE_SIZE)
    chunk = layout.MIN_CHUNK
    spans = [layout.chunk_span(FILE_SIZE, chunk, i) for i in range(layout.chunk_count(FILE_SIZE, chunk))]
    digests = [sha(data[o : o + n]) for o, n in spans]
    return {
        "file": {"size": FILE_SIZE, "chunk": chunk, "bytes": "(i * 7 + 3) % 251 for i in range(size)",
                 "chunks": [h(d) for d in digests], "digest": h(layout.file_digest(FILE_SIZE, chunk, digests))},
        "record_entry": {"index": 2, "digest": h(digests[2]), "bytes": h(layout.record_entry(2, digests[2]))},
    }


# ---------------------------------------------------------------- receipts

RECEIPT_BODY = {"v": 1, "client": "alice", "path": "docs/a.pdf", "size": FILE_SIZE,
                "sha256": h(sha(b"file")), "digest": h(sha(b"hash list")), "stored_ns": 1764287418123456789,
                "version": "current", "server": "00" * 32}


def receipt_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.derive_private_key(RECEIPT_KEY, ec.SECP256R1())


def receipt_cert() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = receipt_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastxfer")])
    day = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(day).not_valid_after(day + datetime.timedelta(days=36500))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def receipts_vectors(old: dict[str, Any] | None) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from fastxfer.trust import identity, receipts

    cert = u(old["cert"]) if old else receipt_cert()
    body = dict(RECEIPT_BODY, server=h(identity.fingerprint_of(cert)))
    signed = receipts.CONTEXT + receipts.canonical(body)
    sig = u(old["sig"]) if old and old["signed"] == h(signed) else receipt_key().sign(signed, ec.ECDSA(hashes.SHA256()))
    return {"key": hex(RECEIPT_KEY), "cert": h(cert), "body": body, "canonical": h(receipts.canonical(body)),
            "signed": h(signed), "sig": h(sig)}


def main() -> None:
    old = HERE / "receipts.json"
    outputs = {
        "frames.json": frames(),
        "messages.json": messages_vectors(),
        "layout.json": layout_vectors(),
        "pairing.json": pairing_vectors(),
        "receipts.json": receipts_vectors(json.loads(old.read_text()) if old.exists() else None),
    }
    for name, value in outputs.items():
        (HERE / name).write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
        print("wrote", HERE / name, file=sys.stderr)


if __name__ == "__main__":
    main()
