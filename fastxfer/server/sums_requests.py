"""The sums request: stored files re-hashed against the hash list verified at
backup, a page at a time when the client asks so, each page ending once the
server has re-hashed its budget (serve --hash-per-reply), in the middle of a
file if need be.  A handler of control.HANDLERS, given the session it serves,
which keeps a path re-hashed in part from one page to the next."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastxfer.errors import FxError
from fastxfer.protocol import paths, snapshot
from fastxfer.protocol.messages import get_list
from fastxfer.store.catalog import Rehash

if TYPE_CHECKING:
    from fastxfer.server.control import ControlSession

log = logging.getLogger("fastxfer.server")


def sums(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    """SHA-256 of stored files, each re-checked against its record on the way;
    a path followed by NUL and "#" + a digest (a snapshot's entry) names that
    content, wherever the server holds it.  With "page", the answer stops once
    the bytes re-hashed reach the budget, in the middle of a file if need be:
    "next" says how many paths it answers, "done" how much of the next one is
    hashed, and a request that starts with that path goes on with it."""
    items = get_list(msg, "paths", 2000)
    budget = session.hash_budget if msg.get("page") is True else None
    pending, session.pending = session.pending, None
    if pending is not None and (not items or items[0] != pending.item):
        pending.rehash.close()  # the client went on to something else
        pending = None
    lines: list[dict[str, Any]] = []
    hashed = 0
    for index, item in enumerate(items):
        work = pending or sum_start(session, item)
        pending = None
        if isinstance(work, Summing):
            for count in work:  # a chunk re-hashed
                hashed += count
                if budget is not None and hashed >= budget:
                    session.pending = work  # stopped inside it: the next page goes on with it
                    return sums_page(session, lines, index, len(items), hashed)
            work = work.line
        lines.append(work)
        if budget is not None and hashed >= budget and index + 1 < len(items):
            return sums_page(session, lines, index + 1, len(items), hashed)
    return {"t": "sums_ok", "files": lines}


def sums_page(session: ControlSession, lines: list[dict[str, Any]], index: int, asked: int,
              hashed: int) -> dict[str, Any]:
    """A page that answers the first *index* paths; "done": bytes of the next already re-hashed."""
    log.info("client %s: sums page of %d of %d files, %d bytes re-hashed; the client asks again "
             "for the rest", session.name, index, asked, hashed)
    done = session.pending.done if session.pending is not None else 0
    return {"t": "sums_ok", "files": lines, "next": index, "done": done}


def sum_start(session: ControlSession, item: Any) -> dict[str, Any] | Summing:
    """The answer for *item* when no hashing is needed, else its re-hash, not started."""
    name, _, ref = item.partition("\x00") if isinstance(item, str) else ("", "", "")
    digest = snapshot.ref_digest(ref) if ref else None
    try:
        raw = b"/".join(paths.split(name))
        if ref and digest is None:
            raise ValueError
    except (FxError, ValueError, UnicodeEncodeError):
        return {"path": name, "status": "missing", "sha256": None}
    if digest is not None:
        return Summing(item, name, session.store.rehash_content(session.name, digest, raw))
    return Summing(item, item, session.store.rehash_stored(session.name, raw), session.name)


class Summing:
    """One path of a sums request being re-hashed, kept by its session from one
    page to the next: iterating it hashes a chunk at a time, and once it is
    exhausted ``line`` is its answer."""

    def __init__(self, item: str, shown: str, rehash: Rehash, warn_as: str = "") -> None:
        self.item, self.shown, self.rehash, self.warn_as = item, shown, rehash, warn_as
        self.done = 0  # bytes hashed so far
        self.line: dict[str, Any] = {}

    def __iter__(self) -> Iterator[int]:
        while True:
            try:
                count = next(self.rehash)
            except StopIteration as end:
                status, sha = end.value
                if status != "ok" and self.warn_as:
                    log.warning("client %s: %r is %s on disk", self.warn_as, self.item, status)
                self.line = {"path": self.shown, "status": status, "sha256": sha.hex() if sha else None}
                return
            self.done += count
            yield count
