"""Snapshots on the wire, with no I/O: the entries a send reports as walked,
what ``--at`` may name, and which snapshots a retention policy keeps.

An entry is what the client saw at one path: its kind, size, mode, times,
owner (numbers and names) and, for a link, its target; for a device, its
numbers.  The server fills in the stored content of files itself, from
what it committed: a client cannot make a snapshot claim content it did not
store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fastxfer.errors import ProtocolError, UsageError
from fastxfer.protocol import paths
from fastxfer.protocol.messages import MAX_PATH_BYTES, get_int, get_obj, get_str

KINDS = ("file", "dir", "link", "fifo", "socket", "chardev", "blockdev")
SPECIAL = ("fifo", "socket", "chardev", "blockdev")  # recorded in the catalog only
ENTRIES_PER_MESSAGE = 2000
NAME_MAX = 64  # bytes of an owner or group name
TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def entry_message(path: str, kind: str, size: int, mtime_ns: int, mode: int, uid: int, gid: int,
                  user: str | None, group: str | None, target: str | None, rdev: int,
                  hardlink: str | None = None) -> dict[str, Any]:
    """One walked entry as the client reports it; *hardlink*: for a file, the
    path of another name of the same file earlier in the walk (sent once)."""
    item: dict[str, Any] = {"path": path, "kind": kind, "size": size, "mtime_ns": mtime_ns, "mode": mode,
                            "uid": uid, "gid": gid}
    if user is not None:
        item["user"] = user
    if group is not None:
        item["group"] = group
    if target is not None:
        item["target"] = target
    if rdev:
        item["rdev"] = rdev
    if hardlink is not None:
        item["hardlink"] = hardlink
    return item


def parse_entry(value: Any) -> tuple:
    """A reported entry as a row (manifest.ENTRY_COLUMNS; chunk, digest and
    sha256 left for the server), or ProtocolError.  A file's other name
    (``hardlink``) is kept in the target column: its content is the one at
    that path.

    A send reports every entry it walked, so the plain file or folder is
    checked inline here (~3x faster than the accessors); anything else, or
    anything that fails a check, takes parse_entry_checked, which says why."""
    if type(value) is dict and "hardlink" not in value and "rdev" not in value:
        kind = value.get("kind")
        if kind == "file" or kind == "dir":
            path, size, mtime, mode = value.get("path"), value.get("size"), value.get("mtime_ns"), value.get("mode")
            uid, gid, user, group = value.get("uid"), value.get("gid"), value.get("user"), value.get("group")
            if (type(path) is str and len(path) <= MAX_PATH_BYTES and type(mtime) is int and -(2**62) <= mtime <= 2**62
                    and type(mode) is int and 0 <= mode <= 0o7777 and type(uid) is int and 0 <= uid <= 2**32 - 1
                    and type(gid) is int and 0 <= gid <= 2**32 - 1
                    and (kind == "dir" or type(size) is int and 0 <= size <= 2**63 - 1)
                    and (user is None or type(user) is str and len(user) <= NAME_MAX and user.isascii())
                    and (group is None or type(group) is str and len(group) <= NAME_MAX and group.isascii())):
                return (b"/".join(paths.split(path)), kind, size if kind == "file" else 0, mtime, mode, uid, gid,
                        user, group, None, None, None, None, 0)
    return parse_entry_checked(value)


def parse_entry_checked(value: Any) -> tuple:
    """parse_entry through the typed accessors: every kind, every field, and the reason of a refusal."""
    item = get_obj(value)
    kind = item.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"unknown entry kind {str(kind)[:20]!r}")
    raw = b"/".join(paths.split(get_str(item, "path")))
    target = None
    if kind == "link":
        try:
            target = os.fsencode(get_str(item, "target"))
        except UnicodeEncodeError:  # a lone surrogate: no name a filesystem holds
            raise ProtocolError("a link's target cannot be encoded") from None
        if not target or b"\x00" in target:
            raise ProtocolError("a link entry needs a target")
    elif kind == "file" and item.get("hardlink") is not None:
        target = b"/".join(paths.split(get_str(item, "hardlink")))
        if target == raw:
            raise ProtocolError("a file cannot be a hard link to itself")
    return (raw, kind, get_int(item, "size") if kind == "file" else 0,
            get_int(item, "mtime_ns", -(2**62), 2**62), get_int(item, "mode", 0, 0o7777),
            *parse_owner(item), None, None, None, target,
            get_int(item, "rdev", 0, 2**64 - 1) if "rdev" in item else 0)


def storable(text: str) -> str:
    """*text* as the catalog can keep it: a name that was not UTF-8 on the
    client (surrogateescape) or a lone surrogate, with each surrogate written
    as a backslash escape.  Both sides compare a source folder in this form."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_owner(value: Any) -> tuple[int, int, str | None, str | None]:
    """(uid, gid, user, group) of an entry, or of the owner a snapshot's files usually have."""
    item = get_obj(value)
    names = []
    for key in ("user", "group"):
        name = item.get(key)
        try:
            short = isinstance(name, str) and len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX
        except UnicodeEncodeError:  # a lone surrogate: no name a system has
            short = False
        if name is not None and not short:
            raise ProtocolError(f"field {key!r} must be a short name")
        names.append(None if name is None else storable(name))
    return get_int(item, "uid", 0, 2**32 - 1), get_int(item, "gid", 0, 2**32 - 1), names[0], names[1]


