"""Server side: open pairing invitations, in invites.json beside clients.json.

`fastxfer invite` writes one; a server's worker claims it when a client
starts a pairing with its number, and a claim uses it up whatever the
outcome: one PAKE run, so one guess, per code.  Workers are processes, so
every read-change-write of the file holds an flock on invites.lock; the
file itself is replaced atomically (jsonfile.save), mode 0600, since it
holds the codes' secret words.

An invitation that expired or was used is remembered for a day after its
expiry, so that a late client hears which of the two it was; after that it
is forgotten ("no such invitation").
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastxfer.errors import TrustError, UsageError
from fastxfer.protocol import pairing
from fastxfer.trust.clients import check_name
from fastxfer.trust.jsonfile import locked, read_json, save

INVITES_FILE = "invites.json"
LOCK_FILE = "invites.lock"
TTL = 600.0  # seconds an invitation stays open: 10 minutes
MAX_TTL = 86400.0
REMEMBERED = 86400.0  # an expired or used invitation is still named for so long after its expiry
SHORT_NUMBERS = 99  # numbers are drawn from 1-99 (quick to read aloud) while one is free


@dataclass(frozen=True)
class Invitation:
    code: pairing.Code
    name: str
    expires: float  # Unix time
    used: bool = False

    @property
    def number(self) -> int:
        return self.code.number

    def to_json(self) -> dict[str, object]:
        return {"code": str(self.code), "name": self.name, "expires": self.expires, "used": self.used}


def _parse(number: str, entry: object) -> Invitation | None:
    """One entry of the file; a damaged one is skipped, never trusted."""
    try:
        assert isinstance(entry, dict)
        code = pairing.parse_code(str(entry["code"]))
        assert str(code.number) == number and code.password == str(entry["code"]).encode()
        expires = float(entry["expires"])
        return Invitation(code, check_name(str(entry["name"])), expires, entry.get("used") is True)
    except (AssertionError, KeyError, TypeError, ValueError, UsageError):
        return None


class InviteBook:
    """The invitations of one server state folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / INVITES_FILE

    @contextmanager
    def _locked(self) -> Iterator[dict[int, Invitation]]:
        """The invitations, under the lock; whatever the block leaves in the
        dict is written back, also when it refuses (the pruning stays)."""
        with locked(self.folder / LOCK_FILE):
            book = self._read()
            before = dict(book)
            try:
                yield book
            finally:
                if book != before:
                    save(self.path, {str(n): inv.to_json() for n, inv in sorted(book.items())})

    def _read(self) -> dict[int, Invitation]:
        raw = read_json(self.path)
        if not isinstance(raw, dict):
            return {}
        found = {}
        for number, entry in raw.items():
            inv = _parse(str(number), entry)
            if inv is not None:
                found[inv.number] = inv
        return found

    def all(self) -> list[Invitation]:
        return sorted(self._read().values(), key=lambda inv: inv.number)

    def create(self, name: str, ttl: float = TTL, now: float | None = None) -> Invitation:
        """A new invitation for *name*, open for *ttl* seconds."""
        check_name(name)
        if not 0 < ttl <= MAX_TTL:
            raise UsageError(f"an invitation is open for 1 s to {int(MAX_TTL // 3600)} h")
        now = time.time() if now is None else now
        with self._locked() as book:
            _prune(book, now)
            free = [n for n in range(1, SHORT_NUMBERS + 1) if n not in book]
            if not free:
                free = [n for n in range(1, pairing.MAX_NUMBER + 1) if n not in book]
            if not free:
                raise UsageError("too many open invitations; wait for some to expire")
            number = free[secrets.randbelow(len(free))]
            secret = secrets.randbelow(len(pairing.WORDS) ** pairing.WORD_COUNT)
            inv = Invitation(pairing.code_from(number, secret), name, now + ttl)
            book[number] = inv
        return inv

    def claim(self, number: int, now: float | None = None) -> Invitation:
        """Use up invitation *number* for one pairing attempt, before its PAKE
        runs; TrustError if it is not open.  The errors never show the code."""
        now = time.time() if now is None else now
        again = "on the server run: fastxfer invite --name NAME, and pair with the new code"
        with self._locked() as book:
            _prune(book, now)
            inv = book.get(number)
            if inv is None:
                raise TrustError(f"no pairing invitation {number} is open on this server: the code is wrong, "
                                 f"or it expired or was used long ago; {again}")
            if inv.used:
                raise TrustError(f"the pairing code {inv.code.shown} was already used (a wrong code uses it up "
                                 f"too); {again}")
            if inv.expires <= now:
                raise TrustError(f"the pairing code {inv.code.shown} expired {_ago(now - inv.expires)} ago; {again}")
            book[number] = Invitation(inv.code, inv.name, inv.expires, used=True)
        return inv

    def cancel(self, name: str) -> int:
        """Use up every open invitation for *name*; how many there were."""
        with self._locked() as book:
            hit = [n for n, inv in book.items() if inv.name == name and not inv.used]
            for n in hit:
                inv = book[n]
                book[n] = Invitation(inv.code, inv.name, inv.expires, used=True)
        return len(hit)


def _prune(book: dict[int, Invitation], now: float) -> None:
    for number in [n for n, inv in book.items() if inv.expires + REMEMBERED <= now]:
        del book[number]


def _ago(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 120 else f"{int(seconds // 60)} min"
