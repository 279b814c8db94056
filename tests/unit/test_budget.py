"""A client's budget: the share of the free space and the quota, with real staging folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastxfer.errors import RefusedError
from fastxfer.store.budget import Budget, StoredBytes

MIB = 1 << 20


def test_count_sees_declared_and_what_is_not_yet_written(tmp_path: Path) -> None:
    with open(tmp_path / "a.data", "wb") as f:
        f.truncate(8 * MIB)  # declared, nothing written: sparse
    with open(tmp_path / "b.data", "wb") as f:
        f.write(os.urandom(MIB))
    (tmp_path / "b.meta").write_text("{}")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        b = Budget()
        b.count(fd)
    finally:
        os.close(fd)
    assert (b.files, b.declared) == (2, 9 * MIB)
    assert 8 * MIB - 64 * 1024 <= b.unwritten <= 8 * MIB


def test_share_leaves_room_for_others() -> None:
    b = Budget(files=1, declared=50 * MIB, unwritten=50 * MIB)
    b.check("x", 39 * MIB, 100 * MIB, 0.9)
    with pytest.raises(RefusedError, match=r"x: more than one client may hold .* 41.00 MiB needed, "
                                           r"40.00 MiB left of this client's 90% of 100.00 MiB free"):
        b.check("x", 41 * MIB, 100 * MIB, 0.9)
    b.add(39 * MIB, 39 * MIB)
    with pytest.raises(RefusedError, match="2.00 MiB needed, 1.00 MiB left"):
        b.check("y", 2 * MIB, 100 * MIB, 0.9)


def test_quota_counts_stored_and_unfinished() -> None:
    b = Budget(files=0, quota=10 * MIB, stored=6 * MIB, declared=2 * MIB)
    b.check("ok", 2 * MIB, 1 << 40, 0.9)
    with pytest.raises(RefusedError, match=r"big: over this client's quota: 3.00 MiB needed, 2.00 MiB left of 10.00 MiB"):
        b.check("big", 3 * MIB, 1 << 40, 0.9)


def test_stored_bytes_are_asked_again_only_when_old() -> None:
    asked = []
    held = StoredBytes(lambda c: asked.append(c) or 100)
    assert held.of("a") == 100 and held.of("a") == 100 and asked == ["a"]
    held.grew("a", 5)
    assert held.of("a") == 105
    assert held.of("a", fresh=True) == 100 and asked == ["a", "a"]
