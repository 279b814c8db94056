"""The commit fence: no committed file's bytes differ from the digest recorded for it."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from conftest import fx
from test_hostile import control_session

MIB = 1 << 20


def put(control, path: str, size: int) -> bytes:
    reply = control.call({"t": "put", "files": [
        {"path": path, "size": size, "mtime_ns": 1, "mode": 0o644, "chunk": MIB}]}, "put_ok")
    assert reply["files"][0]["t"] == "ok", reply
    return bytes.fromhex(reply["files"][0]["fid"])


def send_chunk(fc, fid: bytes, offset: int, data: bytes) -> None:
    from fastxfer.protocol import wire

    fc.send(wire.DATA, wire.data_header(fid, offset, len(data)), data + hashlib.sha256(data).digest())


def acked(fc, want: int) -> None:
    from fastxfer.protocol import wire

    got = 0
    while got < want:
        frame = fc.receive()
        assert frame.kind == wire.ACK, frame.kind
        got += len(wire.parse_acks(frame.header, bytes(frame.body)))


def acked_then_rewritten(fc, fid: bytes, first: bytes, second: bytes, other: bytes) -> None:
    """Both chunks of a 2 MiB file sent and acknowledged, then chunk 0 again
    with *other*: written at once, recorded only at the stream's next flush."""
    from fastxfer.protocol import wire

    send_chunk(fc, fid, 0, first)
    send_chunk(fc, fid, MIB, second)
    fc.send(wire.SYNC)
    acked(fc, 2)
    send_chunk(fc, fid, 0, other)


def test_a_chunk_rewritten_after_its_ack_never_makes_a_wrong_file(tmp_path: Path, server, client) -> None:
    """The review's attack: acknowledged chunks, then chunk 0 again with other
    bytes, and a commit before the stream's next flush (kept busy so it does
    not flush on idle).  Before the fence the commit checked the record's old
    digest and stored the new bytes under it."""
    from fastxfer.client.connect import open_stream
    from fastxfer.protocol import layout

    first, second, other = os.urandom(MIB), os.urandom(MIB), os.urandom(MIB)
    control, welcome = control_session(client, server)
    fc = None
    try:
        fid = put(control, "fenced.bin", 2 * MIB)
        filler = put(control, "filler.bin", 64 * MIB)
        fc = open_stream("127.0.0.1", server.port, welcome)
        acked_then_rewritten(fc, fid, first, second, other)

        def busy() -> None:  # a chunk of another file every 20 ms: the stream never idles
            for i in range(12):
                send_chunk(fc, filler, i * MIB, bytes(MIB))
                time.sleep(0.02)

        keep_busy = threading.Thread(target=busy)
        keep_busy.start()
        time.sleep(0.05)
        digest = layout.file_digest(2 * MIB, MIB, [hashlib.sha256(c).digest() for c in (first, second)])
        reply = control.call({"t": "commit", "files": [{"fid": fid.hex(), "digest": digest.hex()}]}, "committed")
        keep_busy.join()
    finally:
        if fc is not None:
            fc.close()
        control.close()
    stored = server.root / "laptop" / "fenced.bin"
    answer = reply["files"][0]
    assert answer["t"] == "error", (answer, hashlib.sha256(stored.read_bytes()).hexdigest())
    assert "does not match" in answer["message"]
    assert not stored.exists()
    assert fx(server.home, "check", "--root", str(server.root), timeout=60).returncode == 0


def test_a_commit_waits_for_the_stream_and_stores_what_is_recorded(tmp_path: Path, server, client) -> None:
    """The same rewrite, committed with the digest of the bytes really sent
    last: stored, and the stored bytes are those bytes."""
    from fastxfer.client.connect import open_stream
    from fastxfer.protocol import layout

    first, second, other = os.urandom(MIB), os.urandom(MIB), os.urandom(MIB)
    control, welcome = control_session(client, server)
    fc = None
    try:
        fid = put(control, "rewritten.bin", 2 * MIB)
        fc = open_stream("127.0.0.1", server.port, welcome)
        acked_then_rewritten(fc, fid, first, second, other)
        time.sleep(0.05)
        digest = layout.file_digest(2 * MIB, MIB, [hashlib.sha256(c).digest() for c in (other, second)])
        reply = control.call({"t": "commit", "files": [{"fid": fid.hex(), "digest": digest.hex()}]}, "committed")
    finally:
        if fc is not None:
            fc.close()
        control.close()
    assert reply["files"][0]["t"] == "ok", reply
    assert (server.root / "laptop" / "rewritten.bin").read_bytes() == other + second
