"""The server's disk, as one object: Store, composed of the parts that own
each piece, every part given the others it needs when it is built.

    ROOT/<client>/<path as sent>          committed files, nothing else (commit.py)
    ROOT/.fastxfer/staging/<client>/...   files being received (staging.py)
    ROOT/.fastxfer/versions/<client>/...  replaced copies (commit.py)
    ROOT/.fastxfer/manifest.sqlite        what each client has stored, its snapshots (manifest.py)
    ROOT/.fastxfer/fid.key                the secret of transfer ids (staging.py)

Store's methods are the ones server/ and cli/ call (seam.py names those of
server/); each hands the call to the part that owns it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fastxfer.errors import FxError
from fastxfer.localfs import DIR_FLAGS
from fastxfer.protocol import retention, wire
from fastxfer.store.bundles import Bundles, StagedBundle
from fastxfer.store.catalog import Catalog, Rehash
from fastxfer.store.commit import Commit, Folders, Stored, Versions
from fastxfer.store.diskio import MEMORY_FILESYSTEMS, current_umask, filesystem_type
from fastxfer.store import manifest
from fastxfer.store.manifest import Manifest
from fastxfer.store.retention import Forgotten, Retention
from fastxfer.store.snapshots import Snapshots
from fastxfer.store.budget import Budget, QuotaOf, no_quota
from fastxfer.store.staging import PutReply, Staging, StagingFile

STATE = ".fastxfer"


@dataclass(frozen=True)
class Policy:
    """What the server keeps, per client (``fastxfer serve`` options)."""

    max_staging_bytes: int = 1 << 40  # bytes of unfinished transfers
    max_staging_files: int = 100_000  # unfinished transfers
    staging_max_age: float = 7 * 24 * 3600.0  # an abandoned transfer is removed after this
    client_share: float = 0.9  # of the free space, what one client's unfinished transfers may still take
    min_age_ns: int = retention.DEFAULT_MIN_AGE  # a client's own forget keeps every snapshot younger
    # Applied after every complete snapshot, with min_age_ns and --prune (empty: keep every snapshot).
    retention: retention.Policy = retention.Policy()


class Store:
    """One per worker process; its manifest connections are per thread, from a pool."""

    def __init__(self, root: str, policy: Policy = Policy(), quota_of: QuotaOf = no_quota) -> None:
        self.policy = policy
        self.root = os.path.abspath(root)
        staging_top = os.path.join(self.root, STATE, "staging")
        os.makedirs(staging_top, exist_ok=True)
        os.makedirs(os.path.join(self.root, STATE, "versions"), exist_ok=True)
        self.root_fd = os.open(self.root, DIR_FLAGS)
        self.state_fd = os.open(STATE, DIR_FLAGS, dir_fd=self.root_fd)
        self.manifest = Manifest(os.path.join(self.root, STATE, "manifest.sqlite"))
        self.versions = Versions(self.state_fd)
        self.folders = Folders(self.root_fd, self.manifest, self.versions)
        # Reserving a file's space at put costs a disk filesystem next to
        # nothing and keeps the file in one piece.  On a memory filesystem it
        # allocates every page up front, before any stream may start: the same
        # work the writes would do in parallel, made serial (0.27 s a GiB here).
        preallocate = filesystem_type(self.root) not in MEMORY_FILESYSTEMS
        self.staging = Staging(self.root_fd, self.state_fd, staging_top, policy, preallocate,
                               self.manifest, self.folders, quota_of)
        self.committer = Commit(self.root_fd, self.manifest, self.staging, self.versions)
        self.catalog = Catalog(self.root_fd, self.state_fd, self.manifest)
        self.snapshots = Snapshots(self.root_fd, self.manifest, self.versions)
        self.bundles = Bundles(self.root_fd, self.manifest, self.staging, self.folders, self.versions,
                               self.catalog, current_umask())

    # ------------------------------------------------------- administration (cli/)

    def init_manifest(self) -> None:
        """Create the manifest once, in the master, before workers open it."""
        self.manifest.create()

    def clean_staging(self, now: float) -> int:
        """Remove transfers abandoned longer than the policy allows; at start only."""
        return self.staging.clean_staging(now)

    def close(self) -> None:
        """Every descriptor the store holds: the master closes its store before
        it forks, so no worker inherits a SQLite connection or a folder."""
        self.manifest.close()
        for fd in (self.state_fd, self.root_fd):
            os.close(fd)

    def stored_files(self, client: str | None) -> list[tuple[str, bytes, bytes]]:
        """(client, path, digest) of every file of the current view."""
        return self.catalog.stored_files(client)

    def snapshot_contents(self, client: str | None) -> list[tuple[str, bytes, bytes, list[int]]]:
        """(client, digest, a path, snapshot ids) of every content kept snapshots refer to."""
        with self.manifest.connect() as db:
            clients = [client] if client else manifest.snapshot_clients(db)
            return [(c, *row) for c in clients for row in manifest.snapshot_contents(db, c)]

    # ------------------------------------------------------------ receiving

    def open_put(self, client: str, path: str, size: int, mtime_ns: int, mode: int,
                 chunk: int, usage: Budget | None = None, force: bool = False,
                 holes: set[int] = frozenset()) -> PutReply:
        return self.staging.open_put(client, path, size, mtime_ns, mode, chunk, usage, force, holes)

    def staging_fd(self, client: str, create: bool) -> int:
        """The client's staging folder, as StagingFile opens it."""
        return self.staging.staging_fd(client, create)

    def receive(self, client: str, fid: bytes) -> StagingFile:
        """The staging file of a put, opened to write chunks into."""
        return StagingFile(self.staging, client, fid)

    def commit(self, client: str, fid: bytes, digest: bytes, sha256: bytes | None, same: bool = False,
               snap: int = 0) -> Stored:
        return self.committer.commit(client, fid, digest, sha256, same, snap)

    def make_dir(self, client: str, path: str, mtime_ns: int | None = None, mode: int | None = None) -> str:
        return self.folders.make_dir(client, path, mtime_ns, mode)

    def finish_dirs(self, client: str, items: list[tuple[str, int, int]]) -> None:
        self.folders.finish_dirs(client, items)

    def make_link(self, client: str, path: str, target: str, mtime_ns: int) -> Stored:
        return self.folders.make_link(client, path, target, mtime_ns)

    def probe_many(self, client: str, items: list[tuple[str, int, int, bytes | None]]) -> list[str | FxError]:
        return self.bundles.probe_many(client, items)

    def stage_bundle(self, client: str, entries: list[wire.BundleEntry], snap: int = 0) -> StagedBundle:
        return self.bundles.stage_bundle(client, entries, snap)

    def commit_bundle(self, client: str, entries: list[wire.BundleEntry], snap: int = 0) -> list[tuple[int, int, str]]:
        """stage_bundle and finish it at once."""
        bundle = self.bundles.stage_bundle(client, entries, snap)
        try:
            return bundle.finish()
        finally:
            bundle.close()

    def begin_snapshot(self, client: str, tops: list[tuple[bytes, str | None]], host: str,
                       owner: tuple = (None,) * 4) -> tuple[int, list[str | None]]:
        return self.snapshots.begin(client, tops, host, owner)

    def add_entries(self, client: str, snap: int, rows: list[tuple]) -> list[str]:
        return self.snapshots.add(client, snap, rows)

    def end_snapshot(self, client: str, snap: int, partial: bool) -> dict:
        return self.snapshots.end(client, snap, partial)

    def forget(self, client: str, policy: retention.Policy, now_ns: int, dry_run: bool, prune: bool) -> Forgotten:
        """Snapshots forgotten by *policy*, and with *prune* the older copies none refers to removed."""
        keeper = Retention(self.state_fd, self.manifest)
        out = keeper.forget(client, policy, now_ns, dry_run)
        if prune:
            out.pruned_files, out.pruned_bytes = keeper.prune(client, dry_run)
        return out

    # -------------------------------------------------------------- reading

    def snapshot_list(self, client: str, prefix: bytes) -> list[dict]:
        return self.snapshots.list(client, prefix)

    def resolve_snapshot(self, client: str, at: int | str) -> int:
        return self.snapshots.resolve(client, at)

    def snapshot_listing(self, client: str, snap: int, raw: bytes, after: bytes | None
                         ) -> tuple[list[dict], bytes | None]:
        return self.snapshots.listing(client, snap, raw, after)

    def stores_under(self, client: str, tops: list[bytes]) -> bool:
        return self.catalog.stores_under(client, tops)

    def listing(self, client: str, prefix: str, after: bytes | None) -> tuple[list[dict], bytes | None]:
        return self.catalog.listing(client, prefix, after)

    def version_listing(self, client: str, prefix: str) -> list[dict]:
        return self.catalog.version_listing(client, prefix)

    def read_chunk(self, client: str, path: str, size: int, mtime_ns: int, offset: int,
                   into: memoryview, folders: dict | None = None, holes: bool = False) -> bool:
        return self.catalog.read_chunk(client, path, size, mtime_ns, offset, into, folders, holes)

    def verify_stored(self, client: str, raw: bytes) -> tuple[str, bytes | None]:
        return self.catalog.verify_stored(client, raw)

    def verify_content(self, client: str, digest: bytes, raw: bytes | None = None) -> tuple[str, bytes | None]:
        return self.catalog.verify_content(client, digest, raw)

    def rehash_stored(self, client: str, raw: bytes) -> Rehash:
        return self.catalog.rehash_stored(client, raw)

    def rehash_content(self, client: str, digest: bytes, raw: bytes | None = None) -> Rehash:
        return self.catalog.rehash_content(client, digest, raw)

    def receipt_body(self, client: str, raw: bytes, server_fp: bytes, snap: int = 0) -> dict | None:
        return self.catalog.receipt_body(client, raw, server_fp, snap)
