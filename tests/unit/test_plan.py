"""A send's questions (client/plan.py) and its shared state (client/send.py),
without a server: the control call and the disk are stand-ins."""

from __future__ import annotations

import os

import pytest

from fastxfer.client import plan
from fastxfer.client.events import FilesDone, Moved, Unneeded
from fastxfer.client.jobs import FileJob
from fastxfer.client.plan import Planner, batches, group_bundles, tops_of
from fastxfer.client.send import Shared
from fastxfer.client.walk import Entry
from fastxfer.errors import ConnectError, LocalFileError, ProtocolError
from fastxfer.protocol import layout, messages


def entries(*remotes: str, size: int = 1) -> list[Entry]:
    return [Entry(f"/x/{r}", r, "file", size, 0, 0o644) for r in remotes]


def test_tops_are_the_fewest_paths_covering_a_send() -> None:
    assert tops_of(entries("tree", "tree/a", "tree/b/c", "other", "other/x")) == ["tree", "other"]
    assert tops_of(entries("tree2/a", "tree/a")) == ["tree2/a", "tree/a"]  # a sibling with a longer name is not inside
    assert tops_of(entries(*[f"f{i}" for i in range(64)])) is not None
    assert tops_of(entries(*[f"f{i}" for i in range(65)])) is None  # more than a probe may name: ask file by file


def test_batches_are_bounded_and_the_first_is_small() -> None:
    many = entries(*[f"f{i}" for i in range(10000)])
    sizes = [len(b) for b in batches(many)]
    assert sum(sizes) == 10000 and max(sizes) <= messages.MAX_BATCH
    assert [len(b) for b in batches(many[:1000], first=100)][:4] == [100, 200, 400, 300]
    long_names = entries(*["n" * 4000 + str(i) for i in range(1000)])
    assert all(len(b) < 200 for b in batches(long_names))  # bounded in bytes of names too
    assert list(batches([])) == []


def test_small_files_are_bundled_by_bytes_and_by_count() -> None:
    groups = group_bundles(entries(*[f"f{i}" for i in range(3000)], size=10))
    assert [len(g) for g in groups] == [plan.BUNDLE_FILES, plan.BUNDLE_FILES, 3000 - 2 * plan.BUNDLE_FILES]
    big = group_bundles(entries(*[f"g{i}" for i in range(40)], size=plan.SMALL_FILE))
    assert all(sum(e.size for e in g) <= plan.BUNDLE_BYTES for g in big) and sum(map(len, big)) == 40


def test_a_name_the_server_would_refuse_fails_alone() -> None:
    deep = "/".join(["d"] * 1000)
    kept, failed = plan.refuse_bad_names(entries("ok", deep))
    assert [s.remote for s in kept] == ["ok"] and [r.src.remote for r in failed] == [deep]
    assert failed[0].status == "failed"


