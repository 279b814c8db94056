"""Hostile frames on a real server's authenticated stream: every frame kind,
headers and bodies valid, mutated or random, sealed with the session's
real keys so that they reach the handlers.  The server answers with
frames of known kinds (an ERROR with a documented code at worst), ends
only that stream, logs no traceback, and keeps serving."""

from __future__ import annotations

import hashlib
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_client, make_file
from test_fuzz_control import settled
from test_hostile import control_session, put

from fastxfer.client.connect import open_stream
from fastxfer.errors import WIRE_CODES, FxError
from fastxfer.protocol import wire

NUMBERS = {c.number for c in WIRE_CODES.values()}
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
EDGES = st.sampled_from([0, 1, 999, 1000, 1001, 1 << 20, wire.MAX_CHUNK, wire.MAX_CHUNK + 1, 2**31, 2**32 - 1])
OFFSETS = EDGES | st.sampled_from([2**63 - 1, 2**64 - 1])


def bundle_body(files: list[tuple[bytes, bytes]]) -> bytes:
    body = bytearray()
    for path, data in files:
        head = bytearray(wire.BUNDLE_ENTRY_HEAD + len(path))
        wire.pack_bundle_entry_head(head, 0, path, len(data), 1, 0o644)
        body += head + data + hashlib.sha256(data).digest()
    return bytes(body)


def good_frames(fid: bytes, stored: Path) -> list[tuple[int, bytes, bytes]]:
    """Frames the server accepts: the transfer's one chunk, a stored file asked for, a bundle."""
    chunk = b"v" * 1000
    size, mtime = stored.stat().st_size, stored.stat().st_mtime_ns
    return [(wire.DATA, wire.data_header(fid, 0, 1000), chunk + hashlib.sha256(chunk).digest()),
            (wire.REQ, *wire.encode_req(b"t" * 16, 0, size, size, mtime, stored.name.encode())),
            (wire.REQS, *wire.encode_reqs(1, [wire.Ask(b"u" * 16, size, mtime, stored.name.encode())])),
            (wire.BUNDLE, wire.bundle_header(1, 1), bundle_body([(b"small", b"tiny")]))]


@st.composite
def frames(draw, fid: bytes, good: list) -> tuple[int, bytes, bytes]:
    """A frame a client could send, built right and then perhaps bent."""
    if draw(st.integers(0, 3)) == 0:
        kind, header, body = draw(st.sampled_from(good))
        return kind, header, bent(draw, body)
    tag = draw(st.sampled_from([fid, bytes(16), b"\xff" * 16]))
    data = draw(st.binary(max_size=1200))
    path = draw(st.sampled_from([b"x.bin", b"victim.bin", b"", b"../etc", b"a\x00b", b"\xff\xfe", b"/abs", b"a" * 300]))
    kind = draw(st.sampled_from(sorted(wire.FRAME_KINDS)))
    if kind in (wire.DATA, wire.ZEROS, wire.REQ):
        header = struct.pack(">16sQI", tag, draw(OFFSETS), draw(EDGES | st.just(len(data))))
        body = draw(st.sampled_from([data + hashlib.sha256(data).digest(), data, data + bytes(32)]))
        if kind == wire.REQ:
            body = struct.pack(">Qq", draw(OFFSETS), draw(st.integers(-(2**63), 2**63 - 1))) + path
    elif kind == wire.BUNDLE:
        count = draw(st.integers(0, 4))
        header = wire.bundle_header(draw(EDGES), count, draw(EDGES))
        body = bundle_body([(path, data)] * count)
    elif kind == wire.REQS:
        asks = [wire.Ask(tag, draw(EDGES), draw(st.integers(-(2**63), 2**63 - 1)), path)
                for _ in range(draw(st.integers(0, 3)))]
        header, body = wire.encode_reqs(draw(EDGES), asks)
    else:
        header, body = draw(st.binary(min_size=wire.header_size(kind), max_size=wire.header_size(kind))), data
    if draw(st.integers(0, 5)) == 0:
        return kind, draw(st.binary(max_size=40)), draw(st.binary(max_size=400))
    return kind, header, bent(draw, body)


def bent(draw, body: bytes) -> bytes:
    """*body* as built, or with a byte flipped, cut short or grown."""
    how = draw(st.sampled_from(["as built", "as built", "flip", "cut", "grow"]))
    if how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ 0x41]) + body[at + 1:]
    elif how == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif how == "grow":
        body += draw(st.binary(min_size=1, max_size=40))
    return body


def replies(fc) -> list[int]:
    """The kinds of every frame the server sends until it closes the stream;
    each must be one the protocol has, an ERROR one with a documented code."""
    fc.conn.sock.shutdown(socket.SHUT_WR)  # nothing more from us: the server ends the stream
    fc.conn.settimeout(20)
    kinds = []
    for _ in range(1000):
        try:
            frame = fc.receive()
        except FxError:
            break
        assert frame.kind in wire.FRAME_KINDS
        if frame.kind == wire.ERROR:
            code, text = wire.parse_error(bytes(frame.body))
            assert code in NUMBERS and text, (code, text)
        kinds.append(frame.kind)
    fc.close()
    return kinds


@pytest.fixture
def stored(tmp_path: Path, server, client):
    """A file stored and a transfer open, to aim at."""
    f = make_file(tmp_path / "x.bin", 5000, seed=3)
    assert client.send(server, f).returncode == 0
    control, welcome = control_session(client, server)
    fid = bytes.fromhex(put(control, "victim.bin", size=1000)["fid"])
    yield control, welcome, fid, good_frames(fid, f)
    control.close()


def test_frames_gone_wrong(tmp_path: Path, server, client, stored) -> None:
    pids = sorted(server.worker_pids())
    control, welcome, fid, good = stored
    seen: set[int] = set()

    @FUZZ
    @given(sent=st.lists(frames(fid, good), min_size=1, max_size=3))
    def fuzz(sent) -> None:
        fc = open_stream("127.0.0.1", server.port, welcome)
        try:
            for kind, header, body in sent:
                fc.send(kind, header, body)
        except FxError:
            pass  # the server already ended it: what it said is still read below
        seen.update(replies(fc))

    fuzz()
    assert {wire.ACK, wire.ERROR, wire.DATA} <= seen  # the handlers were reached, in part accepting
    settled(server, pids, type("Done", (), {"close": control.close})(), tmp_path, client)


def test_a_chunk_before_any_staging_is_a_nak(tmp_path: Path, server) -> None:
    """A client that never put a file (so has no staging folder) sends a
    chunk for a made-up transfer: it is told the transfer is unknown, and
    its stream goes on."""
    fresh = make_client(tmp_path, server, "fresh")
    control, welcome = control_session(fresh, server)
    try:
        fc = open_stream("127.0.0.1", server.port, welcome)
        data = b"q" * 1000
        fc.send(wire.DATA, wire.data_header(b"\x07" * 16, 0, 1000), data + hashlib.sha256(data).digest())
        fc.send(wire.DATA, wire.data_header(b"\x08" * 16, 0, 1000), data + hashlib.sha256(data).digest())
        fc.conn.settimeout(10)
        naks = [fc.receive(), fc.receive()]
        assert [(f.kind, wire.parse_nak_header(f.header)) for f in naks] == [(wire.NAK, b"\x07" * 16),
                                                                            (wire.NAK, b"\x08" * 16)]
        assert "unknown transfer" in wire.parse_error(bytes(naks[0].body))[1]
        fc.close()
    finally:
        control.close()
    assert "Traceback" not in server.log_text()
