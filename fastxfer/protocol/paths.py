"""Which paths a client may name (pure).

A path on the wire is relative, '/'-separated, and each part is a plain
name: never empty, '.', '..', or holding NUL; at most 255 bytes a part and
4096 in all.  Names that are not UTF-8 travel as Python's surrogateescape
form.  The store additionally refuses to pass through a symlink (it opens
each folder with O_NOFOLLOW), so a link stored earlier cannot lead outside.
"""

from __future__ import annotations

import os

from fastxfer.errors import RefusedError

MAX_PART = 255
MAX_TOTAL = 4096
MAX_DEPTH = 256


def encode(text: str, what: str = "path") -> bytes:
    """A name the client sent, as bytes (surrogateescape), or RefusedError: a lone
    surrogate such as '\\ud800' stands for no byte string."""
    try:
        return os.fsencode(text)
    except (UnicodeError, TypeError):
        raise RefusedError(f"{what} {text!r} cannot be encoded") from None


def split(path: str) -> list[bytes]:
    """The parts of a client-named path, or RefusedError saying why not."""
    return split_raw(encode(path))


def split_raw(raw: bytes) -> list[bytes]:
    """split() of a path already in bytes, as bundles carry it."""
    if not raw:
        raise RefusedError("empty path")
    if raw.startswith(b"/"):
        raise RefusedError(f"absolute path refused: {os.fsdecode(raw)!r}")
    if len(raw) > MAX_TOTAL:
        raise RefusedError(f"path longer than {MAX_TOTAL} bytes refused")
    parts = raw.split(b"/")
    if len(parts) > MAX_DEPTH:
        raise RefusedError(f"path deeper than {MAX_DEPTH} folders refused")
    # Whole-list tests rather than a loop over parts: this runs for every file sent.
    if b"" in parts or b"." in parts or b".." in parts:
        raise RefusedError(f"path with an empty, '.' or '..' part refused: {os.fsdecode(raw)!r}")
    if b"\x00" in raw:
        raise RefusedError("path with a NUL byte refused")
    if max(map(len, parts)) > MAX_PART:
        raise RefusedError(f"name longer than {MAX_PART} bytes refused")
    return parts


def join(parts: list[bytes]) -> str:
    return os.fsdecode(b"/".join(parts))
