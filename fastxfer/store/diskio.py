"""System calls of the server's disk, with no state of their own: whole
writes, reads, and what the filesystem and the process allow.  Folders are
opened and filesystems synced by fastxfer/localfs.py, which get shares."""

from __future__ import annotations

import ctypes
import errno
import os
import time

from fastxfer.errors import RefusedError
from fastxfer.protocol.units import human


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def read_file(dir_fd: int, name: bytes) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0) if size else b""
    finally:
        os.close(fd)


def free_bytes(fd: int) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of *fd*."""
    st = os.statvfs(fd)
    return st.f_bavail * st.f_frsize


def space_error(needed: int, free: int, what: str = "") -> RefusedError:
    """Refused before a byte is written: what was asked (*what*, a path say) does not fit."""
    where = f"{what}: " if what else ""
    return RefusedError(
        f"{where}not enough space on the server: {human(needed)} needed, {human(free)} free"
    )


def disk_refusal(exc: OSError, needed: int = 0, fd: int = -1, what: str = "") -> RefusedError | None:
    """The one place a full disk (ENOSPC, or EDQUOT at a quota) becomes a refusal
    the client is told of; None for any other failure, which the caller re-raises.

    With *needed* and a descriptor on the filesystem, the refusal says how much
    was asked and how much is free, as the check before writing does.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    if needed and fd >= 0:
        return space_error(needed, free_bytes(fd), what)
    return RefusedError("not enough space on the server (disk full)")


def storage_failure(exc: OSError) -> RefusedError:
    """Any failure of the disk, as the refusal of the one item it happened to."""
    return disk_refusal(exc) or RefusedError(f"storage error on the server ({exc.strerror})")


def unlink_quietly(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def now_ns() -> int:
    return time.time_ns()


MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding *path*, from /proc/self/mountinfo ("" if unknown)."""
    best, kind = -1, ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                mount = fields[4].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= best:  # of mounts on one point, the last is the one seen
                    best, kind = len(mount), fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        pass
    return kind


def current_umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777  # unknown: always chmod


_libc = None


def reserve_space(fd: int, offset: int, length: int) -> bool:
    """Allocate [offset, offset + length) of *fd* without changing its bytes;
    False where the filesystem cannot.  Not os.posix_fallocate: where the
    filesystem cannot, glibc emulates it by writing a zero into every block
    it reads as zero, which races with a stream writing the same file."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if _libc.fallocate64(fd, 0, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))
