"""Attacks on pairing, with a hand-written client against a real server:
racing connections for one invitation, a client that vanishes or replays,
probes of the invitation numbers, oversized messages, concurrent pairings
that must all be kept, and the trust files' writes (symlinks planted in
the state folder, a stale temporary file)."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
import threading
from pathlib import Path

from conftest import assert_code_not_in, fx

from fastxfer.errors import FxError
from fastxfer.net.conn import Channel, connect, tls_wrap
from fastxfer.protocol import pairing
from fastxfer.trust import identity
from fastxfer.trust.invites import InviteBook
from fastxfer.trust.pake import Pake


def authorized(server) -> dict[str, str]:
    path = server.home / "clients.json"
    return json.loads(path.read_text()) if path.exists() else {}


class Pairer:
    """One pairing connection, message by message, as `fastxfer pair` would
    speak it or not."""

    def __init__(self, server, ident: identity.Identity) -> None:
        self.server, self.ident = server, ident
        self.server_fp = identity.parse_fp(server.fingerprint)
        self.conn = tls_wrap(connect("127.0.0.1", server.port, 10), ident.client_context(), 10, False)
        self.chan = Channel(self.conn)
        self.nonce = base64.b64decode(self.chan.recv(10)["nonce"])
        self.pake: Pake | None = None

    def pair_msg(self, code: pairing.Code, sig: bytes | None = None) -> dict:
        self.pake = Pake(True, code.password, self.ident.fingerprint, self.server_fp)
        sig = sig if sig is not None else self.ident.sign(
            identity.auth_message(self.nonce, self.server_fp, self.ident.fingerprint))
        return {"t": "pair", "invite": code.number, "cert": base64.b64encode(self.ident.cert_der).decode(),
                "sig": base64.b64encode(sig).decode(), "pake": base64.b64encode(self.pake.outbound).decode()}

    def send(self, msg: dict) -> None:
        self.chan.send(msg)

    def recv(self) -> dict:
        try:
            return self.chan.recv(10)
        except FxError:
            return {"t": "closed"}

    def confirm_for(self, code: pairing.Code, ok: dict) -> dict:
        """The pair_confirm this client sends after *ok*, given *code*."""
        server_msg = base64.b64decode(ok["pake"])
        key = self.pake.finish(server_msg)
        mac = pairing.confirmation(key, pairing.CLIENT_ROLE, self.nonce, self.pake.outbound, server_msg,
                                   self.server_fp, self.ident.fingerprint, ok["name"])
        return {"t": "pair_confirm", "confirm": base64.b64encode(mac).decode()}

    def close(self) -> None:
        self.conn.close()


def assert_no_secret_logged(server, *codes: pairing.Code) -> None:
    log = server.log_text()
    assert "Traceback" not in log
    for code in codes:
        assert_code_not_in(log, str(code))


def idents(tmp_path: Path, n: int) -> list[identity.Identity]:
    return [identity.load_or_create(tmp_path / f"id{i}") for i in range(n)]


def test_racing_connections_get_one_pake_run_per_invitation(tmp_path: Path, server) -> None:
    code = InviteBook(server.home).create("laptop").code
    pairers = [Pairer(server, ident) for ident in idents(tmp_path, 8)]
    msgs = [p.pair_msg(code) for p in pairers]
    start = threading.Barrier(len(pairers))
    replies: list[dict] = [{}] * len(pairers)

    def go(i: int) -> None:
        start.wait(10)
        pairers[i].send(msgs[i])
        replies[i] = pairers[i].recv()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(pairers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    kinds = sorted(r.get("t") for r in replies)
    assert kinds == ["error"] * 7 + ["pair_ok"], replies
    assert all("already used" in r["message"] for r in replies if r["t"] == "error")
    winner = next(i for i, r in enumerate(replies) if r["t"] == "pair_ok")
    pairers[winner].send(pairers[winner].confirm_for(code, replies[winner]))
    assert pairers[winner].recv() == {"t": "paired", "name": "laptop"}
    for p in pairers:
        p.close()
    assert list(authorized(server).values()) == ["laptop"]
    assert_no_secret_logged(server, code)


def test_a_client_that_vanishes_or_replays_its_confirmation_gets_nothing(tmp_path: Path, server) -> None:
    book = InviteBook(server.home)
    me = idents(tmp_path, 1)[0]
    # A pair message, then gone before the confirmation: the code is used up.
    code = book.create("laptop").code
    p = Pairer(server, me)
    p.send(p.pair_msg(code))
    ok = p.recv()
    assert ok["t"] == "pair_ok"
    good_confirm = p.confirm_for(code, ok)
    p.close()
    again = Pairer(server, me)
    again.send(again.pair_msg(code))
    assert "already used" in again.recv()["message"]
    again.close()

    # Its confirmation, right for the first connection, replayed on a new one:
    # as an opening it is not a pair message; after a pair it is the wrong MAC.
    replay = Pairer(server, me)
    replay.send(good_confirm)
    assert replay.recv()["code"] == "protocol"
    replay.close()
    fresh = book.create("laptop").code
    replay = Pairer(server, me)
    replay.send(replay.pair_msg(fresh))
    assert replay.recv()["t"] == "pair_ok"
    replay.send(good_confirm)
    answer = replay.recv()
    assert answer["t"] == "error" and "wrong pairing code" in answer["message"], answer
    replay.close()

    # A wrong guess, then the right code on a new connection: the first run burnt it.
    third = book.create("laptop").code
    wrong = pairing.Code(third.number, (third.words[0], next(w for w in pairing.WORDS if w != third.words[1])))
    guess = Pairer(server, me)
    guess.send(guess.pair_msg(wrong))
    ok = guess.recv()
    assert ok["t"] == "pair_ok"
    guess.send(guess.confirm_for(wrong, ok))
    assert "wrong pairing code" in guess.recv()["message"]
    guess.close()
    right = Pairer(server, me)
    right.send(right.pair_msg(third))
    assert "already used" in right.recv()["message"]
    right.close()
    assert authorized(server) == {}
    assert_no_secret_logged(server, code, fresh, third, wrong)


def test_probes_that_prove_no_key_tell_and_use_up_nothing(tmp_path: Path, server) -> None:
    """A pair with a bad signature, or too large, is refused before the
    invitation is looked at: alike for an open and an unknown number."""
    code = InviteBook(server.home).create("laptop").code
    unknown = pairing.code_from(code.number % 99 + 1, 5)
    me = idents(tmp_path, 1)[0]
    answers = []
    for c in (code, unknown):
        p = Pairer(server, me)
        p.send(p.pair_msg(c, sig=b"\x30\x06\x02\x01\x01\x02\x01\x01"))
        answers.append(p.recv())
        p.close()
    assert answers[0]["message"] == answers[1]["message"] and answers[0]["code"] == "trust", answers
    # A pair message signed for another connection's challenge: the same refusal.
    first = Pairer(server, me)
    replayed = first.pair_msg(code)
    first.close()
    p = Pairer(server, me)
    p.send(replayed)
    assert p.recv()["message"] == answers[0]["message"]
    p.close()
    p = Pairer(server, me)
    big = p.pair_msg(code)
    big["pad"] = "x" * (20 << 10)
    body = json.dumps(big).encode()
    p.conn.send(struct.pack(">I", len(body)) + body)
    assert p.recv()["t"] in ("error", "closed")
    p.close()
    assert [inv.used for inv in InviteBook(server.home).all()] == [False]
    p = Pairer(server, me)
    p.send(p.pair_msg(code))
    ok = p.recv()
    p.send(p.confirm_for(code, ok))
    assert p.recv()["t"] == "paired"
    p.close()


def test_concurrent_pairings_are_all_kept(tmp_path: Path, server) -> None:
    """Pairings on several workers at once each write clients.json: none may
    lose another's entry, whose client was told "paired"."""
    book = InviteBook(server.home)
    n = 8
    codes = [book.create(f"c{i}").code for i in range(n)]
    pairers = [Pairer(server, ident) for ident in idents(tmp_path, n)]
    oks = []
    for p, c in zip(pairers, codes):
        p.send(p.pair_msg(c))
        oks.append(p.recv())
    confirms = [p.confirm_for(c, ok) for p, c, ok in zip(pairers, codes, oks)]
    start = threading.Barrier(n)
    answers: list[dict] = [{}] * n

    def go(i: int) -> None:
        start.wait(10)
        pairers[i].send(confirms[i])
        answers[i] = pairers[i].recv()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for p in pairers:
        p.close()
    assert [a.get("t") for a in answers] == ["paired"] * n, answers
    assert sorted(authorized(server).values()) == sorted(f"c{i}" for i in range(n))
    assert "Traceback" not in server.log_text()


