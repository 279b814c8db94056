"""The local filesystem calls both sides share: the server's store and the
client's get place files below a folder the same way.

Folders are opened one by one without following links, so a link planted
inside the tree can never redirect a write outside it.
"""

from __future__ import annotations

import errno
import os

from fastxfer.errors import RefusedError
from fastxfer.protocol import paths

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(parent_fd: int, name: bytes, create: bool) -> tuple[int, bool]:
    """(descriptor, whether this call made the folder)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd), False
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            os.fsync(parent_fd)  # a new folder's entry must outlive a crash, like the file below it
            made = True
        except FileExistsError:
            made = False
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd), made


def open_chain(base_fd: int, parts: list[bytes], create: bool) -> int:
    """Descriptor of base/parts..., never following a symlink."""
    return _chain(base_fd, parts, create)[0]


def make_chain(base_fd: int, parts: list[bytes]) -> tuple[int, bool]:
    """open_chain, creating what is missing: (descriptor, whether this call made the
    last folder, so that it held nothing before)."""
    return _chain(base_fd, parts, True)


def _chain(base_fd: int, parts: list[bytes], create: bool) -> tuple[int, bool]:
    fd = os.dup(base_fd)
    try:
        made = False
        for part in parts:
            nxt, made = _open_dir(fd, part, create)
            os.close(fd)
            fd = nxt
        return fd, made
    except NotADirectoryError:
        os.close(fd)
        raise RefusedError(f"{paths.join(parts)}: a file or link is in the way of a folder") from None
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.ELOOP:
            raise RefusedError(f"{paths.join(parts)}: a symlink is in the way of a folder") from None
        raise


_libc = None


def sync_filesystem(fd: int) -> None:
    """syncfs(2): one flush for everything written to the filesystem of *fd*."""
    global _libc
    try:
        import ctypes

        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    except (AttributeError, ImportError):
        os.sync()