class FakeServer:
    """Answers control calls from a table and records them."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[dict] = []

    def __call__(self, msg: dict, reply: str) -> dict:
        self.calls.append(msg)
        return self.answer(msg, reply)


def test_a_probe_names_the_tops_once_and_learns_when_nothing_is_stored() -> None:
    def answer(msg, reply):
        return {"t": reply, "empty": True,
                "files": [{"t": "ok", "status": "unchanged" if f["path"] == "a/same" else "send"}
                          for f in msg["files"]]}

    server = FakeServer(answer)
    p = Planner(server, lambda size: layout.DEFAULT_CHUNK)
    p.tops = ["a"]
    settled, groups = p.probe(entries("a/same", "a/new"))
    assert [r.status for r in settled] == ["unchanged"] and [[e.remote for e in g] for g in groups] == [["a/new"]]
    assert server.calls[0]["tops"] == ["a"] and p.tops is None and p.nothing_stored
    settled, groups = p.probe(entries("a/same", "a/other"))  # nothing stored below the tops: no question
    assert len(server.calls) == 1 and settled == [] and len(groups[0]) == 2


def test_a_probe_answer_of_another_length_is_the_servers_fault() -> None:
    p = Planner(lambda msg, reply: {"t": reply, "files": []}, lambda size: layout.DEFAULT_CHUNK)
    with pytest.raises(ProtocolError):
        p.probe(entries("a"))
    p.stat = lambda path, follow_symlinks: os.stat("/")
    with pytest.raises(ProtocolError):
        p.put(entries("a"))


def test_checksum_compares_each_files_digest_with_the_servers() -> None:
    stored = {"same": "01" * 32, "other": "02" * 32}

    def answer(msg, reply):
        assert (msg["t"], reply, msg["page"]) == ("sums", "sums_ok", True)
        return {"t": reply, "files": [{"path": p, "status": "ok", "sha256": stored[p]} if p in stored
                                      else {"path": p, "status": "missing", "sha256": None}
                                      for p in msg["paths"]]}

    def hash_file(src):
        if src.remote == "unreadable":
            raise LocalFileError("cannot read")
        return b"\x01" * 32

    server = FakeServer(answer)
    folder = Entry("/x/d", "d", "dir", 0, 0, 0o755)
    results = Planner(server, lambda s: layout.DEFAULT_CHUNK, checksum=True, hash_file=hash_file).ask(
        [folder] + entries("same", "unreadable", "other", "new"))
    assert [(r.src.remote, r.status) for r in results] == [
        ("d", "send"), ("same", "unchanged"), ("unreadable", "send"), ("other", "send"), ("new", "send")]
    assert server.calls == [{"t": "sums", "paths": ["same", "other", "new"], "page": True}]


def test_checksum_asks_again_for_what_a_page_left_and_counts_what_was_compared() -> None:
    def answer(msg, reply):  # a page stopped inside the first file, then one file a page
        if len(msg["paths"]) == 3 and not server.calls[:-1]:
            return {"t": reply, "files": [], "next": 0, "done": 1}
        page = {"t": reply, "files": [{"path": msg["paths"][0], "status": "ok", "sha256": "01" * 32}]}
        return page if len(msg["paths"]) == 1 else {**page, "next": 1, "done": 0}

    server, compared = FakeServer(answer), []
    results = Planner(server, lambda s: layout.DEFAULT_CHUNK, checksum=True, hash_file=lambda s: b"\x01" * 32,
                      compared=compared.append).ask(entries("a", "b", "c", size=5))
    assert [(r.src.remote, r.status) for r in results] == [("a", "unchanged"), ("b", "unchanged"),
                                                          ("c", "unchanged")]
    assert [c["paths"] for c in server.calls] == [["a", "b", "c"], ["a", "b", "c"], ["b", "c"], ["c"]]
    assert compared == [0, 5, 5, 5]


def test_a_sums_page_that_answers_nothing_and_hashes_nothing_more_is_the_servers_fault() -> None:
    server = FakeServer(lambda msg, reply: {"t": reply, "files": [], "next": 0, "done": 0})
    with pytest.raises(ProtocolError):
        Planner(server, lambda s: layout.DEFAULT_CHUNK, checksum=True,
                hash_file=lambda s: b"\x01" * 32).ask(entries("a", "b"))


def test_a_put_sends_what_the_disk_says_now_and_reads_the_servers_record() -> None:
    class Stat:
        st_dev, st_ino, st_size, st_mtime_ns = 1, 2, 3 * layout.MIN_CHUNK, 77

    def stat(path, follow_symlinks):
        if path.endswith("gone"):
            raise FileNotFoundError(2, "No such file or directory")
        return Stat

    have = {1: b"\x02" * 32}

    def answer(msg, reply):
        assert [f["size"] for f in msg["files"]] == [3 * layout.MIN_CHUNK]  # the size at the put
        return {"t": reply, "files": [{"t": "ok", "status": "send", "fid": "ab" * 16, "chunk": layout.MIN_CHUNK,
                                       "have": messages.encode_have(have)}]}

    results, jobs = Planner(FakeServer(answer), lambda s: layout.MIN_CHUNK, stat=stat).put(entries("big", "gone"))
    assert [r.src.remote for r in results] == ["gone"] and "No such file" in results[0].error.message
    (job,) = jobs
    assert job.identity == (1, 2, 3 * layout.MIN_CHUNK, 77) and job.src.mtime_ns == 77
    assert job.fid == bytes.fromhex("ab" * 16) and job.have == have and job.waiting == {0, 1, 2}


def test_a_put_answer_settles_links_unchanged_files_and_failures() -> None:
    job = FileJob(entries("f")[0], (0, 0, 1, 0))
    assert plan.take_put_answer(job, {"t": "ok", "status": "unchanged"}).status == "unchanged"
    assert plan.take_put_answer(job, {"t": "error", "code": "refused", "message": "no"}).status == "failed"
    link = FileJob(Entry("/x/l", "l", "link", 0, 0, 0o777, target="f"), (0, 0, 0, 0))
    assert plan.take_put_answer(link, {"t": "ok", "status": "stored"}).status == "stored"
    with pytest.raises(ProtocolError):  # a chunk size that cannot cut this file
        plan.take_put_answer(FileJob(entries("g", size=1 << 40)[0], (0, 0, 0, 0)),
                             {"t": "ok", "status": "send", "fid": "00" * 16, "chunk": layout.MIN_CHUNK, "have": ""})


def test_shared_state_knows_when_the_send_is_done() -> None:
    seen = []
    shared = Shared(seen.append, want_sha256=False)
    a = FileJob(entries("a")[0], (0, 0, 0, 0), digests=[None, None], waiting={0, 1})
    b = FileJob(entries("b")[0], (0, 0, 0, 0), digests=[None], waiting={0})
    shared.add_file(a)
    shared.add_file(b)
    shared.end_planning()
    assert not shared.finished()
    shared.acked([(a, 0, b"x"), (a, 0, b"x")])  # an acknowledgement twice counts once
    shared.fail_file(b, LocalFileError("changed"))
    assert not shared.finished() and shared.take_ready(0) == [b]
    shared.acked([(a, 1, b"y")])
    assert shared.finished() and shared.take_ready(0) == [a] and a.digests == [b"x", b"y"]
    shared.sent(10)
    shared.discount(entries("c", size=5)[0])
    shared.files_finished(1)
    assert seen == [Moved(10), Unneeded(5), FilesDone(1, -1)]
    shared.fail_all(ConnectError("gone"))
    assert shared.finished() and shared.take_ready(0) is None
