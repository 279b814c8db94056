"""What a stream received is made durable behind it (server/durable.py): in
order, acknowledged only once finished, dropped (closed, never recorded) when
the stream must not keep it; and a staged bundle, finished or not, leaves
nothing behind (store/bundles.StagedBundle, on a real root)."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from fastxfer.errors import ConnectError, FxError, RefusedError
from fastxfer.protocol import wire
from fastxfer.server import durable
from fastxfer.store.facade import Store


class Job:
    """A job that says what happened to it; finish() may wait for *gate* or fail."""

    def __init__(self, name: str, log: list[str], gate: threading.Event | None = None,
                 fail: BaseException | None = None, ack_fails: bool = False) -> None:
        self.name, self.log, self.gate, self.fail, self.ack_fails = name, log, gate, fail, ack_fails
        self.started = threading.Event()

    def finish(self) -> None:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.log.append(f"finish {self.name}")

    def ack(self) -> None:
        if self.ack_fails:
            raise ConnectError("connection closed by peer")
        self.log.append(f"ack {self.name}")

    def close(self) -> None:
        self.log.append(f"close {self.name}")


def test_jobs_finish_then_ack_in_the_order_they_came() -> None:
    log: list[str] = []
    f = durable.Flusher()
    for name in "abc":
        f.submit(Job(name, log))
    f.close(finish=True)
    assert log == [f"{step} {name}" for name in "abc" for step in ("finish", "ack", "close")]


def test_a_peer_gone_at_the_ack_is_not_a_failure() -> None:
    log: list[str] = []
    f = durable.Flusher()
    f.submit(Job("a", log, ack_fails=True))
    f.submit(Job("b", log))
    f.close(finish=True)
    assert log == ["finish a", "close a", "finish b", "ack b", "close b"]
    f.check()  # nothing to raise


def test_a_failure_reaches_the_stream_and_nothing_after_it_is_finished() -> None:
    log: list[str] = []
    gate = threading.Event()
    f = durable.Flusher()
    f.submit(Job("a", log, gate=gate, fail=RefusedError("no space left on the server")))
    f.submit(Job("b", log))
    gate.set()
    with pytest.raises(RefusedError, match="no space"):
        f.submit(Job("c", log))  # refused, and closed: it is the flusher's once handed over
    with pytest.raises(RefusedError):
        f.check()
    f.close(finish=True)
    assert log[0] == "close a" and sorted(log[1:]) == ["close b", "close c"]  # none finished


def test_dropping_closes_the_waiting_jobs_and_lets_the_busy_one_end() -> None:
    log: list[str] = []
    gate = threading.Event()
    f = durable.Flusher()
    first = Job("a", log, gate=gate)
    f.submit(first)
    assert first.started.wait(10)
    f.submit(Job("b", log))
    closer = threading.Thread(target=f.close, args=(False,))
    closer.start()
    while "close b" not in log:  # dropped at once, while "a" still waits for its disk
        closer.join(0.01)
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert log == ["close b", "finish a", "ack a", "close a"]


def test_at_most_behind_jobs_wait_for_the_disk() -> None:
    log: list[str] = []
    gate = threading.Event()
    f = durable.Flusher()
    for name in "ab":
        f.submit(Job(name, log, gate=gate))
    third = threading.Thread(target=f.submit, args=(Job("c", log),))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # the stream waits: writeback debt stays bounded
    gate.set()
    third.join(10)
    f.close(finish=True)
    assert [s for s in log if s.startswith("finish")] == ["finish a", "finish b", "finish c"]


def entries(files: dict[bytes, bytes]) -> list[wire.BundleEntry]:
    return [wire.BundleEntry(name, len(data), 1_700_000_000_000_000_000, 0o644, memoryview(data),
                             hashlib.sha256(data).digest()) for name, data in files.items()]


def test_a_staged_bundle_dropped_leaves_no_file_and_no_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    store.init_manifest()
    staged = store.stage_bundle("c", entries({b"d/x": b"one", b"d/y": b"two"}))
    staging = tmp_path / "root" / ".fastxfer" / "staging"
    assert len(list(staging.rglob("b-*"))) == 2  # written aside, nowhere else yet
    staged.close()
    assert list(staging.rglob("b-*")) == []
    assert not (tmp_path / "root" / "c" / "d" / "x").exists()
    assert store.listing("c", "", None)[0] == []


def test_a_staged_bundle_finished_is_in_place_and_recorded(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    store.init_manifest()
    staged = store.stage_bundle("c", entries({b"d/x": b"one"}))
    try:
        assert staged.finish() == [(0, 0, "")]
    finally:
        staged.close()
    assert (tmp_path / "root" / "c" / "d" / "x").read_bytes() == b"one"
    assert [e["path"] for e in store.listing("c", "", None)[0] if e.get("type", "file") == "file"] == ["d/x"]


def test_a_disk_failure_finishing_a_bundle_is_a_refusal() -> None:
    class Failing:
        def finish(self) -> list[tuple[int, int, str]]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        def close(self) -> None:
            pass

    f = durable.Flusher()
    f.submit(durable.Bundle(Failing(), lambda results: None))
    f.close(finish=True)
    with pytest.raises(FxError, match="storage error on the server"):
        f.check()
