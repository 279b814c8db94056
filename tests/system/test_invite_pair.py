"""Pairing on a real server: `fastxfer invite` there, `fastxfer pair` from a
fresh client home, then a send with no fingerprint typed; a wrong code, an
expired one, and a man in the middle with a certificate of its own."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
from pathlib import Path

from conftest import assert_code_not_in, fx, make_file

from fastxfer.errors import FxError
from fastxfer.net.conn import Channel, Conn, connect, tls_wrap
from fastxfer.trust import identity
from fastxfer.protocol import pairing


def invite(server, name: str = "laptop", *args: str) -> str:
    done = fx(server.home, "invite", "--name", name, *args, check=True)
    code = done.stdout.strip()
    assert re.fullmatch(r"\d{1,4}-[a-z]{3,8}-[a-z]{3,8}", code), done.stdout  # the code alone on stdout
    assert "fastxfer pair" in done.stderr and code in done.stderr
    return code


def authorized(server) -> dict[str, str]:
    path = server.home / "clients.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pins(home: Path) -> dict[str, str]:
    path = home / "pins.json"
    return json.loads(path.read_text()) if path.exists() else {}


def assert_code_not_logged(server, code: str) -> None:
    log = server.log_text()
    assert "Traceback" not in log
    assert_code_not_in(log, code)


def test_invite_pair_then_send_with_no_fingerprint_typed(tmp_path: Path, server) -> None:
    code = invite(server)
    assert stat.S_IMODE(os.stat(server.home / "invites.json").st_mode) == 0o600
    home = tmp_path / "laptop"
    done = fx(home, "pair", server.address, code)
    assert done.returncode == 0, done.stderr
    assert "paired" in done.stdout and "laptop" in done.stdout and server.fingerprint in done.stdout
    mine = fx(home, "id", check=True).stdout.strip()
    assert authorized(server) == {identity.parse_fp(mine).hex(): "laptop"}
    assert pins(home) == {server.address: identity.parse_fp(server.fingerprint).hex()}

    f = make_file(tmp_path / "data" / "photo.bin", 3 << 20, seed=4)
    sent = fx(home, "send", f, "--to", server.address)
    assert sent.returncode == 0, sent.stderr
    assert (server.root / "laptop" / "photo.bin").read_bytes() == f.read_bytes()
    got = fx(home, "get", "photo.bin", "-o", tmp_path / "back", "--from", server.address)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back").read_bytes() == f.read_bytes()

    again = fx(tmp_path / "other", "pair", server.address, code)  # single use
    assert again.returncode == 3 and "already used" in again.stderr
    assert pins(tmp_path / "other") == {} and len(authorized(server)) == 1
    assert_code_not_logged(server, code)


def test_a_wrong_code_fails_and_uses_the_invitation_up(tmp_path: Path, server) -> None:
    code = invite(server)
    number, first, second = code.split("-")
    wrong = "-".join([number, first, next(w for w in pairing.WORDS if w != second)])
    home = tmp_path / "laptop"
    typo = fx(home, "pair", server.address, f"{number}-{first}-zzzzq")
    assert typo.returncode == 2 and "not one of the code words" in typo.stderr  # nothing sent, nothing used
    done = fx(home, "pair", server.address, wrong)
    assert done.returncode == 3, done.stderr
    assert "code is wrong" in done.stderr and "nothing was pinned" in done.stderr
    assert "Traceback" not in done.stderr
    assert pins(home) == {} and authorized(server) == {}
    right = fx(home, "pair", server.address, code)  # burnt by the wrong guess
    assert right.returncode == 3 and "already used" in right.stderr
    assert pins(home) == {} and authorized(server) == {}
    assert fx(home, "send", make_file(tmp_path / "a.bin", 10), "--to", server.address).returncode == 3
    unknown = fx(home, "pair", server.address, f"{int(number) % 99 + 1}-{first}-{second}")
    assert unknown.returncode == 3 and "is open on this server" in unknown.stderr
    assert_code_not_logged(server, code)


def test_an_expired_code_fails(tmp_path: Path, server) -> None:
    code = invite(server, "laptop", "--valid-for", "5m")
    book = json.loads((server.home / "invites.json").read_text())
    entry = book[code.split("-")[0]]
    entry["expires"] -= 5 * 60 + 30  # as if 5.5 minutes had passed
    (server.home / "invites.json").write_text(json.dumps(book))
    home = tmp_path / "laptop"
    done = fx(home, "pair", server.address, code)
    assert done.returncode == 3 and "expired 30 s ago" in done.stderr, done.stderr
    assert pins(home) == {} and authorized(server) == {}


class Middle:
    """A man in the middle on 127.0.0.1: it ends the client's TLS with a
    certificate of its own and speaks to the real server; *swap*: it puts its
    own certificate and signature into the client's pair message (so the
    server checks its proof, and the PAKE runs with the client's message)."""

    def __init__(self, server, ident: identity.Identity, swap: bool) -> None:
        self.server, self.ident, self.swap = server, ident, swap
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.replies: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock, _ = self.listener.accept()
        client = tls_wrap(Conn(sock), self.ident.server_context(), 10, server_side=True)
        upstream = tls_wrap(connect("127.0.0.1", self.server.port, 10), self.ident.client_context(), 10, False)
        c, s = Channel(client), Channel(upstream)
        try:
            challenge = s.recv(10)
            c.send(challenge)
            msg = c.recv(10)
            if self.swap:
                import base64

                nonce = base64.b64decode(challenge["nonce"])
                server_fp = identity.parse_fp(self.server.fingerprint)
                sig = self.ident.sign(identity.auth_message(nonce, server_fp, self.ident.fingerprint))
                msg = {**msg, "cert": base64.b64encode(self.ident.cert_der).decode(),
                       "sig": base64.b64encode(sig).decode()}
            s.send(msg)
            while True:  # whatever the server says next goes to the client, and back
                reply = s.recv(10)
                self.replies.append(reply)
                c.send(reply)
                s.send(c.recv(10))
        except FxError:
            pass
        finally:
            client.close()
            upstream.close()
            self.listener.close()


