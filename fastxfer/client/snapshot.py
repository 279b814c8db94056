"""The snapshot of a send: the paths it named and every entry it walked,
reported once its files are committed, so the server records exactly the
tree as it was walked (protocol/snapshot.py)."""

from __future__ import annotations

import grp
import pwd
import socket
from dataclasses import dataclass, field

from fastxfer.client.jobs import Result, Source
from fastxfer.protocol import snapshot


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


def record(call, tops: list[tuple[str, str]], results: list[Result], incomplete: bool) -> Recorded:
    """Open, fill and end the send's snapshot; *incomplete*: something walked was not stored."""
    begun = call({"t": "snap_begin", "host": socket.gethostname()[:255],
                  "paths": [{"path": p, "source": s} for p, s in tops]}, "snap_begun")
    snap = int(begun["id"])
    moved = [(p, was, now) for (p, now), was in zip(tops, begun.get("previous") or [])
             if isinstance(was, str) and was != now]
    names = Names()
    dropped: list[str] = []
    kept = [r for r in results if r.status in ("stored", "unchanged", "recorded")]
    for start in range(0, len(kept), snapshot.ENTRIES_PER_MESSAGE):
        batch = [entry_of(r.src, names) for r in kept[start : start + snapshot.ENTRIES_PER_MESSAGE]]
        answer = call({"t": "snap_add", "id": snap, "entries": batch}, "snap_added")
        dropped += [p for p in answer.get("dropped") or [] if isinstance(p, str)]
    failed = incomplete or len(kept) < len(results)
    ended = call({"t": "snap_end", "id": snap, "partial": failed}, "snap_ended")
    return Recorded(snap, str(ended.get("state")), int(ended.get("files") or 0), int(ended.get("bytes") or 0),
                    int(ended.get("removed") or 0), dropped, moved)
