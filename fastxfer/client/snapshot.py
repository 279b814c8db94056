"""The snapshot of a send: the paths it named and every entry it walked,
reported once its files are committed, so the server records exactly the
tree as it was walked (protocol/snapshot.py)."""

from __future__ import annotations

import grp
import os
import pwd
import socket
from collections import Counter
from dataclasses import dataclass, field

from fastxfer.client.jobs import Result, Source
from fastxfer.errors import ProtocolError
from fastxfer.protocol import messages, paths, snapshot

MAX_SNAPSHOT = 2**32 - 1  # a snapshot's id, as a stream's BUNDLE header carries it


@dataclass
class Recorded:
    id: int
    state: str  # complete or partial
    files: int
    bytes: int
    removed: int  # entries that left the current view (deleted at the source)
    dropped: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # (path, was sent from, now from)


class Names:
    """Owner and group names, looked up once per number."""

    def __init__(self) -> None:
        self.users: dict[int, str | None] = {}
        self.groups: dict[int, str | None] = {}

    def user(self, uid: int) -> str | None:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = None
        return self.users[uid]

    def group(self, gid: int) -> str | None:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = None
        return self.groups[gid]


def entry_of(src: Source, names: Names) -> dict:
    return snapshot.entry_message(src.remote, src.kind, src.size, src.mtime_ns, src.mode, src.uid, src.gid,
                                  names.user(src.uid), names.group(src.gid), src.target, src.rdev,
                                  src.hardlink)


def usual_owner(sources: list[Source], names: Names) -> dict | None:
    """The owner most files walked have: the server records a file it stores with it,
    so only the others are reported with theirs."""
    counts = Counter((s.uid, s.gid) for s in sources if s.kind == "file")
    if not counts:
        return None
    (uid, gid), _ = counts.most_common(1)[0]
    owner = {"uid": uid, "gid": gid, "user": names.user(uid), "group": names.group(gid)}
    return {k: v for k, v in owner.items() if v is not None}


@dataclass
class Begun:
    id: int
    moved: list[tuple[str, str, str]]
    owner: dict | None  # what usual_owner chose


def begin(call, tops: list[tuple[str, str]], sources: list[Source], names: Names) -> Begun:
    """Open the send's snapshot before the first file is stored: each file the
    server stores naming it joins it there and then."""
    owner = usual_owner(sources, names)
    message = {"t": "snap_begin", "host": socket.gethostname()[:255],
               "paths": [{"path": p, "source": s} for p, s in tops]}
    if owner:
        message["owner"] = owner
    begun = call(message, "snap_begun")
    previous = messages.get_list(begun, "previous", len(tops)) if begun.get("previous") is not None else []
    moved = [(p, was, now) for (p, now), was in zip(tops, previous) if is_name(was) and was != snapshot.storable(now)]
    return Begun(messages.get_int(begun, "id", 1, MAX_SNAPSHOT), moved, owner)


def is_name(value: object) -> bool:
    """Whether a server's *value* is a name this client can show (a string of bytes)."""
    try:
        return isinstance(value, str) and len(value) <= paths.MAX_TOTAL and bool(os.fsencode(value))
    except UnicodeError:
        return False


def count(msg: dict, key: str) -> int:
    """A count the server's answer may leave out (0)."""
    return messages.get_int(msg, key) if msg.get(key) is not None else 0


def reported(r: Result, owner: dict | None) -> bool:
    """Whether *r*'s entry must be reported: the server did not record it as it stored it
    (a folder, link, record, a file found unchanged or one of another owner)."""
    return not (r.in_snapshot and owner is not None and owner["uid"] == r.src.uid and owner["gid"] == r.src.gid)


def finish(call, begun: Begun, results: list[Result], incomplete: bool, names: Names) -> Recorded:
    """Report the entries the server does not have yet, and end the snapshot;
    *incomplete*: something walked was not stored."""
    dropped: list[str] = []
    kept = [r for r in results if r.status in ("stored", "unchanged", "recorded")]
    report = [r for r in kept if reported(r, begun.owner)]
    for start in range(0, len(report), snapshot.ENTRIES_PER_MESSAGE):
        batch = [entry_of(r.src, names) for r in report[start : start + snapshot.ENTRIES_PER_MESSAGE]]
        answer = call({"t": "snap_add", "id": begun.id, "entries": batch}, "snap_added")
        if answer.get("dropped") is not None:
            dropped += [p for p in messages.get_list(answer, "dropped", len(batch)) if is_name(p)]
    failed = incomplete or len(kept) < len(results)
    ended = call({"t": "snap_end", "id": begun.id, "partial": failed}, "snap_ended")
    state = ended.get("state")
    if state not in ("complete", "partial"):
        raise ProtocolError(f"the server ended snapshot {begun.id} in an unknown state {str(state)[:20]!r}")
    return Recorded(begun.id, state, count(ended, "files"), count(ended, "bytes"), count(ended, "removed"),
                    dropped, begun.moved)
