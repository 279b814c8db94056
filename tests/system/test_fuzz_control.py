"""Hostile control messages sent to a real server over its real TLS channel:
every request kind with its fields gone wrong, and messages no client
would send.  Each gets a reply (an answer or a documented error) or the
end of that session, never a traceback in the server's log; its workers
keep serving and a real send still works afterwards."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_file
from hostile import TEMPLATES, VALUES, mutated
from test_hostile import control_session

from fastxfer.errors import WIRE_CODES, FxError

CODES = {c.name for c in WIRE_CODES.values()}
ANSWERS = {"pong", "put_ok", "probe_ok", "committed", "list_ok", "receipts_ok", "sums_ok", "dirs_ok", "snap_begun",
           "snap_added", "snap_ended", "snapshots_ok", "forget_ok", "error"}


class Prober:
    """One authenticated session at a time, opened again when the server ends one."""

    def __init__(self, client, server) -> None:
        self.client, self.server = client, server
        self.control = None
        self.sessions = 0

    def ask(self, body: bytes) -> dict | None:
        """The server's reply to one raw message body, or None if it ended the session."""
        if self.control is None or self.control.chan is None:
            self.control, _ = control_session(self.client, self.server)
            self.sessions += 1
        chan = self.control.chan
        try:
            chan.conn.send(struct.pack(">I", len(body)) + body)
            reply = chan.recv(30)
        except FxError:
            self.control.drop()
            return None
        assert reply["t"] in ANSWERS, reply
        if reply["t"] == "error":
            assert reply["code"] in CODES and isinstance(reply["message"], str), reply
        return reply

    def close(self) -> None:
        if self.control is not None:
            self.control.close()


def settled(server, pids: list[int], prober: Prober, tmp_path: Path, client) -> None:
    prober.close()
    log = server.log_text()
    assert "Traceback" not in log and "unexpectedly" not in log, log[-3000:]
    assert sorted(server.worker_pids()) == pids  # no worker died or was replaced
    f = make_file(tmp_path / "after.bin", 3 << 20, seed=9)
    assert client.send(server, f).returncode == 0
    assert (server.root / "laptop" / "after.bin").read_bytes() == f.read_bytes()


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def test_requests_with_fields_gone_wrong(tmp_path: Path, server, client) -> None:
    pids = sorted(server.worker_pids())
    prober = Prober(client, server)
    answered = []

    @FUZZ
    @given(data=st.data())
    def fuzz(data) -> None:
        msg = data.draw(st.sampled_from(sorted(TEMPLATES)).flatmap(lambda kind: mutated(TEMPLATES[kind])))
        reply = prober.ask(json.dumps(msg).encode())
        answered.append(reply is not None)

    fuzz()
    assert sum(answered) > len(answered) // 2  # most were answered; the test reached the handlers
    settled(server, pids, prober, tmp_path, client)


def test_messages_no_client_sends(tmp_path: Path, server, client) -> None:
    pids = sorted(server.worker_pids())
    prober = Prober(client, server)
    odd = [b"", b"[]", b"null", b"\xff\xfe", b'{"t": 5}', b'{"t": "challenge"}', b'{"t": "auth"}', b'{"t": "welcome"}',
           b'{"t": "bye", "x": 1}', b'{"t": "' + b"a" * 3000 + b'"}', b"[" * 100_000, b'{"t": "ping", "t": "put"}',
           b'{"t": "sums", "paths": ["' + b"\\ud800" * 1000 + b'"]}', b'{"t": "put", "files": [' + b"{}," * 4000 + b"{}]}"]
    for body in odd:
        prober.ask(body)

    @FUZZ
    @given(kind=st.text(max_size=12) | st.sampled_from(sorted(TEMPLATES)),
           body=st.dictionaries(st.text(max_size=8), VALUES, max_size=5))
    def fuzz(kind: str, body: dict) -> None:
        prober.ask(json.dumps({**body, "t": kind}).encode())

    fuzz()
    assert prober.sessions > 1  # a broken protocol ends the session, and a new one is served
    settled(server, pids, prober, tmp_path, client)