def test_invite_follows_no_symlink_in_the_state_folder(tmp_path: Path, server) -> None:
    """Whoever runs the server owns its state folder; root running `invite`
    (or `trust`) there must not write through a link that account planted."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    absent = tmp_path / "absent"
    (server.home / "invites.json.tmp").symlink_to(victim)
    (server.home / "invites.lock").symlink_to(absent)
    (server.home / "clients.json.tmp").symlink_to(victim)
    done = fx(server.home, "invite", "--name", "laptop")
    fx(server.home, "trust", "add", "0" * 64, "--name", "laptop")
    assert victim.read_text() == "precious\n" and not absent.exists()
    assert done.returncode != 0 or not (server.home / "invites.json").is_symlink()


def test_a_stale_temporary_file_does_not_widen_the_invitations_mode(server) -> None:
    stale = server.home / "invites.json.tmp"
    stale.write_text("{}")
    os.chmod(stale, 0o644)
    assert fx(server.home, "invite", "--name", "laptop").returncode == 0
    assert stat.S_IMODE(os.stat(server.home / "invites.json").st_mode) == 0o600


def test_an_existing_name_or_an_authorized_client_is_said(tmp_path: Path, server) -> None:
    """The administrator hears that an invitation's name already has a folder
    someone writes to; a client paired again hears that it moved."""
    home = tmp_path / "laptop"
    fx(home, "id", check=True)
    mine = identity.load_or_create(home).fingerprint
    fx(server.home, "trust", "add", mine.hex(), "--name", "alice", check=True)
    done = fx(server.home, "invite", "--name", "alice", check=True)
    assert "1 authorized identity(ies) already write to alice's folder" in done.stderr
    fresh = fx(server.home, "invite", "--name", "bob", check=True)
    assert "note:" not in fresh.stderr
    paired = fx(home, "pair", server.address, fresh.stdout.strip())
    assert paired.returncode == 0, paired.stderr
    assert "was authorized there as alice" in paired.stderr and "backups stay under that name" in paired.stderr
    assert authorized(server) == {mine.hex(): "bob"}


class Impostor:
    """A server of its own on 127.0.0.1 that knows *code* (or not), for one
    `fastxfer pair`: it answers as *script* says and records what it gets."""

    def __init__(self, tmp_path: Path, code: pairing.Code, script: str) -> None:
        import socket

        self.ident = identity.load_or_create(tmp_path / "impostor")
        self.code, self.script = code, script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.got: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from fastxfer.net.conn import Conn

        sock, _ = self.listener.accept()
        conn = tls_wrap(Conn(sock), self.ident.server_context(), 10, server_side=True)
        chan = Channel(conn)
        try:
            nonce = os.urandom(32)
            chan.send({"t": "challenge", "v": 1, "nonce": base64.b64encode(nonce).decode()})
            msg = chan.recv(10)
            self.got.append(msg["t"])
            client_fp = identity.fingerprint_of(base64.b64decode(msg["cert"]))
            pake = Pake(False, self.code.password, client_fp, self.ident.fingerprint)
            x = base64.b64decode(msg["pake"])
            key = pake.finish(x)
            name = "laptop"
            mac = pairing.confirmation(key, pairing.SERVER_ROLE, nonce, x, pake.outbound,
                                       self.ident.fingerprint, client_fp, name)
            if self.script == "paired-first":
                chan.send({"t": "paired", "name": name})
            chan.send({"t": "pair_ok", "pake": base64.b64encode(pake.outbound).decode(), "name": name,
                       "confirm": base64.b64encode(mac).decode()})
            self.got.append(chan.recv(10)["t"])
            chan.send({"error": {"t": "error", "code": "trust", "message": "no"},
                       "other-name": {"t": "paired", "name": "desktop"},
                       "bad-was": {"t": "paired", "name": name, "was": "../x"}}[self.script])
        except (FxError, KeyError):
            pass
        finally:
            conn.close()
            self.listener.close()


def test_the_client_pins_nothing_before_paired_and_confirms_only_a_proven_server(tmp_path: Path) -> None:
    code = pairing.code_from(7, 12345)
    wrong = pairing.code_from(7, 12346)
    home = tmp_path / "laptop"
    for script, knows, sent in (("error", code, ["pair", "pair_confirm"]),
                                ("other-name", code, ["pair", "pair_confirm"]),
                                ("bad-was", code, ["pair", "pair_confirm"]),
                                ("paired-first", code, ["pair"]),
                                ("error", wrong, ["pair"])):
        imp = Impostor(tmp_path, knows, script)
        done = fx(home, "pair", f"127.0.0.1:{imp.port}", str(code), timeout=30)
        imp.thread.join(10)
        assert done.returncode in (3, 8), (script, done.stderr)  # trust, protocol
        assert "Traceback" not in done.stderr
        assert imp.got == sent, (script, imp.got)
        assert not (home / "pins.json").exists() or json.loads((home / "pins.json").read_text()) == {}
