"""The seam between the server and its storage: the operations server/ calls
on a store, and on a file being received.

facade.Store (files on a local disk, an SQLite manifest) is one backend.
Another (objects in an object store, a catalog in a shared database) is a
class with these methods, handed to the server in Store's place; server/ and
protocol/ need not change.  tests/unit/test_seam.py checks that Store and
StagingFile keep to it, parameter for parameter.

Paths are as sent (str, "/"-separated) where a client names a file it sends,
and raw (bytes, as stored) where it names one it was shown.  Refusals are
FxError subclasses, whose message and exit code reach the client.
"""

from __future__ import annotations

from typing import Protocol

from fastxfer.errors import FxError
from fastxfer.protocol import retention, wire
from fastxfer.store.retention import Forgotten
from fastxfer.store.catalog import Rehash
from fastxfer.store.commit import Stored
from fastxfer.store.budget import Budget
from fastxfer.store.staging import PutReply


class Receiving(Protocol):
    """A file being received, chunk by chunk, on one stream."""

    def write(self, offset: int, data: memoryview, digest: bytes) -> None:
        """Take one verified chunk; durable only after flush."""

    def flush(self) -> None:
        """Make every chunk written so far durable, and recorded as received."""

    def close(self) -> None: ...


class Bundling(Protocol):
    """A bundle of small files written aside (its frame's buffer free again), not yet
    durable: finished behind the stream, as received chunks are flushed."""

    def finish(self) -> list[tuple[int, int, str]]:
        """Durable, in place and recorded; per entry (0 stored | 1 unchanged | 2 failed,
        exit code, message).  Each stored or unchanged joins the open snapshot if not 0."""

    def close(self) -> None:
        """Always called, after finish or instead: what was not put in place is removed."""


class StoreSeam(Protocol):
    """What server/ asks of the store, one client (its name) at a time."""

    # ---------------------------------------------------------- sending
    def open_put(self, client: str, path: str, size: int, mtime_ns: int, mode: int,
                 chunk: int, usage: Budget | None = None, force: bool = False,
                 holes: set[int] = frozenset()) -> PutReply:
        """Start, resume or skip ("unchanged") a file; *usage* is shared across one batch."""

    def receive(self, client: str, fid: bytes) -> Receiving:
        """The file of an open put, to write its chunks into."""

    def commit(self, client: str, fid: bytes, digest: bytes, sha256: bytes | None, same: bool = False,
               snap: int = 0) -> Stored:
        """Verify every chunk against *digest* (the hash list's) and put the file in place;
        with *same*, no chunk was sent: the content this client already has stored
        with *digest* is put in place instead.  The file (stored or unchanged) joins
        the open snapshot *snap* if not 0, in the same transaction."""

    def make_dir(self, client: str, path: str, mtime_ns: int | None = None, mode: int | None = None) -> str:
        """Create the folder: "new", "unchanged" (there, recorded with this time and mode) or "stored"."""

    def finish_dirs(self, client: str, items: list[tuple[str, int, int]]) -> None:
        """(path, mode, mtime_ns) of folders, once everything inside them is in place."""

    def make_link(self, client: str, path: str, target: str, mtime_ns: int) -> Stored: ...

    def probe_many(self, client: str, items: list[tuple[str, int, int, bytes | None]]) -> list[str | FxError]:
        """Per (path, size, mtime_ns, sha256 or None): "unchanged", "send" or the refusal."""

    def stage_bundle(self, client: str, entries: list[wire.BundleEntry], snap: int = 0) -> Bundling:
        """Write many small files aside, to be stored (joining the open snapshot *snap*
        if not 0) by the Bundling's finish()."""

    def begin_snapshot(self, client: str, tops: list[tuple[bytes, str | None]], host: str,
                       owner: tuple = (None,) * 4) -> tuple[int, list[str | None]]:
        """Open a snapshot naming (raw path, source) tops, whose stored files join it
        with *owner* (uid, gid, user, group): its id, and each top's previous source."""

    def add_entries(self, client: str, snap: int, rows: list[tuple]) -> list[str]:
        """Record walked entries (protocol/snapshot.parse_entry rows): the paths dropped as not stored."""

    def end_snapshot(self, client: str, snap: int, partial: bool) -> dict:
        """Close it; a complete snapshot becomes the current view of its paths."""

    def forget(self, client: str, policy: retention.Policy, now_ns: int, dry_run: bool, prune: bool) -> Forgotten:
        """Forget the snapshots *policy* does not keep; with *prune*, free what none refers to."""

    # ---------------------------------------------------------- reading
    def snapshot_list(self, client: str, prefix: bytes) -> list[dict]:
        """Kept snapshots naming a path at, above or below *prefix*, oldest first."""

    def resolve_snapshot(self, client: str, at: int | str) -> int:
        """The id that an id, "latest" or "time:NS" names, or RefusedError."""

    def snapshot_listing(self, client: str, snap: int, raw: bytes, after: bytes | None
                         ) -> tuple[list[dict], bytes | None]:
        """One page of a snapshot's entries at or below *raw*."""

    def stores_under(self, client: str, tops: list[bytes]) -> bool:
        """Whether a file is stored at or below any of the raw paths *tops*."""

    def listing(self, client: str, prefix: str, after: bytes | None) -> tuple[list[dict], bytes | None]:
        """One page of entries at or below *prefix* after the raw path *after*, and where the next starts."""

    def version_listing(self, client: str, prefix: str) -> list[dict]: ...

    def read_chunk(self, client: str, path: str, size: int, mtime_ns: int, offset: int,
                   into: memoryview, folders: dict | None = None, holes: bool = False) -> bool:
        """Fill *into* from the stored file listed with that size; *folders* is a cache the caller
        closes.  With *holes*, a span wholly in a hole is not read and True is returned."""

    def verify_stored(self, client: str, raw: bytes) -> tuple[str, bytes | None]:
        """Re-hash at rest: ("ok" | "changed" | "missing", its SHA-256)."""

    def verify_content(self, client: str, digest: bytes, raw: bytes | None = None) -> tuple[str, bytes | None]:
        """Re-hash the content a snapshot names by digest (at *raw* in it), wherever it is held:
        as verify_stored."""

    def rehash_stored(self, client: str, raw: bytes) -> Rehash:
        """verify_stored as a generator: yields the bytes of each chunk read, returns the
        verdict; closing it early releases what it holds."""

    def rehash_content(self, client: str, digest: bytes, raw: bytes | None = None) -> Rehash:
        """verify_content as a generator, as rehash_stored."""

    def receipt_body(self, client: str, raw: bytes, server_fp: bytes, snap: int = 0) -> dict | None:
        """A receipt's body for the file at *raw*, naming snapshot *snap* if it holds that content."""
