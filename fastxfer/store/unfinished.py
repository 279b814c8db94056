"""Unfinished transfers on the server's disk, for the administrator: listed, and
cleared (``fastxfer staging``), even while the server runs."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass

from fastxfer.protocol import layout
from fastxfer.store.diskio import read_file
from fastxfer.store.staging import DATA, META, REC, remove_staging


@dataclass(frozen=True)
class Unfinished:
    client: str
    stem: str  # the transfer's id: the name of its files
    path: str | None  # as sent; None: its creation was cut short (nothing to resume)
    size: int  # declared
    received: int  # bytes of the chunks recorded as durable
    on_disk: int  # bytes it takes
    last: float  # its last sign of life (the newest of its files' times)


YOUNG = 60.0  # seconds: a file without meta this young is being made (a put, a bundle), not left over


def unfinished(top: str, client: str | None = None, now: float | None = None) -> list[Unfinished]:
    """Every unfinished transfer below the staging folder *top* (of one client, if named)."""
    now = time.time() if now is None else now
    found = []
    for folder in sorted(os.scandir(top), key=lambda e: e.name):
        if not folder.is_dir(follow_symlinks=False) or (client is not None and folder.name != client):
            continue
        stems: dict[str, dict[str, os.stat_result]] = {}
        for entry in os.scandir(folder.path):
            stem, _, ext = entry.name.partition(".")
            try:
                stems.setdefault(stem, {})[ext] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # committed or cleared meanwhile
        for stem, parts in sorted(stems.items()):
            if "meta" in parts or now - max(st.st_mtime for st in parts.values()) > YOUNG:
                found.append(_one(folder.path, folder.name, stem, parts))
    return found


def _one(folder: str, client: str, stem: str, parts: dict[str, os.stat_result]) -> Unfinished:
    path, size, received = None, 0, 0
    if "meta" in parts:
        base = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            meta = json.loads(read_file(base, stem.encode() + META))
            path, size = str(meta["path"]), int(meta["size"])
            have = layout.parse_record(read_file(base, stem.encode() + REC), layout.chunk_count(size, meta["chunk"]))
            received = sum(layout.chunk_span(size, meta["chunk"], i)[1] for i in have)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finally:
            os.close(base)
    return Unfinished(client, stem, path, size, received,
                      sum(st.st_blocks * 512 for st in parts.values()),
                      max(st.st_mtime for st in parts.values()))


def clear(top: str, item: Unfinished) -> bool:
    """Remove one unfinished transfer; False if a stream or a commit holds it right now
    (the same lock the commit fence takes, so a file is never cleared under a commit)."""
    base = os.open(os.path.join(top, item.client), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        stem = item.stem.encode()
        try:
            fd = os.open(stem + DATA, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=base)
        except FileNotFoundError:
            fd = -1
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        return False
                    raise
            remove_staging(base, stem)
            os.fsync(base)
        finally:
            if fd >= 0:
                os.close(fd)
    finally:
        os.close(base)
    return True
