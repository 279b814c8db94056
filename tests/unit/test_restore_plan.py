"""Where a get puts what the server lists (client/restore_plan.py): pure, no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastxfer.client.restore_plan import chunks_of, link_stays_inside, plan
from fastxfer.errors import ProtocolError, RefusedError


@pytest.mark.parametrize("parts, target, ok", [
    ([b"a", b"l"], "b", True),
    ([b"a", b"l"], "../b", True),  # climbs to the top, stays inside
    ([b"a", b"l"], "c/./d", True),
    ([b"a", b"l"], "../../b", False),
    ([b"l"], "../x", False),
    ([b"l"], "/etc/passwd", False),
    ([b"a", b"b", b"l"], "../../c/./d", True),
    ([b"a", b"b", b"l"], "../../../c", False),
    ([b"a", b"l"], "a/b/..", True),
    ([b"l"], "x/../../y", False),  # climbs out on the way, whatever follows
    ([b"l"], "", False),
])
def test_safe_links_are_those_that_stay_inside(parts, target, ok) -> None:
    assert link_stays_inside(parts, target) is ok


def test_plan_refuses_what_a_server_should_never_name(tmp_path: Path) -> None:
    with pytest.raises(RefusedError):
        plan([{"path": "../../etc/passwd"}], "", str(tmp_path))
    with pytest.raises(RefusedError):
        plan([{"path": "/etc/passwd"}], "", str(tmp_path))
    with pytest.raises(ProtocolError):
        plan([{"path": "elsewhere/x"}], "asked", str(tmp_path))
    root, planned = plan([{"path": "asked/x/y"}], "asked", str(tmp_path), inside=True)
    assert root == str(tmp_path) and planned[0][1] == [b"asked", b"x", b"y"]


def test_dest_is_the_copy_of_path_whether_or_not_it_exists(tmp_path: Path) -> None:
    tree = [{"path": "docs", "kind": "dir"}, {"path": "docs/a"}, {"path": "docs/b/c"}]
    # Run again with DEST now there, it lands in the same place (never DEST/docs).
    for _ in range(2):
        root, planned = plan(tree, "docs", str(tmp_path / "copy"))
        assert root == str(tmp_path / "copy") and [p for _, p in planned] == [[b"a"], [b"b", b"c"]]
        (tmp_path / "copy").mkdir(exist_ok=True)
    # No -o, or several PATHs: each lands inside DEST under its last part.
    root, planned = plan(tree, "docs", str(tmp_path), inside=True)
    assert root == str(tmp_path) and [p for _, p in planned] == [[b"docs"], [b"docs", b"a"], [b"docs", b"b", b"c"]]
    # A single file takes DEST as its name, unless DEST is a folder.
    root, planned = plan([{"path": "docs/a", "kind": "file"}], "docs/a", str(tmp_path / "renamed"))
    assert root == os.path.abspath(tmp_path) and planned[0][1] == [b"renamed"]
    root, planned = plan([{"path": "docs/a", "kind": "file"}], "docs/a", str(tmp_path / "copy"))
    assert root == str(tmp_path / "copy") and planned[0][1] == [b"a"]
    with pytest.raises(Exception, match="no such folder"):
        plan(tree, "docs", str(tmp_path / "missing" / "copy"))
    with pytest.raises(RefusedError, match="nothing to restore"):
        plan([], "docs", str(tmp_path))


@pytest.mark.parametrize("entry, count", [
    ({"size": 1, "chunk": 1 << 20}, 1),
    ({"size": (1 << 20) + 1, "chunk": 1 << 20}, 2),
    ({"kind": "dir", "size": 10, "chunk": 1}, 0),
    ({"kind": "link"}, 0),
    ({"size": "x", "chunk": 1}, 0),
    ({"size": 5}, 0),
])
def test_chunks_of_counts_requests_and_never_raises(entry: dict, count: int) -> None:
    assert chunks_of(entry) == count
