"""Forgetting snapshots and freeing what none still refers to.

forget marks snapshots forgotten and drops their entries (the id is never
used again).  prune then removes every older copy in versions/ whose
content no remaining snapshot refers to; the current view is never pruned:
it is the latest state of each path, whatever is forgotten.  Both are safe
while the server runs: every step is one manifest transaction, and content
a snapshot names is looked for where it is when it is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastxfer.errors import FxError
from fastxfer.localfs import open_chain
from fastxfer.protocol import retention
from fastxfer.store import manifest
from fastxfer.store.diskio import unlink_quietly


@dataclass
class Forgotten:
    kept: list[tuple[int, int, list[str], list[str]]]  # id, time_ns, paths, why
    forgotten: list[tuple[int, int, list[str]]]
    pruned_files: int = 0
    pruned_bytes: int = 0

    def as_message(self) -> dict:
        return {"kept": [{"id": i, "time_ns": t, "paths": p, "why": w} for i, t, p, w in self.kept],
                "forgotten": [{"id": i, "time_ns": t, "paths": p} for i, t, p in self.forgotten],
                "pruned_files": self.pruned_files, "pruned_bytes": self.pruned_bytes}


class Retention:
    def __init__(self, state_fd: int, db: manifest.Manifest) -> None:
        self.state_fd, self.manifest = state_fd, db

    def forget(self, client: str, policy: retention.Policy, now_ns: int, dry_run: bool) -> Forgotten:
        with self.manifest.connect() as db:
            db.execute("BEGIN IMMEDIATE")  # a send ending a snapshot meanwhile waits, then counts
            snaps = manifest.snapshots(db, client)
            tops = manifest.snapshot_paths(db, client)
            named = {s[0]: [os.fsdecode(p) for p, _src in tops.get(s[0], [])] for s in snaps}
            why = retention.keep([(s[0], s[1], tuple(named[s[0]])) for s in snaps], policy, now_ns)
            out = Forgotten([], [])
            for s in snaps:
                if s[0] in why:
                    out.kept.append((s[0], s[1], named[s[0]], why[s[0]]))
                else:
                    out.forgotten.append((s[0], s[1], named[s[0]]))
                    if not dry_run:
                        manifest.forget_snapshot(db, client, s[0])
            db.commit()
        return out

    def prune(self, client: str, dry_run: bool) -> tuple[int, int]:
        """Older copies no snapshot refers to, removed: (count, bytes)."""
        count = size = 0
        with self.manifest.connect() as db:
            for rowid, raw, version, length in manifest.unreferenced_versions(db, client):
                count, size = count + 1, size + (length or 0)
                if dry_run:
                    continue
                # The record goes first: a crash in between leaves a copy no
                # record names (space, no harm), never a record of nothing.
                manifest.drop_version(db, rowid)
                db.commit()
                parts = bytes(raw).split(b"/")
                try:
                    vdir = open_chain(self.state_fd, [b"versions", client.encode()] + parts[:-1], create=False)
                except (OSError, FxError):
                    continue  # its folder is gone already
                try:
                    unlink_quietly(os.fsencode(version), vdir)
                finally:
                    os.close(vdir)
        return count, size
