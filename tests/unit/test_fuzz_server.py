"""Every control request the server answers, fuzzed field by field, against
a real store on disk (no network): whatever a client sends, only a
documented error (FxError) comes out of a handler, and every answer is a
message the channel can send.  The socket-level fuzzers are in
tests/system/test_fuzz_control.py and test_fuzz_stream.py."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastxfer.errors import FxError
from fastxfer.protocol import messages
from fastxfer.protocol.keys import ServerKeys
from fastxfer.server import control
from fastxfer.store.facade import Store
from fastxfer.trust import identity
from fastxfer.trust.clients import ClientList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import FILE, HOSTILE, MISSING, TEMPLATES, VALUES, mutated, places, replaced  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> control.ControlSession:
    """A session of client 'laptop' after authentication, on a store that holds one file."""
    tmp = tmp_path_factory.mktemp("fuzz-server")
    ident = identity.load_or_create(tmp / "home")
    clients = ClientList(tmp / "home")
    fp = hashlib.sha256(b"laptop").digest()
    clients.add(fp, "laptop")
    store = Store(str(tmp / "root"))
    store.init_manifest()
    data = b"stored"
    store.commit_bundle("laptop", [_entry(b"d/x", data)])
    s = control.ControlSession(None, ident, clients, ServerKeys(os.urandom(32)), store,  # type: ignore[arg-type]
                               proven=lambda name: None, draining=lambda: False)
    s.name, s.fp = "laptop", fp
    s.fid = control.HANDLERS["put"](s, {"t": "put", "files": [FILE]})["files"][0]["fid"]  # type: ignore[attr-defined]
    return s


def _entry(path: bytes, data: bytes):
    from fastxfer.protocol import wire

    return wire.BundleEntry(path, len(data), 1, 0o644, memoryview(data), hashlib.sha256(data).digest())


def opened(session: control.ControlSession, msg: dict) -> dict:
    """*msg* naming an open snapshot and a real transfer where the template's
    placeholders still are, so that what follows them is read too."""
    if msg.get("t") in ("snap_add", "snap_end") and msg.get("id") == 1:
        begun = control.HANDLERS["snap_begin"](session, TEMPLATES["snap_begin"])
        msg = {**msg, "id": begun["id"]}
    if msg.get("t") == "commit" and "00" * 16 in str(msg.get("files")):
        msg = json.loads(json.dumps(msg).replace("00" * 16, session.fid))
    return msg


def answer(session: control.ControlSession, msg: dict) -> None:
    """The handler's answer must be sendable; anything raised must be an FxError."""
    msg = opened(session, msg)
    try:
        reply = control.HANDLERS[msg["t"]](session, msg)
    except FxError as exc:
        assert isinstance(exc.message, str)
        return
    messages.encode_msg(reply)
    assert isinstance(reply.get("t"), str)


def test_every_template_is_answered(session) -> None:
    """The fuzzers start from requests the server accepts, so a mutation tests one field at a time."""
    for kind, msg in TEMPLATES.items():
        answer(session, msg)
    assert set(TEMPLATES) == set(control.HANDLERS)


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_field_of_a_request_gone_wrong_in_each_way(session, kind: str) -> None:
    """Exhaustive where it is cheap: each field, at any depth, replaced by each
    hostile value or removed, one at a time."""
    template = TEMPLATES[kind]
    for where in places(template):
        for value in (*HOSTILE, MISSING):
            answer(session, replaced(template, where, value))


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
@FUZZ
@given(data=st.data())
def test_a_request_with_a_field_gone_wrong(session, kind: str, data) -> None:
    answer(session, data.draw(mutated(TEMPLATES[kind])))


@FUZZ
@given(kind=st.sampled_from(sorted(TEMPLATES)), body=st.dictionaries(st.text(max_size=8), VALUES, max_size=6))
def test_a_request_of_any_shape(session, kind: str, body: dict) -> None:
    answer(session, {**body, "t": kind})
