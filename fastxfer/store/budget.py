"""What one client may still put on the server's disk.

Space is taken as data arrives (StagingFile reserves it in bounded steps),
so a put that declares a huge file and sends nothing takes nothing.  What a
put may declare is bounded three ways, so that one client cannot make
another's send fail for lack of space unless stored data really fills the
disk:

- the free space itself (nothing is promised that is not there now);
- the client's share of the free space (``serve --client-share``): what its
  unfinished transfers may still write, with this put, stays below that
  share, which leaves the rest to everyone else;
- its quota (``trust add --quota``, ``trust quota``), if it has one: its
  stored files, every older copy it keeps and its unfinished transfers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastxfer.errors import RefusedError
from fastxfer.protocol.units import human

QuotaOf = Callable[[str], "int | None"]


def no_quota(_client: str) -> int | None:
    return None


@dataclass
class Budget:
    """One client's staging and quota, counted once per put batch and updated
    by each file the batch opens (not a scan of the staging per file)."""

    files: int = -1  # unfinished transfers; -1: not counted yet
    declared: int = 0  # their sizes
    unwritten: int = 0  # what they may still take (declared, not yet on disk)
    quota: int | None = None
    stored: int = 0  # bytes held under the quota (stored files and older copies)

    def count(self, base: int) -> None:
        """Scan one client's staging folder (fd *base*)."""
        self.files = self.declared = self.unwritten = 0
        for entry in os.scandir(base):
            if entry.name.endswith(".data"):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # committed or discarded since the listing
                    continue
                self.files += 1
                self.declared += st.st_size
                # A staging is as long as declared from its creation (sparse): what is
                # not allocated yet is what it may still take.
                self.unwritten += max(0, st.st_size - st.st_blocks * 512)

    def check(self, path: str, needed: int, free: int, share: float) -> None:
        """Refuse *path* (needing *needed* more bytes) if it does not fit this budget."""
        room = int(share * free) - self.unwritten
        if needed > room:
            raise RefusedError(
                f"{path}: more than one client may hold of the server's free space: {human(needed)} needed, "
                f"{human(max(room, 0))} left of this client's {share:.0%} of {human(free)} free "
                "(finish or wait for its other transfers)"
            )
        if self.quota is not None:
            left = self.quota - self.stored - self.declared
            if needed > left:
                raise RefusedError(
                    f"{path}: over this client's quota: {human(needed)} needed, "
                    f"{human(max(left, 0))} left of {human(self.quota)}"
                )

    def add(self, size: int, needed: int) -> None:
        self.files += 1
        self.declared += size
        self.unwritten += needed


class StoredBytes:
    """Bytes each client holds under its quota, asked of the manifest at most
    every MAX_AGE seconds for bundles (many a second), at every put batch."""

    MAX_AGE = 2.0

    def __init__(self, ask: Callable[[str], int]) -> None:
        self.ask = ask
        self.seen: dict[str, tuple[float, int]] = {}

    def of(self, client: str, fresh: bool = False) -> int:
        now = time.monotonic()
        hit = self.seen.get(client)
        if fresh or hit is None or now - hit[0] > self.MAX_AGE:
            hit = (now, self.ask(client))
            self.seen[client] = hit
        return hit[1]

    def grew(self, client: str, size: int) -> None:
        """What this process stored meanwhile counts before the next ask."""
        if client in self.seen:
            at, held = self.seen[client]
            self.seen[client] = (at, held + size)
