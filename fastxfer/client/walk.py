"""What ``fastxfer send`` sends: the entries below the paths a user names.

rsync's rule: ``send /a/b/dir`` sends ``dir/...``, ``send /a/b/dir/`` sends
what is inside dir.  Folders, regular files and symlinks (as links, never
followed, unless asked) are sent; sockets, FIFOs (never opened) and devices
are entries recorded in the snapshot only; whatever cannot be read or
vanished, and a followed link that leads back to a folder holding it (a
loop), is skipped with a reason.
Names travel as Python's surrogateescape strings, so bytes that are not
UTF-8 round-trip unchanged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from fastxfer.client.filters import Filters, is_cache_tag, rule


def display(name: str) -> str:
    """A name as a terminal line can show it: as is when printable UTF-8, else escaped and quoted."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if text == name and text.isprintable():
        return text
    return "'" + text.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


@dataclass
class Entry:
    local: str
    remote: str
    kind: str  # "file", "dir" or "link"
    size: int
    mtime_ns: int
    mode: int
    target: str | None = None
    follow: bool = False  # reached through a link the user asked to follow
    uid: int = 0
    gid: int = 0
    rdev: int = 0  # a device's numbers
    hardlink: str | None = None  # a file's other name met earlier in the walk: recorded, not sent
    inode: tuple[int, int] | None = None  # (device, inode) of a file with several names
    shown: str = ""  # how messages name its source, when not as *local* (standard input: "-")


@dataclass
class Skipped:
    local: str
    reason: str


