"""A hostile server against the real client (issue 13 item 4, the client half):
whatever malformed control answer it gives to ls, get, sums, snapshots or
send, the command ends with exit 8 and a line saying what was wrong; nonsense
on a stream ends it as a lost stream (4, retried first: here
FASTXFER_RECONNECTS=0), or fails the file (5, 6, 8). Never a traceback, and
a get leaves no file, whole or partial, behind.

The server is written here: a real TLS listener on 127.0.0.1 with an
identity of its own (pinned by the client as any server is), which makes
the real challenge and welcome of a handshake (client/connect.py,
server/control.py _authenticate) and then answers each request from a
table: a valid answer, or the malformed one a test puts there. Its stream
connections take the real opening and the keys of the welcome's secret.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import shutil
import socket
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fx, make_file
from fastxfer.errors import FxError
from fastxfer.net.conn import Channel, Conn, tls_wrap
from fastxfer.net.framed import FramedConn
from fastxfer.protocol import keys, layout, messages, wire
from fastxfer.trust import identity

TIMEOUT = 5.0  # every socket of the server; a client that hangs is a failure, not a wait
HANG_UP = "hang up"  # what a stream's answer may end with


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def welcome(features: list[str] | None = None) -> dict:
    return {"t": "welcome", "name": "laptop", "ticket": b64(os.urandom(100)), "secret": b64(os.urandom(32)),
            "max_chunk": wire.MAX_CHUNK, "features": ["reqs", "pages"] if features is None else features}


VALID = {
    "ping": {"t": "pong"},
    "list": {"t": "list_ok", "entries": [], "next": None},
    "snap_begin": {"t": "snap_begun", "id": 1, "previous": []},
    "snap_add": {"t": "snap_added", "dropped": []},
    "snap_end": {"t": "snap_ended", "id": 1, "state": "complete", "files": 0, "bytes": 0, "removed": 0},
    "dirs": {"t": "dirs_ok", "files": []},
    "snapshots": {"t": "snapshots_ok", "snapshots": []},
}


class HostileServer:
    """One control connection at a time, each request answered from ``answers``."""

    def __init__(self, home: Path) -> None:
        self.ident = identity.load_or_create(home)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.challenge: dict | None = None  # None: a valid one
        self.welcome: dict | None = None
        self.answers: dict[str, dict] = {}
        self.asked: list[str] = []
        self.unexpected: list[BaseException] = []  # what went wrong on this side
        self.handlers: list[threading.Thread] = []
        self.secret = b""
        self.reset()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def reset(self, **answers: dict) -> None:
        self.challenge = self.welcome = self.on_request = None
        self.features = ["reqs", "pages"]
        self.answers, self.asked = dict(answers), []

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(TIMEOUT)
            # A get's streams connect while its control connection is open: a thread each.
            t = threading.Thread(target=self._connection, args=(raw,), daemon=True)
            t.start()
            self.handlers.append(t)

    def _connection(self, raw: socket.socket) -> None:
        try:
            if raw.recv(1, socket.MSG_PEEK) == wire.STREAM_MAGIC[:1]:
                self._stream(Conn(raw, "client"))
            else:
                self._session(Conn(raw, "client"))
        except FxError:
            pass  # the client hung up, as it does on a malformed answer
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.unexpected.append(exc)
        finally:
            raw.close()

    def _stream(self, raw: Conn) -> None:
        """A stream opened with the ticket of the welcome: each request answered by ``on_request``."""
        size = wire.parse_open_prefix(raw.recv_exact(wire.OPEN_PREFIX))
        raw.recv_exact(size)  # this server's own ticket: the secret is the one welcomed with
        client_random, server_random = raw.recv_exact(wire.RANDOM), os.urandom(wire.RANDOM)
        raw.send(wire.encode_open_reply(server_random))
        fc = FramedConn(raw, *keys.pair(*keys.stream_keys(self.secret, client_random, server_random), "server"))
        held: list[tuple[bytes, int]] = []  # chunks received, acknowledged at the next SYNC
        while True:
            frame = fc.receive()
            kind, header, body = frame.kind, bytes(frame.header), bytes(frame.body)
            if kind in (wire.REQ, wire.REQS, wire.BUNDLE, wire.DATA) and self.on_request is not None:
                answers = self.on_request(kind, header, body)
            elif kind == wire.DATA:
                held.append(wire.parse_data_header(header, frame.sealed_len)[:2])
                answers = []
            elif kind == wire.SYNC and held:
                answers, held = [(wire.ACK, wire.ack_header(len(held)), wire.encode_acks(held))], []
            else:
                answers = []
            for answer in answers:
                if answer == HANG_UP:  # shut for writing: what was sent is read before the end
                    raw.sock.shutdown(socket.SHUT_WR)
                else:
                    fc.send(*answer)

    def _session(self, raw: Conn) -> None:
        conn = tls_wrap(raw, self.ident.server_context(), TIMEOUT, server_side=True)
        try:
            chan = Channel(conn, limit=messages.MAX_CONTROL)
            chan.send(self.challenge or {"t": "challenge", "v": 1, "nonce": b64(os.urandom(32))})
            if chan.recv(TIMEOUT).get("t") != "auth":
                return
            welcomed = self.welcome or welcome(self.features)
            self.secret = base64.b64decode(welcomed["secret"])
            chan.send(welcomed)
            while True:
                kind = chan.recv(TIMEOUT).get("t")
                self.asked.append(str(kind))
                if kind == "bye":
                    return
                chan.send(self.answers.get(kind) or VALID.get(kind)
                          or {"t": "error", "code": "refused", "message": f"{kind} is not served here"})
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(10)
        for t in self.handlers:
            t.join(2 * TIMEOUT)
        assert not self.thread.is_alive() and not any(t.is_alive() for t in self.handlers)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    top = tmp_path_factory.mktemp("hostile")
    srv = HostileServer(top / "server-home")
    home = top / "client"
    fx(home, "id", check=True)
    fx(home, "pin", srv.address, identity.format_fp(srv.ident.fingerprint), check=True)
    srv.home, srv.top = home, top
    yield srv
    srv.close()
    assert not srv.unexpected, srv.unexpected


def run(srv: HostileServer, *args: str) -> tuple[int, str]:
    done = fx(srv.home, *args, timeout=30, env={"FASTXFER_RECONNECTS": "0"})
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


FILE = {"path": "d/x", "kind": "file", "size": 3000, "mtime_ns": 1_700_000_000 * 10**9, "mode": 0o644,
        "sha256": "ab" * 32, "chunk": 1 << 20, "digest": "cd" * 32}
DIR = {"path": "d", "kind": "dir", "size": 0, "mtime_ns": 1_700_000_000 * 10**9, "mode": 0o755}
LINK = {"path": "d/l", "kind": "link", "size": 0, "mtime_ns": 1_700_000_000 * 10**9, "mode": 0o777, "target": "x"}


def listing(*entries: dict, next: str | None = None) -> dict:
    return {"t": "list_ok", "entries": list(entries), "next": next}


@pytest.mark.parametrize("args, setup, said", [
    (["ls", "d"], {"list": listing({**FILE, "size": "3000"})}, "with size '3000'"),
    (["ls", "d"], {"list": listing({**FILE, "path": "\ud800"})}, "no client can have sent"),
    (["ls", "d"], {"list": listing(FILE, next="61")}, "broken 'next' cursor"),
    (["ls", "d"], {"list": listing({**FILE, "sha256": "\n\x1b[2Jgotcha"})}, "broken sha256"),
    (["ls", "d"], {"list": {"t": "list_ok", "entries": {"d/x": FILE}}}, "'entries' must be a list"),
    (["ls", "d", "--versions"], {"list": listing(FILE)}, "without its version"),
    (["ls", "d"], {"welcome": {**welcome(), "ticket": b64(os.urandom(700))}}, "malformed welcome"),
    (["ls", "d"], {"welcome": {**welcome(), "name": "../x"}}, "malformed welcome"),
    (["ls", "d"], {"challenge": {"t": "challenge", "nonce": 32}}, "'nonce' must be a string"),
    (["sums", "d"], {"list": listing(FILE), "sums": {"t": "sums_ok", "files": [
        {"path": "d/x", "status": "ok", "sha256": "zz"}], "next": None}}, "'sha256' must be 32 bytes"),
    (["snapshots"], {"snapshots": {"t": "snapshots_ok", "snapshots": [7]}}, "expected an object"),
    (["snapshots"], {"snapshots": {"t": "snapshots_ok", "snapshots": [
        {"id": 1, "time_ns": 5, "files": 1, "bytes": 1, "state": "\ud800", "paths": []}]}}, "broken field"),
])
def test_a_malformed_answer_is_exit_8(hostile: HostileServer, args: list[str], setup: dict, said: str) -> None:
    hostile.reset(**{k: v for k, v in setup.items() if k not in ("welcome", "challenge")})
    hostile.welcome, hostile.challenge = setup.get("welcome"), setup.get("challenge")
    code, err = run(hostile, *args, "--from", hostile.address)
    assert code == 8, err
    assert said in err, err


@pytest.mark.parametrize("entries, said", [
    ([DIR, {**FILE, "mode": None}], "without its mode"),
    ([DIR, {**FILE, "mtime_ns": 2**70}], "mtime_ns"),
    ([DIR, {**LINK, "target": "\udfff"}], "broken target"),
    ([DIR, {**FILE, "path": "d/../../x"}], "no client can have sent"),
    ([DIR, {**FILE, "path": "elsewhere/x"}], "outside the asked path"),
])
def test_a_get_told_nonsense_makes_nothing(hostile: HostileServer, entries: list[dict], said: str) -> None:
    hostile.reset(list=listing(*entries))
    work = hostile.top / "get-work"
    work.mkdir(exist_ok=True)
    before = sorted(os.listdir(work))
    code, err = run(hostile, "get", "d", "--from", hostile.address, "-o", str(work / "dest"))
    assert code == 8, err
    assert said in err, err
    assert sorted(os.listdir(work)) == before  # no DEST, no temporary beside it


@pytest.mark.parametrize("size, answer, said", [
    (100, {"probe": {"t": "probe_ok", "files": []}}, "different number of files"),
    (100, {"probe": {"t": "probe_ok", "files": [None]}}, "expected an object"),
    (400_000, {"put": {"t": "put_ok", "files": [{"t": "ok", "status": "new", "fid": "zz", "chunk": 1 << 20,
                                                  "have": ""}]}}, "'fid' must be 16 bytes"),
    (400_000, {"put": {"t": "put_ok", "files": [{"t": "ok", "status": "new", "fid": "11" * 16, "chunk": 3,
                                                  "have": ""}]}}, "'chunk' must be an integer"),
    (400_000, {"put": {"t": "put_ok", "files": [{"t": "ok", "status": "new", "fid": "11" * 16,
                                                  "chunk": 1 << 20, "have": "\ud800"}]}}, "malformed chunk list"),
])
def test_a_send_told_nonsense_is_exit_8(hostile: HostileServer, size: int, answer: dict, said: str) -> None:
    hostile.reset(**answer)
    f = make_file(hostile.top / "send-src" / f"f{size}", size)
    code, err = run(hostile, "send", str(f), "--to", hostile.address)
    assert code == 8, err
    assert said in err, err


def mutated(valid: dict):
    """*valid* with one field (at any depth) replaced by what no server may send, or removed."""
    weird = st.sampled_from([None, True, 1.5, -1, 2**64, "", "\ud800", "\n\x1b[2J", [], {}, [None], "x" * 5000])

    @st.composite
    def one(draw):
        reply = copy.deepcopy(valid)
        spots, todo = [], [reply]
        while todo:
            obj = todo.pop()
            keys = list(obj) if isinstance(obj, dict) else range(len(obj))
            spots += [(obj, k) for k in keys if k != "t"]
            todo += [obj[k] for k in keys if isinstance(obj[k], (dict, list))]
        obj, key = draw(st.sampled_from(spots))
        if draw(st.booleans()):
            del obj[key]
        else:
            obj[key] = copy.deepcopy(draw(weird))
        return reply
    return one()


SYSTEM = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))


@SYSTEM
@given(reply=mutated(listing(DIR, FILE, LINK)))
def test_ls_of_any_listing_ends_cleanly(hostile: HostileServer, reply: dict) -> None:
    hostile.reset(list=reply)
    code, err = run(hostile, "ls", "d", "--from", hostile.address)
    assert code in (0, 6, 8), err


@SYSTEM
@given(reply=mutated(listing(DIR, {**DIR, "path": "d/sub"}, LINK)))
def test_get_of_any_listing_ends_cleanly(hostile: HostileServer, reply: dict) -> None:
    hostile.reset(list=reply)
    work = hostile.top / "get-fuzz"
    work.mkdir(exist_ok=True)
    dest = work / "dest"
    code, err = run(hostile, "get", "d", "--from", hostile.address, "-o", str(dest))
    assert code in (0, 6, 7, 8, 9), err
    if code == 8:
        assert not os.path.lexists(dest), err
    assert not [n for n in os.listdir(work) if n.startswith(".fastxfer-get-")]
    if os.path.lexists(dest):
        for folder, _dirs, names in os.walk(dest):
            assert not [n for n in names if n.startswith(".fastxfer-get-")], (folder, names)
        shutil.rmtree(dest)


CONTENT = b"c" * 3000
STORED = {**FILE, "digest": layout.file_digest(len(CONTENT), 1 << 20, [hashlib.sha256(CONTENT).digest()]).hex()}


def datas(asks, status: int = 0, code: int = 0, payload: bytes = CONTENT + hashlib.sha256(CONTENT).digest(),
          count: int | None = None, batch_offset: int = 0):
    batch, asked = asks
    body = b"".join(a.tag + bytes([status, code]) + len(payload).to_bytes(4, "big") + payload for a in asked)
    return [(wire.DATAS, wire.datas_header(batch + batch_offset, len(asked) if count is None else count), body)]


# How a stream answers a request for the one listed file: all wrong, in a different way each.
ANSWERS = {
    "a wrong digest": lambda kind, h, b: datas(wire.parse_reqs(h, b), payload=b"x" * 3000 + b"\0" * 32),
    "too few answers": lambda kind, h, b: datas(wire.parse_reqs(h, b), count=0),
    "another batch": lambda kind, h, b: datas(wire.parse_reqs(h, b), batch_offset=7),
    "a refusal": lambda kind, h, b: datas(wire.parse_reqs(h, b), status=1, code=6, payload=b"\xff\xfe no"),
    "an unknown code": lambda kind, h, b: datas(wire.parse_reqs(h, b), status=1, code=200, payload=b"?"),
    "an acknowledgement": lambda kind, h, b: [(wire.ACK, wire.ack_header(0), b"")],
    "an error": lambda kind, h, b: [(wire.ERROR, b"", bytes([8]) + "\udcff".encode(errors="surrogateescape"))],
    "an empty error": lambda kind, h, b: [(wire.ERROR, b"", b"")],
    "a NAK of no request": lambda kind, h, b: [(wire.NAK, b"\x07" * 16, b"\x06gone"), HANG_UP],
    "a NAK with an unknown code": lambda kind, h, b: [(wire.NAK, h[:16], b"\xc8")],
    "a short chunk": lambda kind, h, b: [(wire.DATA, wire.data_header(h[:16], 0, 10),
                                          b"c" * 10 + hashlib.sha256(b"c" * 10).digest())],
    "zeros": lambda kind, h, b: [(wire.ZEROS, wire.zeros_header(h[:16], 0, 3000), b"")],
}
BATCHED = {k for k in ANSWERS if k not in ("a short chunk", "zeros", "a NAK with an unknown code")}


@pytest.mark.parametrize("how", sorted(ANSWERS))
def test_a_get_whose_streams_answer_nonsense_keeps_nothing(hostile: HostileServer, how: str) -> None:
    hostile.reset(list=listing(DIR, STORED))
    hostile.features = ["reqs", "pages"] if how in BATCHED else ["pages"]  # REQS, or one REQ per chunk
    hostile.on_request = ANSWERS[how]
    dest = hostile.top / "streams" / how.replace(" ", "-")
    dest.parent.mkdir(exist_ok=True)
    code, err = run(hostile, "get", "d", "--from", hostile.address, "-o", str(dest))
    assert code in (4, 5, 6, 8), err  # lost (given up at once), not as stored, refused, or broken
    assert "unexpectedly" not in err, err
    assert [f for _d, _s, files in os.walk(dest.parent) for f in files] == []  # no file, whole or partial


def put_ok(size: int) -> dict:
    return {"t": "put_ok", "files": [{"t": "ok", "fid": "11" * 16, "chunk": 1 << 20, "status": "new", "have": ""}]}


def bundle_ack(statuses: list[tuple[int, int, bytes]], number: int | None = None, extra: bytes = b""):
    def answer(kind, header, body):
        if kind != wire.BUNDLE:
            return []
        bundle = wire.parse_bundle(header, memoryview(body))[0]
        text = b"".join(struct.pack(">BBH", status, code, len(m)) + m for status, code, m in statuses)
        head = struct.pack(">II", bundle if number is None else number, len(statuses))
        return [(wire.BUNDLE_ACK, head, text + extra), HANG_UP]
    return answer


@pytest.mark.parametrize("size, answers, stream, codes", [
    (400_000, {"commit": {"t": "committed", "files": [{"t": "ok", "path": "f", "status": "failed"}]}}, None, (8,)),
    (400_000, {"commit": {"t": "committed", "files": []}}, None, (8,)),
    (400_000, {"commit": {"t": "committed", "files": [{"t": "ok", "status": "stored", "version": 7}]},
               "snap_end": {"t": "snap_ended", "state": "\ud800"}}, None, (0,)),
    (400_000, {}, lambda kind, h, b: [(wire.ACK, wire.ack_header(1), wire.encode_acks([(b"\x09" * 16, 0)])), HANG_UP]
     if kind == wire.DATA else [], (4, 9)),
    (400_000, {}, lambda kind, h, b: [(wire.NAK, h[:16], b"\x06\xff gone")] if kind == wire.DATA else [], (6, 9)),
    (100, {"probe": {"t": "probe_ok", "files": [{"t": "ok", "status": "changed"}]}}, bundle_ack([]), (4, 9)),
    (100, {"probe": {"t": "probe_ok", "files": [{"t": "ok", "status": "changed"}]}},
     bundle_ack([(2, 200, b"\xff")]), (8,)),
    (100, {"probe": {"t": "probe_ok", "files": [{"t": "ok", "status": "changed"}]}},
     bundle_ack([(0, 0, b"")], extra=b"\x03"), (4, 9)),
    (100, {"probe": {"t": "probe_ok", "files": [{"t": "ok", "status": "changed"}]}},
     bundle_ack([(0, 0, b"")], number=77), (4, 9)),
])
def test_a_send_whose_server_answers_nonsense_after_its_streams(hostile: HostileServer, size: int, answers: dict,
                                                                stream, codes: tuple[int, ...]) -> None:
    hostile.reset(put=put_ok(size), **answers)
    hostile.on_request = stream
    f = make_file(hostile.top / "send-streams" / f"f{size}", size)
    code, err = run(hostile, "send", str(f), "--to", hostile.address, "--streams", "1")
    assert code in codes, err
    assert "unexpectedly" not in err, err
