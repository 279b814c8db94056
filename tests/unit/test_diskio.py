"""The one place a full disk becomes a refusal (store/diskio.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fastxfer.errors import RefusedError
from fastxfer.store.diskio import disk_refusal, free_bytes, space_error, storage_failure


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_is_refused(code: int) -> None:
    refusal = disk_refusal(OSError(code, os.strerror(code)))
    assert isinstance(refusal, RefusedError)
    assert refusal.message == "not enough space on the server (disk full)"


def test_the_refusal_says_how_much_was_asked_when_told(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        refusal = disk_refusal(OSError(errno.ENOSPC, "full"), 12345, fd)
        assert refusal is not None and refusal.message.startswith("not enough space on the server: 12.06 KiB needed, ")
        assert free_bytes(fd) >= 0
    finally:
        os.close(fd)


def test_any_other_failure_is_left_to_the_caller() -> None:
    assert disk_refusal(OSError(errno.EIO, "Input/output error")) is None
    assert disk_refusal(OSError(errno.EIO, "Input/output error"), 10, 0) is None


def test_an_item_fails_alone_with_the_disk_s_reason() -> None:
    assert storage_failure(OSError(errno.ENOSPC, "full")).message == "not enough space on the server (disk full)"
    eio = storage_failure(OSError(errno.EIO, "Input/output error"))
    assert isinstance(eio, RefusedError) and eio.message == "storage error on the server (Input/output error)"


def test_a_space_refusal_names_what_and_speaks_in_binary_units() -> None:
    refusal = space_error(3 << 30, 200 << 20, "backups/disk.img")
    assert refusal.message == "backups/disk.img: not enough space on the server: 3.00 GiB needed, 200.00 MiB free"
    assert space_error(512, 1536).message == "not enough space on the server: 512 B needed, 1.50 KiB free"
