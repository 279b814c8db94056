"""What a restore does once the fetches are done: a file's later names made
hard links to its first, and --delete.  Both only ever act through folders
opened without following links, inside DEST."""

from __future__ import annotations

import os
import shutil
import stat
from typing import TYPE_CHECKING

from fastxfer.client.restore_plan import Outcome
from fastxfer.errors import FxError, LocalFileError
from fastxfer.localfs import open_chain

if TYPE_CHECKING:
    from fastxfer.client.get import Getter


def delete_extra(getter: Getter, root_fd: int, folders: list[list[bytes]], keep: set[tuple[bytes, ...]]) -> None:
    """--delete: what the folders of the copy hold that the listing does not
    goes, as rsync's option does; never when something was not restored."""
    if getter.fatal is not None or any(o.status in ("failed", "skipped") for o in getter.places.outcomes):
        getter.delete_held_back = True
        return
    for parts in folders:
        try:
            fd = open_chain(root_fd, parts, create=False)
        except (OSError, FxError):
            continue
        try:
            for name in sorted(map(os.fsencode, os.listdir(fd))):
                if tuple(parts) + (name,) in keep or name.startswith(getter.temp_prefix):
                    continue
                shown = os.fsdecode(b"/".join(parts + [name]))
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows a link out of the copy
                else:
                    os.unlink(name, dir_fd=fd)
                getter.places.record(Outcome(shown, "deleted"))
            os.fsync(fd)
        finally:
            os.close(fd)

def link_all(getter: Getter, root_fd: int, linked: list[tuple[dict, list[bytes], list[bytes]]]) -> None:
    """A file's later names, once its first is in place: hard links, made
    only to a regular file this run restored or found already there."""
    done = {o.path: o.status for o in getter.places.outcomes}
    touched: dict[tuple[bytes, ...], int] = {}
    try:
        for entry, parts, first in linked:
            shown = os.fsdecode(b"/".join(parts))
            if done.get(os.fsdecode(b"/".join(first))) not in ("restored", "unchanged"):
                getter.places.record(Outcome(shown, "failed", LocalFileError(
                    f"{shown}: not linked: its other name {os.fsdecode(b'/'.join(first))} was not restored")))
                continue
            try:
                getter.places.record(link_one(getter, root_fd, parts, first, shown, touched))
            except (OSError, FxError) as exc:
                getter.places.record(Outcome(shown, "failed", LocalFileError(f"{shown}: not linked ({exc})")))
        for fd in touched.values():
            os.fsync(fd)
    finally:
        for fd in touched.values():
            os.close(fd)

def link_one(getter: Getter, root_fd: int, parts: list[bytes], first: list[bytes], shown: str,
              touched: dict[tuple[bytes, ...], int]) -> Outcome:
    source = open_chain(root_fd, first[:-1], create=False)
    try:
        st = os.stat(first[-1], dir_fd=source, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return Outcome(shown, "failed", LocalFileError(f"{shown}: not linked: its other name is not a file"))
        key = tuple(parts[:-1])
        if key not in touched:
            touched[key] = open_chain(root_fd, parts[:-1], create=True)
        parent = touched[key]
        try:
            here = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        if here is not None and (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
            return Outcome(shown, "unchanged")
        if here is not None and not getter.force:
            return Outcome(shown, "skipped", LocalFileError(f"{shown}: exists locally; not replaced (use --force)"))
        tmp = getter.temp_prefix + b"%d" % next(getter.temp_numbers)
        os.link(first[-1], tmp, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        try:
            os.rename(tmp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            os.unlink(tmp, dir_fd=parent)
            raise
        return Outcome(shown, "restored")
    finally:
        os.close(source)


def hard_links(planned: list[tuple[dict, list[bytes]]]
               ) -> tuple[list[tuple[dict, list[bytes]]], list[tuple[dict, list[bytes], list[bytes]]]]:
    """(what to fetch, [(entry, its place, its first name's place)]): a file's
    later name whose first name is restored too is linked to it after the
    fetches; one whose first name is not in this restore is fetched itself."""
    places = {e.get("path"): parts for e, parts in planned if e.get("kind", "file") == "file" and not e.get("hardlink")}
    fetch, linked = [], []
    for entry, parts in planned:
        first = places.get(entry.get("hardlink")) if entry.get("kind", "file") == "file" else None
        if first is not None and first != parts:
            linked.append((entry, parts, first))
        else:
            fetch.append((entry, parts))
    return fetch, linked
