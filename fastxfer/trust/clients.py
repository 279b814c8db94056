"""Server side: the client fingerprints this server authorized, each under a name."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from fastxfer.errors import UsageError
from fastxfer.trust.jsonfile import load, locked, save

CLIENTS_FILE = "clients.json"
LOCK_FILE = "clients.lock"  # held by every change of clients.json or quotas.json
QUOTAS_FILE = "quotas.json"  # client name -> bytes it may hold on the server

# A client's name is its folder under the server's root: one path component,
# never hidden, never special.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"not a valid client name: {name!r} "
            "(1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
        )
    return name


class Cached:
    """A JSON file re-read only when it was replaced (save renames a new one in):
    workers ask on every stream frame that does work."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[tuple[int, int, int], dict] | None = None

    def read(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._seen is None or self._seen[0] != stamp:
            self._seen = (stamp, load(self.path))
        return dict(self._seen[1])


class ClientList:
    """Server side: fingerprint (hex) -> client name, and each name's quota."""

    def __init__(self, folder: Path, fixed_quotas: Mapping[str, int] | None = None) -> None:
        self.path = folder / CLIENTS_FILE
        self.lock = folder / LOCK_FILE
        self._clients = Cached(self.path)
        self._quotas = Cached(folder / QUOTAS_FILE)
        self.fixed_quotas = dict(fixed_quotas or {})  # the server's config file's: both bounds hold

    def all(self) -> dict[str, str]:
        return self._clients.read()

    def quotas(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._quotas.read().items() if v.isdigit()}  # JSON values are text

    def quota_of(self, name: str) -> int | None:
        """Bytes *name* may hold on the server (stored, every older copy, unfinished); None: no quota.
        The smaller of `trust quota`'s and the config file's, where both are set."""
        bounds = [q for q in (self.quotas().get(name), self.fixed_quotas.get(name)) if q is not None]
        return min(bounds) if bounds else None

    def set_quota(self, name: str, size: int | None) -> None:
        with locked(self.lock):
            data = {k: v for k, v in load(self._quotas.path).items() if v.isdigit()}
            if size is None:
                data.pop(check_name(name), None)
            else:
                data[check_name(name)] = str(size)
            save(self._quotas.path, data)

    def name_of(self, fp: bytes) -> str | None:
        return self.all().get(fp.hex())

    # A change reads the file itself under the lock, not the cache: a server's
    # workers (pairing) and `trust` write it at once, and a change made from a
    # stale copy would drop another's (a client told "paired", not authorized).

    def add(self, fp: bytes, name: str) -> None:
        with locked(self.lock):
            data = load(self.path)
            data[fp.hex()] = check_name(name)
            save(self.path, data)

    def remove(self, fp: bytes | None, name: str | None) -> int:
        with locked(self.lock):
            return self._remove(load(self.path), fp, name)

    def _remove(self, data: dict[str, str], fp: bytes | None, name: str | None) -> int:
        keep = {
            k: v
            for k, v in data.items()
            if not ((fp is not None and k == fp.hex()) or (name is not None and v == name))
        }
        save(self.path, keep)
        return len(data) - len(keep)
