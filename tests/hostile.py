"""Hypothesis strategies for what a hostile peer sends: a valid message
with one field (at any depth) replaced by a value of the wrong type, out of
range, a lone surrogate, huge, or removed.  Shared by the server's and the
client's fuzzers."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

# A value of any JSON type a field can hold, biased to the edges a parser
# gets wrong: huge and negative numbers, surrogates, long strings, nesting.
EDGE_INTS = st.sampled_from([-1, -(2**63), 2**63, 2**64, 2**100, 0, 1, 4095, 4097, 2**31, 2**32 - 1, 2**32])
EDGE_STRS = st.sampled_from(["", "\ud800", "a\udcff", "x" * 5000, "..", "/", "a/../b", "\x00", "00" * 16,
                             "00" * 32, "latest", "time:1", "#" + "ab" * 32, "é/ü", "\n"])
SCALARS = st.one_of(
    st.none(), st.booleans(), EDGE_INTS, st.integers(), st.floats(allow_nan=True), EDGE_STRS,
    st.text(max_size=40),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)

# A request of each kind the server answers after authentication, each field
# valid, so that a mutation tests one field at a time.
FILE = {"path": "d/a.bin", "size": 3000, "mtime_ns": 1_700_000_000_000_000_000, "mode": 0o644, "chunk": 1 << 20}
ENTRY = {"path": "d/a.bin", "kind": "file", "size": 3000, "mtime_ns": 1, "mode": 0o644, "uid": 0, "gid": 0,
         "user": "root", "group": "root"}
TEMPLATES: dict[str, dict] = {
    "ping": {"t": "ping"},
    "put": {"t": "put", "files": [FILE, {**FILE, "path": "d/b", "holes": [[0, 1]], "force": True},
                                  {"path": "d/l", "kind": "link", "target": "../x", "mtime_ns": 5},
                                  {"path": "d/s", "kind": "dir"}]},
    "probe": {"t": "probe", "files": [{"path": "d/x", "size": 4, "mtime_ns": 1, "sha256": "00" * 32}],
              "tops": ["d"]},
    "commit": {"t": "commit", "files": [{"fid": "00" * 16, "digest": "11" * 32, "sha256": "22" * 32,
                                         "same": True}], "snap": 1},
    "list": {"t": "list", "prefix": "d", "versions": False, "after": "6400", "at": "latest"},
    "receipts": {"t": "receipts", "paths": ["d/x", "d/a.bin"], "snap": 1},
    "sums": {"t": "sums", "paths": ["d/x", "d/x\x00#" + "ab" * 32], "page": True},
    "dirs": {"t": "dirs", "items": [{"path": "d", "mode": 0o755, "mtime_ns": 1}]},
    "snap_begin": {"t": "snap_begin", "host": "h", "paths": [{"path": "d", "source": "/home/d"}],
                   "owner": {"uid": 0, "gid": 0, "user": "root", "group": "root"}},
    "snap_add": {"t": "snap_add", "id": 1, "entries": [ENTRY, {**ENTRY, "kind": "link", "target": "x"},
                                                        {**ENTRY, "path": "d/h", "hardlink": "d/a.bin"}]},
    "snap_end": {"t": "snap_end", "id": 1, "partial": False},
    "snapshots": {"t": "snapshots", "prefix": "d"},
    "forget": {"t": "forget", "keep": {"last": 1}, "dry_run": True, "prune": False},
}

MISSING = object()
# One of each kind of wrong, for exhaustive one-field mutation.
HOSTILE = (None, True, -1, 2**70, 1.5, float("nan"), "", "\ud800", "a\udcff", "x" * 5000, [], [None], {}, {"a": 1})


def places(msg: Any, at: tuple = ()) -> list[tuple]:
    """Every key path in *msg* (into objects and lists), the type field excluded."""
    out = []
    if isinstance(msg, dict):
        for key, value in msg.items():
            if at == () and key == "t":
                continue
            out.append(at + (key,))
            out.extend(places(value, at + (key,)))
    elif isinstance(msg, list):
        for index, value in enumerate(msg):
            out.append(at + (index,))
            out.extend(places(value, at + (index,)))
    return out


def replaced(msg: dict, where: tuple, value: Any) -> dict:
    out = copy.deepcopy(msg)
    holder = out
    for key in where[:-1]:
        holder = holder[key]
    if value is MISSING:
        del holder[where[-1]]
    else:
        holder[where[-1]] = value
    return out


@st.composite
def mutated(draw, template: dict, extra_keys: tuple[str, ...] = ()) -> dict:
    """*template* with one or two fields replaced, removed, or added."""
    msg = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 2))):
        spots = places(msg)
        how = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if how == "add" or not spots:
            key = draw(st.sampled_from(extra_keys or ("x",)) | st.text(max_size=6))
            if key != "t":
                msg[key] = draw(VALUES)
            continue
        where = draw(st.sampled_from(spots))
        msg = replaced(msg, where, MISSING if how == "remove" else draw(VALUES))
    return msg
