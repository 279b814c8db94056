"""Tampering, garbage, escapes: refused cleanly, nothing wrong committed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from conftest import files_under, fx, make_client, make_file, sha256_file
from relay import Relay, flip_at


def control_session(client, server):
    """A real authenticated control session, driven by hand."""
    from fastxfer.trust import identity
    from fastxfer.client.connect import ControlClient
    from fastxfer.trust.pins import PinList

    ident = identity.load_or_create(client.home)
    control = ControlClient("127.0.0.1", server.port, ident, PinList(client.home))
    return control, control.connect()


def put(control, path: str, size: int = 10) -> dict:
    reply = control.call({"t": "put", "files": [
        {"path": path, "size": size, "mtime_ns": 1, "mode": 0o644, "chunk": 1 << 20}]}, "put_ok")
    return reply["files"][0]


def test_flipped_byte_on_a_stream_is_caught_and_resent(tmp_path: Path, server, client) -> None:
    relay = Relay(server.port, flip_at(300_000))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        f = make_file(tmp_path / "data.bin", 6 << 20)
        done = fx(client.home, "send", f, "--to", f"127.0.0.1:{relay.port}", "--streams", "2",
                  "--chunk-size", "1M")
    finally:
        relay.close()
    assert done.returncode == 0, done.stderr
    assert sha256_file(server.root / "laptop" / "data.bin") == sha256_file(f)
    assert "failed authentication" in server.log_text()


def test_tampering_every_stream_fails_without_committing(tmp_path: Path, server, client) -> None:
    relay = Relay(server.port, flip_at(100_000, times=10**9))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        f = make_file(tmp_path / "data.bin", 4 << 20)
        # Every reopened stream is tampered with too: two reconnections show the send gives up.
        done = fx(client.home, "send", f, "--to", f"127.0.0.1:{relay.port}", "--streams", "2",
                  "--chunk-size", "1M", timeout=120, env={"FASTXFER_RECONNECTS": "2"})
    finally:
        relay.close()
    assert done.returncode == 4
    assert "send again to resume" in done.stderr.replace("run the same send again", "send again")
    assert not (server.root / "laptop" / "data.bin").exists()


def test_flipped_byte_in_control_channel_stops_the_send(tmp_path: Path, server, client) -> None:
    relay = Relay(server.port, flip_at(600, streams_only=False))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        done = fx(client.home, "send", make_file(tmp_path / "d.bin", 1 << 20),
                  "--to", f"127.0.0.1:{relay.port}")
    finally:
        relay.close()
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert files_under(server.root) in ([], ["laptop"])


@pytest.mark.parametrize("path", ["../other/x", "/etc/passwd", "a/../../x", "a//b", "..", "a/\x00b"])
def test_paths_outside_the_client_folder_are_refused(tmp_path: Path, server, client, path: str) -> None:
    control, _ = control_session(client, server)
    try:
        answer = put(control, path)
    finally:
        control.close()
    assert answer["t"] == "error" and answer["code"] == "refused"
    assert files_under(server.root) == []


def test_symlink_in_the_store_cannot_lead_outside(tmp_path: Path, server, client) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.root / "laptop").mkdir(parents=True)
    os.symlink(outside, server.root / "laptop" / "link")
    done = client.send(server, make_file(tmp_path / "x.bin", 1000), "--dest", "link")
    # The planted link is in the way of a folder: it is set aside (never
    # followed) and a real folder takes its place.
    assert done.returncode == 0, done.stderr
    assert list(outside.iterdir()) == []
    stored = server.root / "laptop" / "link"
    assert stored.is_dir() and not stored.is_symlink()
    assert (stored / "x.bin").read_bytes() == (tmp_path / "x.bin").read_bytes()


def test_one_client_cannot_touch_anothers_files(tmp_path: Path, server, client) -> None:
    other = make_client(tmp_path, server, "other")
    f = make_file(tmp_path / "mine.bin", 5000)
    assert other.send(server, f).returncode == 0
    control, _ = control_session(client, server)
    try:
        for path in ["../other/mine.bin", "../../root/other/mine.bin"]:
            assert put(control, path)["code"] == "refused"
    finally:
        control.close()
    assert (server.root / "other" / "mine.bin").read_bytes() == f.read_bytes()


def raw(server, data: bytes, wait: float = 0.5) -> bytes:
    """What the server answers a stranger's *data* (b"" when it drops the
    connection, which it may do before reading it all: a reset while sending)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return s.recv(100)
        except OSError:
            return b""


