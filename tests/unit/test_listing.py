"""What get, ls and diff accept of a server's listing (pure: no server)."""

from __future__ import annotations

import pytest

from fastxfer.client.listing import MAX_CURSOR, checked, next_cursor
from fastxfer.errors import ProtocolError

FILE = {"path": "a/b", "kind": "file", "size": 5, "mtime_ns": 1_700_000_000_000_000_000, "mode": 0o644,
        "sha256": "00" * 32, "target": None, "stored_ns": 1, "chunk": 1 << 20, "digest": "11" * 32,
        "uid": 0, "gid": 0, "user": "root", "group": "root", "rdev": 0}


def test_a_well_formed_entry_passes_unchanged() -> None:
    assert checked(dict(FILE)) == FILE
    link = {"path": "l", "kind": "link", "target": "../x", "size": 0, "mtime_ns": -5, "mode": 0o777}
    assert checked(dict(link)) == link


@pytest.mark.parametrize("change", [
    {"size": "x"}, {"size": -5}, {"size": 2**63}, {"size": True}, {"size": 1.5}, {"size": None},
    {"mtime_ns": "0"}, {"mode": 0o10000}, {"chunk": -1}, {"uid": -1}, {"rdev": [1]},
    {"path": "/etc/passwd"}, {"path": "../x"}, {"path": "a//b"}, {"path": "\ud800"}, {"path": 7},
    {"kind": "door"}, {"target": 5}, {"sha256": {"x": 1}}, {"user": "u" * 5000},
])
def test_a_field_the_store_cannot_have_given_is_a_protocol_error(change: dict) -> None:
    entry = {**FILE, **change}
    with pytest.raises(ProtocolError, match="the server listed"):
        checked(entry)


@pytest.mark.parametrize("entry", [None, "a", 5, [], {"kind": "file"}])
def test_an_entry_that_is_no_object_with_a_path_is_refused(entry: object) -> None:
    with pytest.raises(ProtocolError, match="without a path"):
        checked(entry)


def test_cursors() -> None:
    assert next_cursor({"next": None}, "61") is None
    assert next_cursor({}, None) is None
    assert next_cursor({"next": "62"}, "61") == "62"
    for bad in ("61", 5, "6" * (MAX_CURSOR + 1), ["62"]):
        with pytest.raises(ProtocolError, match="cursor"):
            next_cursor({"next": bad}, "61")
