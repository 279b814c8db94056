"""The trust files on real folders: concurrent writers (a server's worker
processes pairing clients while an administrator runs `trust`) keep every
change, and a state folder another account owns cannot make a writer
follow a link or hand it a file that is not its own."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from fastxfer.cli.config import hand_over
from fastxfer.errors import UsageError
from fastxfer.trust.clients import ClientList
from fastxfer.trust.invites import InviteBook
from fastxfer.trust.jsonfile import load, save
from fastxfer.trust.pins import PinList

WRITERS, EACH = 4, 30


def _add_many(folder: str, k: int) -> None:
    clients = ClientList(Path(folder))
    for i in range(EACH):
        clients.add(bytes([k, i]) + bytes(30), f"n{k}")
        if i % 10 == 0:
            clients.set_quota(f"n{k}", i + 1)


def test_concurrent_writers_keep_every_change(tmp_path: Path) -> None:
    procs = [multiprocessing.get_context("fork").Process(target=_add_many, args=(str(tmp_path), k))
             for k in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    clients = json.loads((tmp_path / "clients.json").read_text())
    assert len(clients) == WRITERS * EACH
    assert json.loads((tmp_path / "quotas.json").read_text()) == {f"n{k}": str(EACH - 9) for k in range(WRITERS)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.json", "clients.lock", "quotas.json"]


def test_a_planted_link_or_stale_file_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    for name in ("clients.json.tmp", "invites.json.tmp", "identity.key.tmp"):
        (state / name).symlink_to(victim)
    stale = state / "quotas.json.tmp"
    stale.write_text("{}")
    os.chmod(stale, 0o644)
    ClientList(state).add(bytes(32), "laptop")
    ClientList(state).set_quota("laptop", 5)
    save(state / "x.json", {})
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(os.stat(state / "quotas.json").st_mode) == 0o600
    assert not (state / "clients.json").is_symlink()

    (state / "invites.lock").symlink_to(tmp_path / "absent")
    with pytest.raises(UsageError, match="lock file"):
        InviteBook(state).create("laptop")
    assert not (tmp_path / "absent").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="hand_over acts only for root")
def test_hand_over_gives_only_a_file_of_one_link(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    os.link(victim, state / "clients.json")  # a hard link the folder's owner made to root's file
    (state / "quotas.json").symlink_to(victim)
    (state / "invites.json").write_text("{}")
    hand_over(state, ("clients.json", "quotas.json", "invites.json", "absent.json"))
    assert os.stat(victim).st_uid == 0 and os.lstat(state / "quotas.json").st_uid == 0
    assert os.stat(state / "invites.json").st_uid == 65534


def _pin_many(folder: str, k: int) -> None:
    pins = PinList(Path(folder))
    for i in range(EACH):
        pins.add(f"host{k}", 4000 + i, bytes([k, i]) + bytes(30))


def test_concurrent_pins_are_all_kept(tmp_path: Path) -> None:
    procs = [multiprocessing.get_context("fork").Process(target=_pin_many, args=(str(tmp_path), k))
             for k in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    assert len(PinList(tmp_path).all()) == WRITERS * EACH


def test_a_trust_file_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    """root's `trust add` in a folder whose owner made clients.json a link to a
    file of root's must not copy that file into the new clients.json (which
    hand_over then gives to that owner)."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"token": "hunter2"}))
    state = tmp_path / "state"
    state.mkdir()
    (state / "clients.json").symlink_to(secret)
    (state / "quotas.json").symlink_to(secret)
    (state / "invites.json").symlink_to(secret)
    for change in (lambda: ClientList(state).add(bytes(32), "laptop"),
                   lambda: ClientList(state).set_quota("laptop", 5),
                   lambda: InviteBook(state).create("laptop")):
        with pytest.raises(UsageError, match="link"):
            change()
    os.link(secret, state / "hard.json")
    with pytest.raises(UsageError, match="link"):
        load(state / "hard.json")
    assert not any("hunter2" in p.read_text() for p in state.iterdir() if not p.is_symlink() and p.name != "hard.json")

    # The client's pins are in its user's own folder: a link there is read.
    home = tmp_path / "home"
    home.mkdir()
    kept = tmp_path / "dotfiles-pins.json"
    kept.write_text(json.dumps({"host:1": "ab" * 32}))
    (home / "pins.json").symlink_to(kept)
    assert PinList(home).get("host", 1) == bytes.fromhex("ab" * 32)
