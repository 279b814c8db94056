"""Whose a restored entry is: the owner and group a snapshot recorded, given
back when get runs as root (as tar does), by name when the name exists here
and by number otherwise; never otherwise, since only root may give a file
away."""

from __future__ import annotations

import grp
import os
import pwd


class Owners:
    def __init__(self, active: bool | None = None) -> None:
        self.active = os.geteuid() == 0 if active is None else active
        self._users: dict[tuple[str | None, int], int] = {}
        self._groups: dict[tuple[str | None, int], int] = {}

    def ids(self, entry: dict) -> tuple[int, int] | None:
        """(uid, gid) to give the entry, or None: not root, or nothing recorded."""
        if not self.active:
            return None
        uid, gid = entry.get("uid"), entry.get("gid")
        if not isinstance(uid, int) or not isinstance(gid, int) or isinstance(uid, bool) or isinstance(gid, bool) \
                or not 0 <= uid < 2**32 - 1 or not 0 <= gid < 2**32 - 1:  # 2**32-1 is chown's "leave it"
            return None
        return (self._id(self._users, entry.get("user"), uid, lambda n: pwd.getpwnam(n).pw_uid),
                self._id(self._groups, entry.get("group"), gid, lambda n: grp.getgrnam(n).gr_gid))

    @staticmethod
    def _id(cache: dict, name, number: int, lookup) -> int:
        key = (name if isinstance(name, str) else None, number)
        if key not in cache:
            cache[key] = number
            if key[0]:
                try:
                    cache[key] = lookup(key[0])
                except (KeyError, UnicodeEncodeError, ValueError):
                    pass
        return cache[key]