def test_garbage_and_truncated_openings_drop_only_that_connection(tmp_path: Path, server, client) -> None:
    pids = sorted(server.worker_pids())
    garbage = [
        os.urandom(5000),
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",  # a broken TLS record
        b"\x16\x03\x01",  # a truncated one
        b"FXS1\x00\x10" + os.urandom(16) + os.urandom(32),  # a forged ticket
        b"FXS1\xff\xff",  # an impossible ticket length
        b"F",
        b"",
    ]
    for data in garbage:
        answer = raw(server, data)
        assert answer == b"" or answer.startswith(b"\x15\x03"), (data[:16], answer)  # nothing, or a TLS alert
    f = make_file(tmp_path / "after.bin", 2 << 20)
    done = client.send(server, f)
    assert done.returncode == 0, done.stderr + server.log_text()
    assert sha256_file(server.root / "laptop" / "after.bin") == sha256_file(f)
    log = server.log_text()
    assert sorted(server.worker_pids()) == pids, log  # no worker died
    assert "not a fastxfer connection" in log and "not valid for this server run" in log, log


def test_bad_frames_on_an_authenticated_stream(tmp_path: Path, server, client) -> None:
    from fastxfer.protocol import wire
    from fastxfer.client.connect import open_stream

    control, welcome = control_session(client, server)
    try:
        fid = bytes.fromhex(put(control, "victim.bin", size=1000)["fid"])
        # a frame announcing more than the limit
        fc = open_stream("127.0.0.1", server.port, welcome)
        conn, sealer = fc.conn, fc.sealer
        conn.send((wire.MAX_FRAME + 1).to_bytes(4, "big") + bytes([wire.DATA]))
        conn.close()
        # a frame cut off in the middle, then the connection vanishes
        fc = open_stream("127.0.0.1", server.port, welcome)
        conn, sealer = fc.conn, fc.sealer
        header = wire.data_header(fid, 0, 1000)
        body = sealer.seal(bytes([wire.DATA]) + header, b"x" * 1000 + b"\x00" * 32)
        conn.send(wire.frame_prefix(wire.DATA, header, 1032) + body[:500])
        conn.close()
        # a whole frame whose tag does not check out
        fc = open_stream("127.0.0.1", server.port, welcome)
        conn, sealer = fc.conn, fc.sealer
        bad = bytearray(sealer.seal(bytes([wire.DATA]) + header, b"y" * 1000 + b"\x00" * 32))
        bad[-1] ^= 1
        conn.send(wire.frame_prefix(wire.DATA, header, 1032) + bytes(bad))
        conn.close()
        # a chunk that lies about its digest, sealed correctly
        fc = open_stream("127.0.0.1", server.port, welcome)
        conn, sealer = fc.conn, fc.sealer
        conn.send(wire.frame_prefix(wire.DATA, header, 1032),
                  sealer.seal(bytes([wire.DATA]) + header, b"z" * 1000 + b"\x00" * 32))
        conn.close()
        time.sleep(0.5)
        # the commit of that transfer must fail: nothing is recorded
        reply = control.call({"t": "commit", "files": [{"fid": fid.hex(), "digest": "00" * 32}]}, "committed")
        assert reply["files"][0]["t"] == "error"
    finally:
        control.close()
    assert not (server.root / "laptop" / "victim.bin").exists()
    log = server.log_text()
    assert "out of bounds" in log and "failed authentication" in log and "digest does not match" in log
    f = make_file(tmp_path / "ok.bin", 1 << 20)
    assert client.send(server, f).returncode == 0


def test_small_files_that_never_went_through_are_each_reported(tmp_path: Path, server, client) -> None:
    top = tmp_path / "smalls"
    for i in range(20):
        make_file(top / f"f{i}", 5000, seed=i)
    relay = Relay(server.port, flip_at(10, times=10**9))  # every stream damaged from its start
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        # No reopened stream gets through either: one reconnection shows the send gives up.
        done = fx(client.home, "send", top, "--to", f"127.0.0.1:{relay.port}", "--streams", "1", timeout=120,
                  env={"FASTXFER_RECONNECTS": "1"})
    finally:
        relay.close()
    assert done.returncode == 9, done.stderr  # the folder itself was made
    assert "0 files stored and verified, 0 unchanged, 20 failed" in done.stdout
    assert "(20 entries: " in done.stderr and len(done.stderr.splitlines()) == 1  # one cause, one line
    assert not (server.root / "laptop" / "smalls" / "f0").exists()