@dataclass
class Walked:
    """What a walk found, what it could not read, and what the filters left out."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    excluded: int = 0  # entries left out by a pattern or as a cache's contents (a folder counts once)
    caches: list[str] = field(default_factory=list)  # folders whose contents were left out (--exclude-caches)
    mounts: list[str] = field(default_factory=list)  # other filesystems not entered (--one-file-system)


def walk(args: list[str], dest: str | None, excludes: list[str] = (), follow_links: bool = False
         ) -> tuple[list[Entry], list[Skipped]]:
    done = walk_filtered(args, dest, Filters([rule(p, False) for p in excludes]), follow_links)
    return done.entries, done.skipped


def walk_filtered(args: list[str], dest: str | None, filters: Filters, follow_links: bool = False) -> Walked:
    walker = _Walker(filters, follow_links)
    for arg in args:
        top, remote, base, contents_only = _named(arg, dest)
        walker.top(top, remote, base, contents_only)
    _pair_hard_links(walker.done.entries)
    return walker.done


def _pair_hard_links(entries: list[Entry]) -> None:
    """A file with several names in the walk is sent once: the later names
    become records of the first (each snapshot gives them back as links)."""
    first: dict[tuple[int, int], str] = {}
    for e in entries:
        if e.kind == "file" and e.inode is not None:
            e.hardlink = first.setdefault(e.inode, e.remote)
            if e.hardlink == e.remote:
                e.hardlink = None


def _named(arg: str, dest: str | None) -> tuple[str, str, str, bool]:
    """(local path, stored path, name below it, whether only its contents are sent)."""
    prefix = dest.strip("/") if dest else ""
    top = os.path.normpath(arg)
    base = os.path.basename(top)
    contents_only = (arg.endswith("/") and len(arg) > 1) or base in (".", "..", "")
    if contents_only:
        base = ""
    return top, "/".join(p for p in (prefix, base) if p), base, contents_only


def tops(args: list[str], dest: str | None) -> list[tuple[str, str]]:
    """(stored path, absolute source) of each path named: what a snapshot of the send names."""
    out: dict[str, str] = {}
    for arg in args:
        top, remote, _base, _contents = _named(arg, dest)
        out.setdefault(remote, os.path.abspath(top))
    return list(out.items())


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _real_parents(path: str) -> list[tuple[tuple[int, int], str]]:
    """(device, inode) and name of every folder that really holds *path*, up to /."""
    out = []
    here = os.path.realpath(path)
    while (parent := os.path.dirname(here)) != here:
        here = parent
        try:
            st = os.stat(here)
        except OSError:
            continue  # unreadable: it cannot be recognised when met again; the folders above it still can
        out.append(((st.st_dev, st.st_ino), here))
    return out


class _Walker:
    """One walk: what it found, what it skipped, and the folders it is inside.

    Following links, a folder can hold itself: ``self -> .`` nests until the
    kernel's 40-link limit, ``up -> ..`` (with other links beside it) grows
    the tree without end. So every folder entered is known by (device, inode)
    while its contents are walked, together with the folders that really hold
    it (a link leads anywhere, and walking a folder that holds the current one
    reaches the current one again); a folder met again among them is a loop,
    skipped once, where it is met. Folders reached twice side by side are not
    loops and are walked each time.
    """

    def __init__(self, filters: Filters, follow: bool) -> None:
        self.filters, self.follow = filters, follow
        self.done = Walked()
        self.entries, self.skipped = self.done.entries, self.done.skipped
        self.inside: dict[tuple[int, int], str] = {}
        self.device: int | None = None  # the top's filesystem, with --one-file-system
        self.mounts_seen: set[tuple[int, int]] = set()

    def top(self, local: str, remote: str, base: str, contents_only: bool) -> None:
        self.inside = dict(_real_parents(local)) if self.follow else {}
        self.device = None
        self.visit(local, remote, base, contents_only)

    def visit(self, local: str, remote: str, rel: str, contents_only: bool = False,
              found: os.DirEntry | None = None) -> None:
        follow = self.follow
        try:
            if found is not None:  # its folder's scan already holds the name: no path lookup
                st = found.stat(follow_symlinks=follow)
            else:
                st = os.stat(local) if follow else os.lstat(local)
        except OSError as exc:
            self.skipped.append(Skipped(local, exc.strerror or "cannot be read"))
            return
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(local)
            except OSError as exc:
                self.skipped.append(Skipped(local, exc.strerror or "cannot be read"))
                return
            self.entries.append(Entry(local, remote, "link", 0, st.st_mtime_ns, 0o777, target,
                                      uid=st.st_uid, gid=st.st_gid))
        elif stat.S_ISREG(mode):
            self.entries.append(Entry(local, remote, "file", st.st_size, st.st_mtime_ns, stat.S_IMODE(mode),
                                      follow=follow, uid=st.st_uid, gid=st.st_gid,
                                      inode=(st.st_dev, st.st_ino) if st.st_nlink > 1 else None))
        elif stat.S_ISDIR(mode):
            self._folder(local, remote, rel, st, contents_only, found)
        else:
            self._special(local, remote, st)

    def _same_device(self, local: str, st: os.stat_result) -> bool:
        """With --one-file-system: whether the folder *st* is on the top's
        filesystem; one on another is noted once (a mount point) and kept as an
        empty folder, as rsync -x does. Files are never mount-checked (rsync's rule)."""
        if self.device is None:
            self.device = st.st_dev
        if st.st_dev == self.device:
            return True
        if (st.st_dev, st.st_ino) not in self.mounts_seen:
            self.mounts_seen.add((st.st_dev, st.st_ino))
            self.done.mounts.append(local)
        return False

    def _folder(self, local: str, remote: str, rel: str, st: os.stat_result, contents_only: bool,
                found: os.DirEntry | None) -> None:
        key = (st.st_dev, st.st_ino)
        if key in self.inside:
            held = display(self.inside[key])
            self.skipped.append(Skipped(local, f"a loop: leads back to {held}, a folder that holds it; not followed"))
            return
        if remote and not contents_only:
            self.entries.append(Entry(local, remote, "dir", 0, st.st_mtime_ns, stat.S_IMODE(st.st_mode),
                                      uid=st.st_uid, gid=st.st_gid))
        if self.filters.one_file_system and not self._same_device(local, st):
            return
        try:
            with os.scandir(local) as scan:
                children = sorted(scan, key=_name)
        except OSError as exc:
            self.skipped.append(Skipped(local, exc.strerror or "cannot be listed"))
            return
        if self.filters.exclude_caches:
            children = self._cache_cut(local, children)
        linked = found is not None and self.follow and found.is_symlink()
        entered = [(key, local)] + [h for h in (_real_parents(local) if linked else []) if h[0] not in self.inside]
        self.inside.update(entered)
        try:
            self._children(children, remote, rel)
        finally:
            for k, _ in entered:
                self.inside.pop(k, None)

    def _cache_cut(self, local: str, children: list[os.DirEntry]) -> list[os.DirEntry]:
        """A cache folder's contents but its tag, left out (as tar's and restic's --exclude-caches)."""
        tags = [c for c in children if c.name == "CACHEDIR.TAG" and is_cache_tag(c, self.follow)]
        if not tags:
            return children
        self.done.caches.append(local)
        self.done.excluded += len(children) - 1
        return tags

    def _children(self, children: list[os.DirEntry], remote: str, rel: str) -> None:
        filters = self.filters
        rules = filters.rules
        follow = self.follow
        for child in children:
            name = child.name
            child_rel = f"{rel}/{name}" if rel else name
            if rules and filters.excluded(child_rel, name, lambda: child.is_dir(follow_symlinks=follow)):
                self.done.excluded += 1
                continue
            child_remote = f"{remote}/{name}" if remote else name
            self.visit(child.path, child_remote, child_rel, found=child)

    def _special(self, local: str, remote: str, st: os.stat_result) -> None:
        # Recorded in the snapshot only (kind, mode, a device's numbers); never opened.
        mode = st.st_mode
        kind = ("socket" if stat.S_ISSOCK(mode) else "fifo" if stat.S_ISFIFO(mode)
                else "chardev" if stat.S_ISCHR(mode) else "blockdev" if stat.S_ISBLK(mode) else "")
        if not kind or not remote:
            self.skipped.append(Skipped(local, "not a regular file, skipped"))
            return
        self.entries.append(Entry(local, remote, kind, 0, st.st_mtime_ns, stat.S_IMODE(mode), uid=st.st_uid,
                                  gid=st.st_gid, rdev=st.st_rdev if kind.endswith("dev") else 0))
