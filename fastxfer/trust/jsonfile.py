"""The trust files: small JSON objects in the identity folder, written atomically.

A server's state folder belongs to the account the server runs as, and
root may change its files (`trust`, `invite`): nothing written here follows
a link that account planted, and no two writers (worker processes pairing
clients, an administrator's `trust add`) share a temporary file or undo
each other's change."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from fastxfer.errors import UsageError


def read_text(path: Path, own: bool = True) -> str | None:
    """The text of trust file *path*, None if there is none.  A link (or a
    second name of another file) is refused: root changing it would copy
    what it points to into a file that goes back to the folder's owner.
    *own* False (the client's pins, in its user's own folder): a link is read."""
    if not own:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UsageError(f"cannot read {path}: it is a link (a trust file must be a file of its own)") from exc
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise UsageError(f"cannot read {path}: not a regular file of one link (a trust file must be a file "
                             "of its own)")
        try:
            return f.read().decode()
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc


def read_json(path: Path, own: bool = True) -> Any:
    """What the trust file *path* holds, parsed ({} if it is missing)."""
    text = read_text(path, own)
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def load(path: Path, own: bool = True) -> dict[str, str]:
    data = read_json(path, own)
    if not isinstance(data, dict):
        raise UsageError(f"cannot read {path}: not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def write_private(path: Path, data: bytes) -> None:
    """Replace *path* by a new file of *data*, mode 0600.

    The temporary file is new and has a name of its own (mkstemp opens it
    O_EXCL, which follows no link): a link or a wider-moded file left under
    a fixed name is neither written through nor inherited, and concurrent
    writers cannot interleave their bytes in one file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself made durable: an invitation marked used before its
    # PAKE runs must not come back open after a crash (a second guess).
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(path: Path, data: Mapping[str, object]) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True).encode())


@contextmanager
def locked(lock: Path) -> Iterator[None]:
    """An exclusive flock on *lock* (created 0600, never through a link) for
    a read-change-write of a file several processes write."""
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot open the lock file {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock
