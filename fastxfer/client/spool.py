"""Standard input as a file a send can store: ``fastxfer send - --name db.dump``.

A put declares the file's size before its first chunk, a resumed transfer
reads a chunk again, and ``--checksum`` hashes the file before sending: a
pipe can do none of these. So the bytes are first copied to a spool file in
the temporary folder (``$TMPDIR``, else /tmp): the disk there must hold the
whole input, once. The spool has no name: it is made with O_TMPFILE (or
unlinked as soon as it is made) and read through /proc/self/fd/N, so no
other user can see or open it and it is gone when the send ends, however it
ends (even by SIGKILL). Where /proc is not mounted it is a named file, mode
0600, in a private folder (0700) made for it, removed when the send ends
(not after SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from fastxfer.client.walk import Entry
from fastxfer.errors import LocalFileError

COPY_BLOCK = 1 << 20
STDIN_SOURCE = "(standard input)"  # what the snapshot names as the source of the stored file


class Spool:
    """The bytes of *fd* (standard input) read to the end and kept, as a file entry stored at *remote*."""

    def __init__(self, remote: str, mode: int = 0o600, mtime_ns: int | None = None, fd: int = 0,
                 by_proc: bool = True) -> None:
        self.folder: str | None = None
        self.file = None
        try:
            self._fill(fd, by_proc)
            when = time.time_ns() if mtime_ns is None else mtime_ns
            os.utime(self.file.fileno(), ns=(when, when))  # what the sender's size-and-time checks compare
            st = os.fstat(self.file.fileno())
        except OSError as exc:
            self.close()
            raise LocalFileError(f"standard input could not be spooled to {tempfile.gettempdir()}: "
                                 f"{exc.strerror}; nothing was sent (TMPDIR chooses where the spool goes)") from None
        except BaseException:
            self.close()
            raise
        self.entry = Entry(self.path, remote, "file", st.st_size, st.st_mtime_ns, mode, follow=True,
                           uid=os.getuid(), gid=os.getgid(), shown="-")

    def _fill(self, fd: int, by_proc: bool) -> None:
        if by_proc and os.path.isdir("/proc/self/fd"):
            self.file = tempfile.TemporaryFile(prefix="fastxfer-stdin-")
            self.path = f"/proc/self/fd/{self.file.fileno()}"  # reopened by name: the same, nameless file
        else:
            self.folder = tempfile.mkdtemp(prefix="fastxfer-stdin-")  # 0700
            self.path = os.path.join(self.folder, "spool")
            self.file = open(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "w+b")
        buf = bytearray(COPY_BLOCK)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            self.file.write(view[:n])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass  # the flush of a spool that did not fit: its bytes are dropped anyway, the file is closed
            self.file = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
