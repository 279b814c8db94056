"""The walk with --follow-links: loops are skipped once each, where they are
met; folders reached twice side by side are walked each time."""

from __future__ import annotations

import os
from pathlib import Path

from fastxfer.client.walk import walk


def looped_tree(tmp_path: Path) -> Path:
    """src/tree with loop/self -> ., up -> .., alias -> real (no loop), and a
    link from inside a linked folder back to the top (a loop seen only through
    the folders that really hold it)."""
    top = tmp_path / "src" / "tree"
    (top / "loop").mkdir(parents=True)
    (top / "real" / "deep").mkdir(parents=True)
    (top / "loop" / "f").write_bytes(b"f")
    (top / "real" / "g").write_bytes(b"g")
    (top / "real" / "deep" / "h").write_bytes(b"h")
    os.symlink(".", top / "loop" / "self")
    os.symlink("..", top / "up")
    os.symlink("real", top / "alias")
    os.symlink("../..", top / "real" / "deep" / "home")
    return top


def test_follow_links_skips_each_loop_once_and_walks_the_rest(tmp_path: Path) -> None:
    top = looped_tree(tmp_path)
    entries, skipped = walk([str(top)], None, follow_links=True)
    assert sorted((e.kind, e.remote) for e in entries) == [
        ("dir", "tree"), ("dir", "tree/alias"), ("dir", "tree/alias/deep"), ("dir", "tree/loop"),
        ("dir", "tree/real"), ("dir", "tree/real/deep"),
        ("file", "tree/alias/deep/h"), ("file", "tree/alias/g"), ("file", "tree/loop/f"),
        ("file", "tree/real/deep/h"), ("file", "tree/real/g"),
    ]
    why = {os.path.relpath(s.local, top): s.reason for s in skipped}
    assert why == {
        "loop/self": f"a loop: leads back to {top / 'loop'}, a folder that holds it; not followed",
        "up": f"a loop: leads back to {top.parent}, a folder that holds it; not followed",
        "real/deep/home": f"a loop: leads back to {top}, a folder that holds it; not followed",
        "alias/deep/home": f"a loop: leads back to {top}, a folder that holds it; not followed",
    }


def test_a_loop_is_named_as_the_user_named_the_top(tmp_path: Path, monkeypatch) -> None:
    top = looped_tree(tmp_path)
    monkeypatch.chdir(top.parent)
    _, skipped = walk(["tree/"], "d", follow_links=True)
    assert ("tree/loop/self", "a loop: leads back to tree/loop, a folder that holds it; not followed") in [
        (s.local, s.reason) for s in skipped]


def test_without_follow_links_the_links_are_entries(tmp_path: Path) -> None:
    top = looped_tree(tmp_path)
    entries, skipped = walk([str(top)], None)
    assert not skipped
    links = {e.remote: e.target for e in entries if e.kind == "link"}
    assert links == {"tree/loop/self": ".", "tree/up": "..", "tree/alias": "real", "tree/real/deep/home": "../.."}
