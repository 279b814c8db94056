"""Pure tests of which paths a client may name (fastxfer.paths)."""

from __future__ import annotations

import os

import pytest

from fastxfer.protocol import paths
from fastxfer.errors import RefusedError
from fastxfer.protocol.paths import MAX_DEPTH, MAX_PART, MAX_TOTAL


@pytest.mark.parametrize(
    "path, parts",
    [
        ("x", [b"x"]),
        ("a/b/c.txt", [b"a", b"b", b"c.txt"]),
        (".hidden/..dots/...", [b".hidden", b"..dots", b"..."]),
        ("caf\u00e9/\u2603", ["caf\u00e9".encode(), "\u2603".encode()]),
        ("with space/back\\slash", [b"with space", b"back\\slash"]),
        ("-rf", [b"-rf"]),
    ],
)
def test_split_accepts(path: str, parts: list[bytes]) -> None:
    assert paths.split(path) == parts
    assert paths.join(parts) == path


def test_split_non_utf8_name() -> None:
    raw = b"dir/latin1-\xe9t\xe9/\xff\xfe"
    path = os.fsdecode(raw)  # surrogateescape form, as it travels
    assert "\udce9" in path
    assert paths.split(path) == [b"dir", b"latin1-\xe9t\xe9", b"\xff\xfe"]
    assert paths.join(paths.split(path)) == path


def test_split_limits_are_inclusive() -> None:
    part = "p" * MAX_PART
    assert paths.split(part) == [part.encode()]
    deep = "/".join(["d"] * MAX_DEPTH)
    assert len(paths.split(deep)) == MAX_DEPTH
    # 17 parts of 240 bytes and 16 separators: exactly 4096 bytes
    long_path = "/".join(["q" * 240] * 17)
    assert len(long_path) == MAX_TOTAL
    assert len(paths.split(long_path)) == 17
    # multi-byte characters count as bytes: 127 two-byte characters = 254 bytes
    assert paths.split("\u00e9" * 127) == ["\u00e9".encode() * 127]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/abs",
        "/etc/passwd",
        "//x",
        "a/../b",
        "../x",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a/b/",
        "a\x00b",
        "\x00",
        "ok/na\x00me",
        "p" * (MAX_PART + 1),
        "a/" + "p" * (MAX_PART + 1),
        "\u00e9" * 128,  # 256 bytes, 128 characters
        "/".join(["q" * 240] * 17) + "x",  # 4097 bytes, every part short enough
        "/".join(["d"] * (MAX_DEPTH + 1)),
        "x" * 100_000,
        "\ud800",  # a lone surrogate that no byte string decodes to
    ],
)
def test_split_refuses(path: str) -> None:
    with pytest.raises(RefusedError):
        paths.split(path)


def test_refusal_says_why() -> None:
    with pytest.raises(RefusedError, match="absolute"):
        paths.split("/abs")
    with pytest.raises(RefusedError, match="NUL"):
        paths.split("a\x00")
    with pytest.raises(RefusedError, match="'\\.\\.'"):
        paths.split("a/../b")
    with pytest.raises(RefusedError, match="255"):
        paths.split("p" * 256)
    with pytest.raises(RefusedError, match="4096"):
        paths.split("p" * 4097)
    with pytest.raises(RefusedError, match="256"):
        paths.split("/".join(["d"] * 257))


def test_split_refuses_non_strings() -> None:
    with pytest.raises(RefusedError):
        paths.split(None)  # type: ignore[arg-type]
    with pytest.raises(RefusedError):
        paths.split(42)  # type: ignore[arg-type]
