"""What one client's streams may make a worker hold in memory: bounded by
the frame budget, refused as busy beyond it, and other clients still served."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from conftest import fx, make_client, make_file, sha256_file, start_server
from relay import Relay, throttled

MiB = 1 << 20


def worker_rss(server) -> int:
    import psutil

    return sum(psutil.Process(pid).memory_info().rss for pid in server.worker_pids())


def stall_in_a_large_frame(fc, part: int, outcome: list) -> None:
    """Announce a whole 16 MiB DATA frame, send *part* of its body, then stall."""
    from fastxfer.errors import ConnectError
    from fastxfer.protocol import wire

    header = wire.data_header(os.urandom(16), 0, wire.MAX_CHUNK)
    try:
        fc.conn.send(wire.frame_prefix(wire.DATA, header, wire.MAX_CHUNK + wire.DIGEST), bytes(part))
        outcome.append("sent")
    except ConnectError:
        outcome.append("cut")  # refused: the server closed without reading the rest


def test_stalled_large_frames_hold_no_more_than_the_clients_budget(tmp_path: Path) -> None:
    from fastxfer.client.connect import ControlClient, open_stream
    from fastxfer.protocol import wire
    from fastxfer.trust import identity
    from fastxfer.trust.pins import PinList

    budget = 100 * MiB  # room for 3 streams' full 16 MiB frames and plaintexts (32 MiB + 108 B each)
    part = 12 * MiB
    streams = 24  # a 16 MiB buffer each, 12 MiB of it touched, would cost the worker 288 MiB
    server = start_server(tmp_path / "server-home", tmp_path / "root", workers=1,
                          extra=("--frame-budget", "100M"))
    fcs, control = [], None
    try:
        hostile = make_client(tmp_path, server, "laptop")
        other = make_client(tmp_path, server, "desk")
        control = ControlClient("127.0.0.1", server.port, identity.load_or_create(hostile.home),
                                PinList(hostile.home))
        welcome = control.connect()
        time.sleep(0.5)
        before = worker_rss(server)
        fcs = [open_stream("127.0.0.1", server.port, welcome) for _ in range(streams)]
        outcomes: list[str] = []
        threads = [threading.Thread(target=stall_in_a_large_frame, args=(fc, part, outcomes)) for fc in fcs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        time.sleep(0.5)
        grown = worker_rss(server) - before
        refusals = []
        for fc in fcs:
            if fc.conn.readable(0.2):
                frame = fc.receive()
                assert frame.kind == wire.ERROR
                refusals.append(wire.parse_error(bytes(frame.body)))
        log = server.log_text()
        assert grown < budget, (grown / MiB, log)
        assert len(refusals) == streams - 3, (outcomes, refusals, log)
        code, message = refusals[0]
        assert code == 10  # busy
        assert message.startswith("client laptop's streams already hold 96.00 MiB of frame buffers on this "
                                  "server (at most 100.00 MiB); try again with fewer streams"), message
        assert "stream from 127.0.0.1" in log and "refused: client laptop's streams already hold" in log
        # Another client has its own share: its send goes through while the three stall.
        f = make_file(tmp_path / "desk.bin", 24 * MiB)
        done = other.send(server, f, "--streams", "4")
        assert done.returncode == 0, done.stderr + server.log_text()
        assert sha256_file(server.root / "desk" / "desk.bin") == sha256_file(f)
    finally:
        for fc in fcs:
            fc.close()
        if control is not None:
            control.close()
        server.stop()


def test_a_send_with_more_streams_than_room_goes_on_with_fewer(tmp_path: Path) -> None:
    from fastxfer.client.connect import ControlClient, open_stream
    from fastxfer.trust import identity
    from fastxfer.trust.pins import PinList

    # 48 MiB: a stalled 16 MiB frame of this client holds 32 MiB + 108 B of it, which leaves room for
    # one stream of 4 MiB chunks (8 MiB + 108 B); the send's seven others wait, are refused and leave.
    server = start_server(tmp_path / "server-home", tmp_path / "root", workers=1,
                          extra=("--frame-budget", "48M"))
    fc = None
    try:
        client = make_client(tmp_path, server, "laptop")
        control = ControlClient("127.0.0.1", server.port, identity.load_or_create(client.home),
                                PinList(client.home))
        fc = open_stream("127.0.0.1", server.port, control.connect())
        outcome: list[str] = []
        stall_in_a_large_frame(fc, 8 * MiB, outcome)
        assert outcome == ["sent"]
        # Each stream at 10 MiB/s: the one with room is still sending when the others' 2 s wait ends.
        relay = Relay(server.port, throttled(10 * MiB))
        try:
            fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
            f = make_file(tmp_path / "big.bin", 40 * MiB)
            done = fx(client.home, "send", f, "--to", f"127.0.0.1:{relay.port}", "--streams", "8")
        finally:
            relay.close()
        log = server.log_text()
        assert done.returncode == 0, done.stderr + log
        assert sha256_file(server.root / "laptop" / "big.bin") == sha256_file(f)
        assert log.count("refused: client laptop's streams already hold") >= 1, log
    finally:
        if fc is not None:
            fc.close()
            control.close()
        server.stop()