def test_a_man_in_the_middle_with_its_own_certificate_gets_nothing(tmp_path: Path, server) -> None:
    fx(tmp_path / "mallory", "id", check=True)
    mallory = identity.load_or_create(tmp_path / "mallory")
    home = tmp_path / "laptop"
    code = invite(server)

    # Relayed as it is: the client's signature covers the certificate it saw,
    # so the server refuses the proof before it touches the invitation.
    middle = Middle(server, mallory, swap=False)
    done = fx(home, "pair", f"127.0.0.1:{middle.port}", code)
    middle.thread.join(10)
    assert done.returncode == 3 and "client authentication failed" in done.stderr, done.stderr
    assert pins(home) == {} and authorized(server) == {}

    # Its own proof in the client's pair message: the server runs the PAKE (and
    # uses the invitation up), but with the wrong fingerprints on both sides
    # the keys differ; the client sends no confirmation and pins nothing.
    middle = Middle(server, mallory, swap=True)
    done = fx(home, "pair", f"127.0.0.1:{middle.port}", code)
    middle.thread.join(10)
    assert done.returncode == 3 and "nothing was pinned" in done.stderr, done.stderr
    assert [r["t"] for r in middle.replies] == ["pair_ok"]
    assert pins(home) == {} and authorized(server) == {}
    assert "hung up" in server.log_text()

    # The real server, directly, with a new code: paired.
    ok = fx(home, "pair", server.address, invite(server))
    assert ok.returncode == 0, ok.stderr
    assert list(authorized(server).values()) == ["laptop"] and list(pins(home)) == [server.address]


def test_hostile_pairing_messages_get_an_error_or_the_end_never_a_traceback(tmp_path: Path, server) -> None:
    """The pre-auth pairing path fuzzed on a real server: a pair message with
    fields gone wrong (with a valid proof and an open invitation each time,
    so that mutations reach every step), then a hostile confirmation or
    another message in its place."""
    import base64
    import json as js
    import struct

    from hypothesis import HealthCheck, given, settings, strategies as st

    from hostile import VALUES, mutated
    from fastxfer.errors import WIRE_CODES
    from fastxfer.trust.invites import InviteBook
    from fastxfer.trust.pake import Pake

    codes = {c.name for c in WIRE_CODES.values()}
    pids = sorted(server.worker_pids())
    ident = identity.load_or_create(tmp_path / "fuzzer")
    server_fp = identity.parse_fp(server.fingerprint)
    book = InviteBook(server.home)
    open_codes = [book.create("fuzz").code for _ in range(45)]
    seen: list[str] = []

    # Drawn before the connection opens (a draw that overruns must not leave
    # one half-made); the placeholders become the connection's real values.
    cert = base64.b64encode(ident.cert_der).decode()
    template = {"t": "pair", "invite": "INVITE", "cert": cert, "sig": "SIG", "pake": "PAKE"}

    def exchange(pair_msg: dict, second: dict) -> None:
        conn = tls_wrap(connect("127.0.0.1", server.port, 10), ident.client_context(), 10, False)
        chan = Channel(conn)
        try:
            nonce = base64.b64decode(chan.recv(10)["nonce"])
            code = open_codes.pop() if open_codes else pairing.code_from(1, 1)
            sig = ident.sign(identity.auth_message(nonce, server_fp, ident.fingerprint))
            real = {"INVITE": code.number, "SIG": base64.b64encode(sig).decode(),
                    "PAKE": base64.b64encode(Pake(True, code.password, ident.fingerprint, server_fp).outbound)
                    .decode()}
            pair_msg = {k: real.get(v, v) if isinstance(v, str) else v for k, v in pair_msg.items()}
            for msg in (pair_msg, second):
                body = js.dumps(msg).encode()
                conn.send(struct.pack(">I", len(body)) + body)
                reply = chan.recv(10)
                seen.append(reply["t"])
                assert reply["t"] in ("pair_ok", "error"), reply
                if reply["t"] == "error":
                    assert reply["code"] in codes and isinstance(reply["message"], str), reply
                    return
        except FxError:
            seen.append("closed")
        finally:
            conn.close()

    confirm = {"t": "pair_confirm", "confirm": base64.b64encode(b"\0" * 32).decode()}  # well formed, wrong
    second = st.one_of(
        st.just(confirm), mutated(confirm),
        st.fixed_dictionaries({"t": st.sampled_from(["put", "auth", "pair", "bye", "error", "paired"])}),
        st.dictionaries(st.text(max_size=4), VALUES, max_size=3),
    )

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def fuzz(data) -> None:
        keep = data.draw(st.booleans())  # the pair message as it is, to reach the confirmation
        exchange(template if keep else data.draw(mutated(template, ("invite", "pake", "cert", "sig"))),
                 data.draw(second))

    fuzz()
    log = server.log_text()
    assert "Traceback" not in log and "unexpectedly" not in log, log[-3000:]
    assert sorted(server.worker_pids()) == pids
    assert authorized(server) == {}
    assert seen.count("pair_ok") >= 8 and seen.count("error") >= 30, seen
    home = tmp_path / "laptop"
    assert fx(home, "pair", server.address, invite(server)).returncode == 0
