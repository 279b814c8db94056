"""``fastxfer get``: list, fetch chunks over parallel streams, verify, place.

Theory of operation.  The control session lists what is stored at or
below PATH; the plan maps each entry to a place below DEST (DEST is the
copy of PATH), with every part checked as the server names it.  Nothing
the server says can create, change or follow anything outside DEST: every
folder is opened without following links (a link restored earlier in the
run included), files are made only as new temporaries in such a folder and
renamed within it, modes and times are set through descriptors, and links
are made exactly as stored, because get never follows one.  Stream threads ask for chunks (REQ) and the server answers
with sealed DATA frames; each chunk is checked against its SHA-256 and
written at its offset into a hidden temporary file beside its final place.
When a file's chunks are all in, their hash list must equal the digest the
server recorded when it verified the file at backup time.  Files are
restored in waves; a wave's verified files are made durable by one sync of
each filesystem they are on, then renamed into place one by one (each
appears whole or not at all), then each folder that changed is synced once:
many small files cost no fsync each.  An existing local file is never
replaced unless --force.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import stat
import threading

from fastxfer.client import events
from fastxfer.client.connect import ControlClient, Welcome, keep_alive
from fastxfer.client.after_fetch import delete_extra, hard_links, link_all
from fastxfer.client.fetch_stream import FetchStream
from fastxfer.client.owners import Owners
from fastxfer.client.place import Places
from fastxfer.client.restore_plan import Fetch, Outcome, already_there, chunks_of, link_stays_inside, wave_size
from fastxfer.errors import ConnectError, FxError, LocalFileError, ProtocolError
from fastxfer.localfs import make_chain, open_chain
from fastxfer.net.pace import Pacer
from fastxfer.protocol import layout
from fastxfer.protocol.snapshot import SPECIAL

DEVICES = {"chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


class Getter:
    def __init__(self, control: ControlClient, welcome: Welcome, streams: int, force: bool,
                 sink: events.Sink = events.ignore, safe_links: bool = False, devices: bool = False,
                 pacer: Pacer | None = None) -> None:
        self.control = control
        self.pacer = pacer  # --bwlimit: one bucket over every stream (and every Getter) of the command
        self.welcome = welcome
        self.streams = streams
        self.force = force
        self.safe_links = safe_links
        self.devices = devices  # device nodes are made only when asked, by root
        self.owners = Owners()
        self.places = Places(sink, self.owners)
        # Chunks to ask for; a deque's appends and pops are atomic, and a stream
        # waiting for work waits on the places' condition, which the main thread notifies.
        self.jobs: collections.deque[tuple[Fetch, int]] = collections.deque()
        self.temp_prefix = b".fastxfer-get-" + os.urandom(6).hex().encode() + b"-"
        self.temp_numbers = itertools.count()
        self.fatal: FxError | None = None
        self.dirs: list[tuple[list[bytes], int, int, tuple[int, int] | None]] = []  # parts, mode, mtime, owner
        self.folders: dict[tuple[bytes, ...], int] = {}  # the wave's open folders, by parts below root
        self.made: set[tuple[bytes, ...]] = set()  # folders this run made (parts below root)
        self.own = (os.geteuid(), os.getegid())
        self.born: dict[tuple[bytes, ...], tuple[int, int] | None] = {}  # folder -> its new files' ids
        self.threads: list[threading.Thread] = []
        self.placer: threading.Thread | None = None  # the previous wave, being placed
        self.done = False  # no more waves: streams leave
        self.delete_held_back = False  # --delete did nothing: something was not restored
        self.alive = 0  # stream threads still working (one told "busy" leaves if others remain)

    @property
    def bytes_received(self) -> int:
        return self.places.bytes_received

    def run(self, root: str, planned: list[tuple[dict, list[bytes]]],
            delete_in: list[list[bytes]] | None = None) -> list[Outcome]:
        """Restore *planned*; with *delete_in* (--delete), the folders of the
        copy, in which whatever the listing does not hold is then removed."""
        keep = {tuple(parts) for _e, parts in planned}
        planned, linked = hard_links(planned)
        files = [e for e, _ in planned if e.get("kind", "file") == "file"]
        self.places.sink(events.Planned(sum(int(e.get("size") or 0) for e in files), len(files), "receiving"))
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:  # removed or replaced since it was prepared
            raise LocalFileError(f"{root}: {exc.strerror}; nothing restored") from None
        try:
            # In waves, so a tree of any size holds a bounded number of
            # descriptors; the streams stay open from one wave to the next.
            self.streams = min(self.streams, max(1, sum(chunks_of(e) for e, _ in planned)))
            size = wave_size()
            try:
                for start in range(0, len(planned), size):
                    self._wave(root_fd, planned[start : start + size])
                    if self.fatal is not None:
                        break
            finally:
                self._placed()
                with self.places.cond:
                    self.done = True
                    self.places.cond.notify_all()
                if self.fatal is None:  # after a failure or Ctrl-C, no waiting on streams stuck in a read
                    for t in self.threads:
                        t.join(timeout=5)
            if self.fatal is None:
                link_all(self, root_fd, linked)
            if delete_in is not None:
                delete_extra(self, root_fd, delete_in, keep)
            self._finish_dirs(root_fd)
        finally:
            os.close(root_fd)
            self.places.sink(events.Finished())
        return self.places.outcomes

    def _finish_dirs(self, root_fd: int) -> None:
        """Folders' modes and times last, deepest first: filling them changed their times."""
        for parts, mode, mtime_ns, ids in sorted(self.dirs, key=lambda d: -len(d[0])):
            try:
                fd = open_chain(root_fd, parts, create=False)
            except (OSError, FxError):
                continue
            try:
                if ids is not None:
                    os.fchown(fd, *ids)
                os.fchmod(fd, mode & 0o777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)

    def _wave(self, root_fd: int, planned: list[tuple[dict, list[bytes]]]) -> None:
        fetches: list[Fetch] = []
        try:
            for entry, parts in planned:
                outcome = self._prepare(root_fd, entry, parts, fetches)
                if outcome is not None:
                    self.places.record(outcome)
            self.places.pending = len(fetches)
            for f in fetches:
                if f.left == 0:
                    self.places.finish(f)
            with self.places.cond:  # streams waiting for work check the queue holding this
                for f in fetches:
                    for i in range(f.left):
                        self.jobs.append((f, i))
                self.places.cond.notify_all()
            if not self.threads and self.jobs:
                self.threads = [threading.Thread(target=FetchStream(self).run, daemon=True)
                                for _ in range(self.streams)]
                self.alive = len(self.threads)
                for t in self.threads:
                    t.start()
            while True:
                with self.places.cond:
                    if not self.places.pending or self.fatal is not None:
                        break
                    self.places.cond.wait(0.5)
                try:  # not holding the lock: a reconnection may take seconds
                    self.control.check()
                    keep_alive(self.control)
                except FxError as exc:
                    self.stop(exc)
            for f in fetches:
                if f.status == "pending":
                    self.places.abandon(f, self.fatal or ConnectError("not restored"))
            # What was verified is kept, even when the wave ended early. It is
            # placed (synced, renamed, its folders synced) while the next wave
            # is prepared and fetched: the disk's sync and the network overlap.
            ready, folders, self.folders = self.places.take_ready(), self.folders, {}
            self._placed()
            self.placer = threading.Thread(target=self._place, args=(ready, folders), daemon=True)
            self.placer.start()
        except BaseException:  # Ctrl-C: no temporary is left behind
            self.stop(FxError("interrupted"))
            self._placed()
            for f in fetches:
                if f.status in ("pending", "verified"):
                    self.places.abandon(f, FxError("interrupted"))
            raise
        finally:
            for fd in self.folders.values():
                os.close(fd)
            self.folders.clear()

    def _place(self, ready: list[Fetch], folders: dict[tuple[bytes, ...], int]) -> None:
        try:
            self.places.place(ready)
        finally:
            for fd in folders.values():
                os.close(fd)

    def _placed(self) -> None:
        """Wait for the previous wave's files to be in place (one wave placed at a time, in order)."""
        if self.placer is not None:
            self.placer.join()
            self.placer = None

    def _folder(self, root_fd: int, parts: list[bytes]) -> int:
        """The folder at *parts* below root, created if missing, opened once a wave."""
        key = tuple(parts)
        fd = self.folders.get(key)
        if fd is None:
            fd, made = make_chain(root_fd, parts)
            self.folders[key] = fd
            if made:
                self.made.add(key)
            if self.owners.active:
                # A new file is ours, with our group or its folder's (setgid, grpid): when
                # they agree, a file meant to be ours and our group's needs no fchown.
                self.born[key] = self.own if os.fstat(fd).st_gid == self.own[1] else None
        return fd

    def _prepare(self, root_fd: int, entry: dict, parts: list[bytes], fetches: list[Fetch]) -> Outcome | None:
        shown = os.fsdecode(b"/".join(parts))
        try:
            return self._prepare_one(root_fd, entry, parts, fetches, shown)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A local failure, or a listing entry that makes no sense: this entry only.
            return Outcome(shown, "failed", LocalFileError(f"{shown}: not restored ({exc})"))

    def _prepare_one(self, root_fd: int, entry: dict, parts: list[bytes], fetches: list[Fetch],
                     shown: str) -> Outcome | None:
        try:
            parent = self._folder(root_fd, parts[:-1])
        except (OSError, FxError) as exc:
            return Outcome(shown, "failed", LocalFileError(f"{shown}: cannot create its folder ({exc})"))
        folder = tuple(parts[:-1])
        here: os.stat_result | None = None
        if folder not in self.made:  # in a folder this run made, only it puts anything
            try:
                here = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
        exists = here is not None
        if entry.get("kind") == "dir":
            try:
                self._folder(root_fd, parts)
            except (OSError, FxError) as exc:
                return Outcome(shown, "failed", LocalFileError(f"{shown}: cannot create the folder ({exc})"),
                               kind="dir")
            mode, ids = int(entry["mode"]) & 0o777, self.owners.ids(entry)
            if here is not None and stat.S_ISDIR(here.st_mode) and not self.force:
                mode &= stat.S_IMODE(here.st_mode)  # a folder that was there: never opened wider
                ids = None  # nor given away
            self.dirs.append((parts, mode, int(entry["mtime_ns"]), ids))
            # Made by this run (now or as a parent of what came first), or there already: not "restored".
            made = tuple(parts) in self.made
            return Outcome(shown, "restored" if made else "unchanged", kind="dir", how="new" if made else "")
        if exists and not self.force:
            if already_there(entry, here, parts, parent):
                return Outcome(shown, "unchanged", kind=entry.get("kind", "file"))
            return Outcome(shown, "skipped", LocalFileError(f"{shown}: exists locally; not replaced (use --force)"))
        if entry.get("kind", "file") != "file":
            other = self._make_other(parent, entry, parts, shown)
            if exists and other.status == "restored":
                other.how = "changed"
            return other
        if not entry.get("digest") or not layout.valid_layout(int(entry["size"]), int(entry["chunk"])):
            return Outcome(shown, "failed", ProtocolError(f"{shown}: the server's record of it is incomplete"))
        f = Fetch(entry, parts, parent=parent, born=self.born.get(folder), replaced=exists)
        f.tmp = self.temp_prefix + b"%d" % next(self.temp_numbers)
        f.tag = hashlib.sha256(f.tmp).digest()[:16]
        f.left = layout.chunk_count(f.size, f.chunk)
        f.digests = [None] * f.left
        fetches.append(f)  # before its temporary exists: a Ctrl-C from here on still finds and removes it
        try:
            f.fd = os.open(f.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        except OSError:
            fetches.pop()
            raise
        return None

    def _make_other(self, parent: int, entry: dict, parts: list[bytes], shown: str) -> Outcome:
        """A link, a FIFO or (with --devices) a device node, made aside and renamed into place."""
        kind = entry.get("kind")
        device = kind in DEVICES and self.devices and isinstance(entry.get("rdev"), int) and entry["rdev"] > 0
        if kind in SPECIAL and kind != "fifo" and not device:  # a socket is made by its program
            return Outcome(shown, "recorded", kind=str(kind))
        if kind not in ("link", "fifo") and not device:
            return Outcome(shown, "failed", ProtocolError(f"{shown}: unknown kind {str(kind)[:20]!r}"))
        target = entry.get("target") or ""
        if kind == "link" and self.safe_links and not link_stays_inside(parts, target):
            return Outcome(shown, "unsafe", LocalFileError(f"{shown}: link to {target!r} leaves the restore; "
                                                           f"not created (--safe-links)"))
        tmp = self.temp_prefix + b"%d" % next(self.temp_numbers)
        if kind == "link":
            os.symlink(os.fsencode(target), tmp, dir_fd=parent)
        elif device:
            os.mknod(tmp, (int(entry["mode"]) & 0o777) | DEVICES[kind], int(entry["rdev"]), dir_fd=parent)
        else:
            os.mkfifo(tmp, int(entry["mode"]) & 0o777, dir_fd=parent)
        try:
            ids = self.owners.ids(entry)
            if ids is not None:
                os.chown(tmp, *ids, dir_fd=parent, follow_symlinks=False)
            if kind != "link":  # tmp is the node just made here (mkfifo and mknod never follow a link)
                os.chmod(tmp, int(entry["mode"]) & 0o777, dir_fd=parent)  # whatever the umask took
                os.utime(tmp, ns=(int(entry["mtime_ns"]),) * 2, dir_fd=parent, follow_symlinks=False)
            os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            os.unlink(tmp, dir_fd=parent)
            raise
        return Outcome(shown, "restored", kind=str(kind), how="new")

    def stop(self, exc: FxError) -> None:
        with self.places.cond:
            self.fatal = self.fatal or exc
            self.places.cond.notify_all()

