"""Where each listed entry lands below DEST, and what a file being fetched
carries: the part of ``get`` that decides, with no I/O but looking at the
destination.

Every part of a path is checked as the server names it (protocol/paths.py),
so nothing the server lists can reach outside DEST; links are data, made
as stored, and never followed (localfs.open_chain).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from fastxfer.errors import FxError, LocalFileError, ProtocolError, RefusedError
from fastxfer.protocol import layout, paths

# Files of one chunk up to BATCH_FILE bytes are asked for many at a time
# (REQS, answered by one DATAS frame) when the server takes it.
BATCH_FILE = 256 << 10
OPEN_MAX = 1024  # entries in a wave: one descriptor per file and per folder (fewer if descriptors are short)


@dataclass(eq=False)
class Fetch:
    entry: dict
    parts: list[bytes]  # below DEST
    digests: list[bytes | None] = field(default_factory=list)
    left: int = 0
    fd: int = -1
    parent: int = -1
    tmp: bytes = b""
    tag: bytes = b""  # names the file in requests: SHA-256(tmp)[:16]
    born: tuple[int, int] | None = None  # (uid, gid) its temporary surely has (None: not known)
    # Threads writing to fd now: a file that fails meanwhile keeps its descriptor
    # until the last is done, so a write can never land in a reused number.
    writers: int = 0
    closing: bool = False
    status: str = "pending"  # verified (all in, waiting for its wave's sync), restored, failed
    error: FxError | None = None
    replaced: bool = False  # something was at its place (--force): "changed", not "new"

    @property
    def size(self) -> int:
        return int(self.entry["size"])

    @property
    def chunk(self) -> int:
        return int(self.entry["chunk"])

    @property
    def whole(self) -> bool:
        """Small enough to be asked for whole, with others, in one request."""
        return self.size <= min(BATCH_FILE, self.chunk)

    @property
    def name(self) -> bytes:
        """The file as a request names it: its path, and "\0VERSION" for an older copy
        or "\0#DIGEST" for the content a snapshot refers to."""
        name = os.fsencode(self.entry["path"])
        version = self.entry.get("ref") or self.entry.get("version")  # a snapshot's content, or an older copy
        if version:
            name += b"\x00" + os.fsencode(version)
        return name


@dataclass
class Outcome:
    path: str
    # restored, unchanged, recorded (a socket or a device: in the snapshot only),
    # unsafe (a link left out by --safe-links), skipped, failed
    status: str
    error: FxError | None = None
    kind: str = "file"  # as listed: file, dir, link, fifo...
    how: str = ""  # for an itemized list: new (nothing was there), changed (replaced, --force)


def plan(entries: list[dict], prefix: str, dest: str, inside: bool = False
         ) -> tuple[str, list[tuple[dict, list[bytes]]]]:
    """(folder every place is below, [(entry, parts below that folder)]).

    DEST is the copy of PATH, whether or not it exists: an existing folder
    is merged into, never nested into, so the same get run again lands where
    the first did.  A single file goes inside DEST when DEST is a folder.
    With *inside*, PATH lands in DEST under its last component (no -o, or
    several PATHs)."""
    top = [p for p in prefix.strip("/").split("/") if p]
    one_file = len(entries) == 1 and entries[0].get("kind", "file") != "dir" and \
        entries[0].get("path") == "/".join(top)
    if inside or (one_file and os.path.isdir(dest)):
        root, base = dest, [os.fsencode(top[-1])] if top else []
    elif one_file:
        root, base = os.path.dirname(os.path.abspath(dest)), [os.fsencode(os.path.basename(dest))]
    else:
        root, base = dest, []
    made_in = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))  # DEST is made, not its parents
    if not os.path.isdir(made_in):
        raise LocalFileError(f"{made_in}: no such folder")
    out = []
    for e in entries:
        parts = paths.split(e["path"])  # the server's names are checked like a client's
        rel = parts[len(top):]
        if [os.fsencode(p) for p in top] != parts[: len(top)]:
            raise ProtocolError("server listed an entry outside the asked path")
        if base or rel:  # PATH's own folder is DEST itself: made, not given the server's mode
            out.append((e, base + rel))
        elif e.get("kind", "file") != "dir":
            raise RefusedError("cannot restore a file onto DEST itself")
    if not out and not entries:
        raise RefusedError(f"nothing to restore at {prefix!r}")
    return root, out


# What get reads of a listed entry of each kind, beyond its path (client/listing.py
# checked the type and range of whatever is there): an entry without them is
# a broken server's, refused before anything is made.
NEEDED = {"file": ("size", "mtime_ns", "mode"), "dir": ("mtime_ns", "mode"), "fifo": ("mtime_ns", "mode"),
          "chardev": ("mtime_ns", "mode"), "blockdev": ("mtime_ns", "mode")}


def restorable(entries: list[dict]) -> None:
    """ProtocolError unless every entry carries what get reads of one of its kind."""
    for entry in entries:
        kind = entry.get("kind", "file")
        needed = NEEDED.get(kind, ()) + (("chunk",) if kind == "file" and entry.get("digest") else ())
        for key in needed:
            if not isinstance(entry.get(key), int):
                raise ProtocolError(f"the server listed {entry.get('path')!r} without its {key}")


def wave_size() -> int:
    """Entries per wave: OPEN_MAX, or fewer where the descriptor limit cannot be
    raised enough (a wave holds one descriptor per file and one per folder)."""
    import resource

    want = 2 * OPEN_MAX + 128  # and the streams, the control connection, the standard ones
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ValueError, OSError):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return OPEN_MAX
    return max(16, min(OPEN_MAX, (soft - 128) // 2))


def already_there(entry: dict, here: os.stat_result, parts: list[bytes], parent: int) -> bool:
    """Whether what is at the place is what the entry would bring: a file of its
    size and time, or a link to its target (a get run again after it was
    interrupted, or over a restore already made, skips it, as rsync would)."""
    kind = entry.get("kind", "file")
    if kind == "file":
        return stat.S_ISREG(here.st_mode) and here.st_size == int(entry["size"]) \
            and here.st_mtime_ns == int(entry["mtime_ns"])
    if kind == "fifo":
        return stat.S_ISFIFO(here.st_mode)
    if kind in ("chardev", "blockdev"):
        return (stat.S_ISCHR(here.st_mode) if kind == "chardev" else stat.S_ISBLK(here.st_mode)) \
            and here.st_rdev == entry.get("rdev")
    if kind == "link":
        return stat.S_ISLNK(here.st_mode) and os.readlink(parts[-1], dir_fd=parent) == os.fsencode(
            entry.get("target") or "")
    return False


def chunks_of(entry: dict) -> int:
    """Requests a listed entry will take (0 for folders, links and records that make no sense)."""
    try:
        return layout.chunk_count(int(entry["size"]), int(entry["chunk"])) if entry.get("kind", "file") == "file" else 0
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0


def link_stays_inside(parts: list[bytes], target: str) -> bool:
    """Whether a link at *parts* (below the restore's folder) points inside it,
    judged by its own target as rsync's --safe-links does: relative, and never
    climbing above the top by its '..' parts.  get itself never follows a
    link, so this is for what the user does with the tree afterwards."""
    if not target or target.startswith("/"):
        return False
    depth = len(parts) - 1
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return False
    return True
