"""What the server holds below a path: the one loop over listing pages."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastxfer.client.connect import ControlClient
from fastxfer.errors import ProtocolError, RefusedError
from fastxfer.protocol import messages, paths, snapshot

MAX_ENTRIES = 1 << 20  # entries one page may carry
MAX_LISTED = 4 << 20  # entries of all pages together: an endless cursor stops here
MAX_CURSOR = 2 * paths.MAX_TOTAL  # a cursor is a stored path, in hex
# What a listed entry's numbers may be; any other value is a broken or hostile server's.
NUMBERS = {"size": (0, 2**63 - 1), "mtime_ns": (-(2**62), 2**62), "mode": (0, 0o7777),
           "chunk": (0, 2**31), "stored_ns": (0, 2**63 - 1), "replaced_ns": (0, 2**63 - 1),
           "uid": (0, 2**32 - 1), "gid": (0, 2**32 - 1), "rdev": (0, 2**64 - 1)}
TEXTS = ("target", "hardlink", "sha256", "digest", "ref", "user", "group", "version")
HEXES = ("sha256", "digest")


def list_all(control: ControlClient, prefix: str, versions: bool = False, at: int | str | None = None,
             listed: Callable[[int], None] = lambda _count: None) -> list[dict]:
    """Every entry at or below *prefix*, page after page: in the current view,
    in the snapshot *at* names (protocol/snapshot.parse_at), or every older copy kept.
    *listed* is told each page's count of entries (a long listing's progress)."""
    entries: list[dict] = []
    cursor = None
    while True:
        msg = {"t": "list", "prefix": prefix, "versions": versions, "after": cursor}
        if at is not None:
            msg["at"] = at
        reply = control.call(msg, "list_ok")
        if at is not None and type(reply.get("snapshot")) is int:  # noqa: E721 - a bool is no snapshot
            at = reply["snapshot"]  # 'latest' or a time, held to what the first page meant
        page = messages.get_list(reply, "entries", MAX_ENTRIES)
        if len(entries) + len(page) > MAX_LISTED:
            raise ProtocolError(f"the server's listing goes on past {MAX_LISTED:,} entries")
        entries += [checked(e) for e in page]
        if versions and not all(isinstance(e.get("version"), str) for e in page):
            raise ProtocolError("the server listed an older copy without its version")
        listed(len(page))
        cursor = next_cursor(reply, cursor)
        if not cursor:
            return entries


def next_cursor(reply: dict[str, Any], before: str | None) -> str | None:
    """The page after this one (None: the last), or ProtocolError if the server
    sends one that cannot be a cursor or the same one again."""
    cursor = reply.get("next")
    if cursor is None or cursor == "":
        return None
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR or cursor == before:
        raise ProtocolError("the server's listing has a broken 'next' cursor")
    return cursor


def checked(entry: Any) -> dict:
    """A listed entry whose fields have the types and ranges the server's store
    gives them (ProtocolError otherwise), so nothing later trips on one."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ProtocolError("the server listed an entry without a path")
    path = entry["path"]
    try:
        paths.split(path)
    except RefusedError as exc:
        raise ProtocolError(f"the server listed a path no client can have sent: {exc.message}") from None
    kind = entry.get("kind", "file")
    if kind not in snapshot.KINDS:
        raise ProtocolError(f"the server listed {path!r} as an unknown kind {str(kind)[:20]!r}")
    for key, (low, high) in NUMBERS.items():
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise ProtocolError(f"the server listed {path!r} with {key} {repr(value)[:40]}")
    if kind == "file" and entry.get("size") is None:
        raise ProtocolError(f"the server listed the file {path!r} without a size")
    for key in TEXTS:
        value = entry.get(key)
        if value is not None and not (is_text(value) and (key not in HEXES or is_hex(value))):
            raise ProtocolError(f"the server listed {path!r} with a broken {key}")
    return entry


def is_text(value: Any) -> bool:
    """A string the store can have written: bounded, and bytes as a name is (no lone surrogate,
    which no byte string has, and which get would meet when making it, and ls when showing it)."""
    if not isinstance(value, str) or len(value) > paths.MAX_TOTAL:
        return False
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True


def is_hex(value: str) -> bool:
    """A SHA-256 as the server writes it (ls prints it as it comes)."""
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def list_version(control: ControlClient, path: str, version: str) -> list[dict]:
    """The one older copy of *path* named *version*, as an entry to restore."""
    found = [e for e in list_all(control, path, versions=True)
             if e.get("version") == version and e.get("path") == path.strip("/")]
    if not found:
        raise RefusedError(f"no version {version!r} of {path!r} (see: fastxfer ls --versions)")
    return found