def within(tops: list[bytes]) -> Callable[[bytes], bool]:
    """Whether a raw path is at or below one of a snapshot's paths (b"" is everything)."""
    if b"" in tops:
        return lambda raw: True
    exact, below = frozenset(tops), tuple(t + b"/" for t in tops)
    return lambda raw: raw in exact or raw.startswith(below)


def ref_digest(ref: str) -> bytes | None:
    """The digest a reference to stored content names ("#" and 64 hex digits), or None."""
    if not ref.startswith("#") or len(ref) != 65:
        return None
    try:
        return bytes.fromhex(ref[1:])
    except ValueError:
        return None


def parse_at(text: str) -> int | str:
    """What ``--at`` names: a snapshot id, "latest", or a time (the latest
    snapshot taken at or before it), as a number of nanoseconds since the epoch
    given as the string "time:NS"."""
    text = text.strip()
    if text == "latest":
        return text
    if text.isdigit():
        return int(text)
    import datetime  # here: a send's start-up does not pay for it

    for fmt in TIME_FORMATS:
        try:
            when = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        if fmt == "%Y-%m-%d":  # a day means the whole day: the tree as it was that evening
            when += datetime.timedelta(days=1, microseconds=-1)
        return f"time:{round(when.timestamp() * 1e6) * 1000}"  # local time, as the user reads a clock
    raise UsageError(f"--at {text!r}: give a snapshot id, 'latest' or a time such as 2026-12-01T18:00")


def pick(snaps: list[tuple[int, int]], at: int | str) -> int | None:
    """The id *at* names among (id, time_ns) of kept snapshots, or None."""
    if not snaps:
        return None
    if at == "latest":
        return snaps[-1][0]
    if isinstance(at, int):
        return at if any(s == at for s, _ in snaps) else None
    if isinstance(at, str) and at.startswith("time:") and at[5:].lstrip("-").isdigit():
        limit = int(at[5:])
        before = [s for s, t in snaps if t <= limit]
        return before[-1] if before else None
    raise ProtocolError("malformed snapshot reference")


# What `diff` prints for each path, as restic does: added, removed, content
# changed, kind changed (file, folder, link...), and only metadata changed.
DIFF_CODES = {"added": "+", "removed": "-", "changed": "M", "kind": "T", "meta": "U"}


def diff(before: list[dict], after: list[dict]) -> list[tuple[str, str]]:
    """(change, path) between two listings of entries, in path order.  A
    folder's own time is not a change: adding a file inside changes it."""
    old = {e.get("path"): e for e in before}
    new = {e.get("path"): e for e in after}
    out = []
    for path in sorted(set(old) | set(new), key=lambda p: os.fsencode(str(p))):
        a, b = old.get(path), new.get(path)
        if a is None or b is None:
            out.append(("added" if a is None else "removed", str(path)))
        elif a.get("kind") != b.get("kind"):
            out.append(("kind", str(path)))
        elif any(a.get(k) != b.get(k) for k in ("size", "digest", "target", "hardlink")):
            out.append(("changed", str(path)))
        elif any(a.get(k) != b.get(k) for k in ("mode", "uid", "gid", "rdev")) or (
                a.get("kind") != "dir" and a.get("mtime_ns") != b.get("mtime_ns")):
            out.append(("meta", str(path)))
    return out
