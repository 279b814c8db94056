"""A hostile server's replies, fuzzed, against every place the client reads one
(issue 13 item 4, the client half): only fastxfer's own errors may come out,
never a KeyError, TypeError, UnicodeError... that would end a command in a
traceback.

Each control reply starts from a valid one and has fields replaced by wrong
types and ranges, lone surrogates and huge values, removed, or added.  The
control connection is stood in for by ``Replies`` (its ``call`` answers with
the next reply, through JSON and messages.expect as ControlClient.call
does); the parsing under test is the client's own.  Stream frames are built
as FramedConn.receive hands them over (a header of its kind's size, a body)
and fed to the get and send streams' frame handlers.  What the client prints
from a reply goes to a strict UTF-8 stdout, as a terminal's would.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import traceback
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastxfer.cli.restore import print_listing, sums_line
from fastxfer.cli.send import fetch_receipts, print_snapshot, report_results
from fastxfer.cli.snapshots import print_forget, print_snapshots
from fastxfer.client import events, gone, snapshot
from fastxfer.client.connect import features_of, parse_challenge, parse_welcome
from fastxfer.client.fetch_stream import BATCH, FetchStream
from fastxfer.client.jobs import Bundle, FileJob, Result, Source
from fastxfer.client.listing import list_all
from fastxfer.client.owners import Owners
from fastxfer.client.place import Places
from fastxfer.client.plan import Planner
from fastxfer.client.restore_plan import Fetch, chunks_of, link_stays_inside, plan, restorable
from fastxfer.client.send import Shared, commit
from fastxfer.client.send_stream import BUNDLE_KEY, Link
from fastxfer.client.after_fetch import hard_links
from fastxfer.client.sums import sums_pages
from fastxfer.client.window import Window
from fastxfer.errors import ConnectError, FxError
from fastxfer.net.framed import Frame
from fastxfer.protocol import keys, layout, messages, wire

FUZZ = settings(max_examples=int(os.environ.get("FX_FUZZ_EXAMPLES", "30")), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WEIRD = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1.5, float("nan"), float("inf"), "", "\ud800", "a\udcffb",
                     "\udfff/x", "\n\x1b[2J", "x" * 70_000, [], [None], [1, "a"], {}, {"t": "ok"},
                     2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**40, "zz", "../../etc", "/abs", "a\x00b",
                     "failed", "ok", "error", "stored", "unchanged", "dir", "link", "file", "chardev"]),
    st.integers(), st.text(max_size=6), st.lists(st.integers(-3, 3), max_size=3))

TIME = 1_700_000_000 * 10**9
HEX = "cd" * 32


def spots(value, found: list | None = None) -> list:
    """Every (container, key) inside *value*: the places a mutation may hit."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for k, v in list(value.items()):
            found.append((value, k))
            spots(v, found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.append((value, i))
            spots(v, found)
    return found


@st.composite
def mutated(draw, valid: dict) -> dict:
    """*valid* with one to three fields changed to something a server may not send."""
    reply = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        places = spots(reply)
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "extra"]))
        weird = copy.deepcopy(draw(WEIRD))
        if action == "extra" or not places:
            objects = [reply] + [c[k] for c, k in places if isinstance(c[k], dict)]
            draw(st.sampled_from(objects))[draw(st.sampled_from(["zz", "next", "t2"]))] = weird
            continue
        container, key = draw(st.sampled_from(places))
        if action == "delete":
            del container[key]
        else:
            container[key] = weird
    return reply


class Replies:
    """Stands in for the control connection only: each call is answered with
    the next reply as it arrives (JSON, then messages.expect), then *then*."""

    def __init__(self, *replies: dict, then: dict | None = None) -> None:
        self.replies = list(replies)
        self.then = then
        self.asked: list[dict] = []
        self.server_fp = b"\x00" * 32

    def call(self, msg: dict, kind: str) -> dict:
        self.asked.append(msg)
        reply = self.replies.pop(0) if self.replies else self.then
        if reply is None:
            raise ConnectError("the stand-in has no more replies")
        return messages.expect(messages.parse_msg(json.dumps(reply).encode()), kind)


def survives(fn, *args) -> None:
    """*fn* ends, or raises one of fastxfer's errors; anything else fails the test."""
    try:
        fn(*args)
    except FxError:
        pass


@contextlib.contextmanager
def strict_stdout():
    """stdout as a UTF-8 terminal has it: a lone surrogate printed is an error."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    with contextlib.redirect_stdout(out):
        yield


def mutate_one(data, valid: list[dict]) -> list[dict]:
    """The replies of one exchange, one of them mutated."""
    replies = copy.deepcopy(valid)
    which = data.draw(st.integers(0, len(replies) - 1))
    replies[which] = data.draw(mutated(replies[which]))
    return replies


SCRATCH = Path(tempfile.mkdtemp(prefix="fx-fuzz-client-"))
atexit.register(shutil.rmtree, SCRATCH, True)
BIG = SCRATCH / "big"
BIG.write_bytes(b"\x01" * (3 << 20))
SMALL = SCRATCH / "small"
SMALL.write_bytes(b"small")


def source(path: Path, remote: str) -> Source:
    st_ = path.stat()
    return Source(str(path), remote, "file", st_.st_size, st_.st_mtime_ns, 0o644)


# ------------------------------------------------------------- the handshake

NONCE = base64.b64encode(b"n" * 32).decode()
CHALLENGE = {"t": "challenge", "v": 1, "nonce": NONCE}
WELCOME = {"t": "welcome", "name": "laptop", "ticket": base64.b64encode(b"t" * 100).decode(),
           "secret": base64.b64encode(b"s" * 32).decode(), "max_chunk": wire.MAX_CHUNK, "features": ["reqs", "pages"]}


def use_handshake(replies: list[dict]) -> None:
    challenge, welcome_msg = (messages.parse_msg(json.dumps(r).encode()) for r in replies)
    features_of(welcome_msg)
    parse_challenge(challenge)
    welcome = parse_welcome(welcome_msg)
    welcome.name.encode()  # printed before every stored path
    wire.encode_open(welcome.ticket, os.urandom(wire.RANDOM))
    keys.stream_keys(welcome.secret, os.urandom(32), os.urandom(32))
    assert all(isinstance(f, str) for f in welcome.features)


# ---------------------------------------------------------------- listings

FILE = {"path": "d/x", "kind": "file", "size": 3000, "mtime_ns": TIME, "mode": 0o644, "sha256": "ab" * 32,
        "target": None, "stored_ns": TIME, "chunk": 1 << 20, "digest": HEX, "uid": 1000, "gid": 1000,
        "user": "me", "group": "me", "rdev": 0}
DIR = {**FILE, "path": "d", "kind": "dir", "size": 0, "mode": 0o755, "sha256": None, "chunk": None, "digest": None}
LINK = {**DIR, "path": "d/l", "kind": "link", "mode": 0o777, "target": "x"}
FIFO = {**DIR, "path": "d/p", "kind": "fifo", "mode": 0o600}
HARD = {**FILE, "path": "d/h", "hardlink": "d/x", "ref": "#" + HEX}
PAGES = [{"t": "list_ok", "entries": [DIR, FILE], "next": "642f78"},
         {"t": "list_ok", "entries": [LINK, FIFO, HARD], "next": None, "snapshot": 4}]
VERSIONS = [{"t": "list_ok", "entries": [{**FILE, "version": "1700000000000000000.1", "replaced_ns": TIME}],
             "next": None}]


def read_as_get(entry: dict, parts: list[bytes]) -> None:
    """What get, its streams and its places read of a planned entry (client/get.py, place.py)."""
    kind = entry.get("kind", "file")
    Owners(active=True).ids(entry)
    if kind == "file":
        chunks_of(entry)
        if entry.get("digest") and layout.valid_layout(int(entry["size"]), int(entry["chunk"])):
            f = Fetch(entry, parts)
            assert isinstance(f.name, bytes) and isinstance(f.whole, bool)
            layout.chunk_count(f.size, f.chunk)
            str(entry["digest"]).lower()
    elif kind == "link":
        target = entry.get("target") or ""
        os.fsencode(target)
        link_stays_inside(parts, target)
    if kind != "link":
        assert int(entry["mode"]) & 0o777 >= 0 and int(entry["mtime_ns"]) != 0.5


def use_listing(pages: list[dict], versions: bool = False, at: int | str | None = None) -> None:
    entries = list_all(Replies(*pages), "d", versions, at)
    with strict_stdout():
        print_listing(entries, versions)
    json.dumps(entries, ensure_ascii=True)
    restorable(entries)  # as cmd_get does, before plan
    _root, planned = plan(entries, "d", str(SCRATCH / "out"))
    fetch, _linked = hard_links(planned)
    for entry, parts in fetch:
        read_as_get(entry, parts)


SUMS = [{"t": "sums_ok", "files": [{"path": "d/x", "status": "ok", "sha256": "ab" * 32}], "next": 1, "done": 500},
        {"t": "sums_ok", "files": [{"path": "d/y", "status": "missing"}], "next": None}]


def use_sums(replies: list[dict]) -> None:
    for page, partly in sums_pages(Replies(*replies).call, ["d/x", "d/y"]):
        assert isinstance(partly, int)
        for item in page:
            if item["status"] == "ok":
                os.fsencode(sums_line(item["sha256"], item["path"]))
            else:
                f"{item['path']!r} is {item.get('status')}".encode()


# ------------------------------------------------------------------- a send

PUT = {"t": "put_ok", "files": [
    {"t": "ok", "fid": "11" * 16, "chunk": 1 << 20, "status": "resumed", "have": messages.encode_have({1: b"\x02" * 32}),
     "same": [{"digest": HEX, "chunk": 1 << 20}]},
    {"t": "error", "code": "refused", "message": "no room"},
    {"t": "ok", "status": "stored"}]}


def use_put(replies: list[dict]) -> None:
    planner = Planner(Replies(*replies).call, lambda _size: 1 << 20)
    folder = Source(str(SCRATCH), "d", "dir", 0, 0, 0o755)
    _results, jobs = planner.put([source(BIG, "d/big"), source(BIG, "d/big2"), folder])
    for job in jobs:
        assert len(job.fid) == 16 and all(i < job.count for i in job.have)
        assert all(len(d) == 32 and layout.valid_layout(job.src.size, c) for d, c in job.same)


PROBE = {"t": "probe_ok", "files": [{"t": "ok", "status": "unchanged"}, {"t": "ok", "status": "changed"}],
         "empty": False}


def use_probe(replies: list[dict]) -> None:
    planner = Planner(Replies(*replies).call, lambda _size: 1 << 20)
    planner.tops = ["d"]
    planner.probe([source(SMALL, "d/a"), source(SMALL, "d/b")])
    Planner(Replies(*replies).call, lambda _size: 1 << 20).ask([source(SMALL, "d/a"), source(SMALL, "d/b")])


def use_checksum(replies: list[dict]) -> None:
    planner = Planner(Replies(*replies).call, lambda _size: 1 << 20, checksum=True,
                      hash_file=lambda _src: b"\xab" * 32)
    planner.ask([source(SMALL, "d/x"), source(SMALL, "d/y")])


COMMITTED = {"t": "committed", "files": [
    {"t": "ok", "path": "d/big", "status": "stored", "version": "1700000000000000000.1"},
    {"t": "ok", "path": "d/big2", "status": "unchanged", "version": None}]}
LISTED = {"t": "list_ok", "entries": [{**FILE, "path": "d/big", "size": 3 << 20}], "next": None}


def job_of(path: Path, remote: str) -> FileJob:
    job = FileJob(source(path, remote), (0, 0, 0, 0), fid=os.urandom(16), chunk=1 << 20)
    job.digests = [b"\x00" * 32] * job.count
    return job


def use_commit(replies: list[dict]) -> None:
    results = commit(Replies(*replies).call, [job_of(BIG, "d/big"), job_of(BIG, "d/big2")], 3)
    with strict_stdout():
        report_results(results, 2)  # -vv: every line


def use_gone(replies: list[dict]) -> None:
    job = job_of(BIG, "d/big")
    call = Replies(*replies).call
    gone.holds(call, job, HEX)
    gone.gone(copy.deepcopy(replies[0]), job)
    gone.settle(call, job, FxError("gone"), tries=0)  # asking again is the system test's


SNAPSHOT = [{"t": "snap_begun", "id": 5, "previous": ["/home/me/d"]},
            {"t": "snap_added", "dropped": ["d/x"]},
            {"t": "snap_ended", "state": "complete", "files": 3, "bytes": 100, "removed": 1}]


def use_snapshot(replies: list[dict]) -> None:
    call = Replies(*replies).call
    src = Source(str(SMALL), "d/x", "file", 5, TIME, 0o644, uid=4242)
    begun = snapshot.begin(call, [("d", "/elsewhere/d")], [src], snapshot.Names())
    done = snapshot.finish(call, begun, [Result(src, "stored")], False, snapshot.Names())
    with strict_stdout(), contextlib.redirect_stderr(io.StringIO()):
        print_snapshot(done, "laptop", [Result(src, "stored")])


RECEIPTS = {"t": "receipts_ok", "cert": base64.b64encode(b"cert").decode(),
            "receipts": [{"body": "{}", "sig": "c2ln"}]}


def use_receipts(replies: list[dict]) -> None:
    control = Replies(*replies)
    control.server_fp = hashlib.sha256(b"cert").digest()
    fetch_receipts(control, ["d/x"], str(SCRATCH / "receipts"))


SNAPSHOTS = {"t": "snapshots_ok", "snapshots": [
    {"id": 3, "time_ns": TIME, "state": "complete", "files": 2, "bytes": 10, "changed": 1, "removed": 0,
     "paths": ["d", ""], "note": "2 dropped", "host": "h"}]}
FORGET = {"t": "forget_ok", "kept": [{"id": 3, "time_ns": TIME, "paths": ["d"], "why": ["last"]}],
          "forgotten": [{"id": 2, "time_ns": TIME, "paths": [""]}], "min_age_ns": 7 * 86400 * 10**9,
          "pruned_files": 1, "pruned_bytes": 5}


def use_snapshots(replies: list[dict]) -> None:
    got = Replies(*replies).call({"t": "snapshots", "prefix": ""}, "snapshots_ok")
    with strict_stdout():
        print_snapshots(got, "", False)
        print_snapshots(got, "", True)


def use_forget(replies: list[dict]) -> None:
    got = Replies(*replies).call({"t": "forget"}, "forget_ok")
    with strict_stdout():
        print_forget(got, False, True)


def use_paged(replies: list[dict]) -> None:
    reply = messages.parse_msg(json.dumps(replies[0]).encode())
    for asked in range(4):
        survives(messages.page_answers, reply, asked)
    messages.expect(reply, "probe_ok")


# Every way the client reads a control reply: the valid replies of one
# exchange, and what the client does with them (down to what it prints).
TARGETS = {
    "handshake": (use_handshake, [CHALLENGE, WELCOME]),
    "ls/get": (use_listing, PAGES),
    "ls --at": (lambda pages: use_listing(pages, False, "latest"), [{**PAGES[0], "next": None, "snapshot": 4}]),
    "ls --versions": (lambda pages: use_listing(pages, True), VERSIONS),
    "sums": (use_sums, SUMS),
    "put": (use_put, [PUT]),
    "probe": (use_probe, [PROBE]),
    "--checksum": (use_checksum, SUMS),
    "commit": (use_commit, [COMMITTED, LISTED]),
    "gone": (use_gone, [LISTED, LISTED, LISTED]),
    "snapshot of a send": (use_snapshot, SNAPSHOT),
    "receipts": (use_receipts, [RECEIPTS]),
    "snapshots": (use_snapshots, [SNAPSHOTS]),
    "forget": (use_forget, [FORGET]),
    "paged answers": (use_paged, [{"t": "probe_ok", "files": [{}, {}], "next": 2}]),
}
SAMPLES = [None, True, False, 0, -1, 1.5, float("nan"), float("inf"), "", "\ud800", "a\udcffb", "\n\x1b[2J",
           "x" * 70_000, [], [None], [1, "a"], {}, {"t": "ok"}, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**40,
           "../../etc", "/abs", "a\x00b", "failed", "ok", "error", "stored", "unchanged", "dir", "link", "chardev"]


def single_mutations(valid: list[dict]):
    """(replies, what was changed): every field of every reply removed, or
    replaced by each sample, alone; and an extra field in every object."""
    for which, reply in enumerate(valid):
        for n in range(len(spots(reply))):
            for value in ["(removed)", *SAMPLES]:
                replies = copy.deepcopy(valid)
                container, key = spots(replies[which])[n]
                if value == "(removed)":
                    del container[key]
                else:
                    container[key] = copy.deepcopy(value)
                yield replies, f"reply {which}: {key!r} in {repr(container)[:200]} = {repr(value)[:40]}"
        replies = copy.deepcopy(valid)
        for obj in [replies[which]] + [c[k] for c, k in spots(replies[which]) if isinstance(c[k], dict)]:
            obj["zz"] = "\ud800"
        yield replies, f"reply {which}: an extra field in every object"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_field_changed_alone(name: str) -> None:
    use, valid = TARGETS[name]
    use(copy.deepcopy(valid))  # the valid exchange itself goes through
    escaped = {}
    for replies, how in single_mutations(valid):
        try:
            use(replies)
        except FxError:
            pass
        except Exception as exc:  # noqa: BLE001 - what the test is about
            where = traceback.extract_tb(exc.__traceback__)[-1]
            escaped.setdefault((type(exc).__name__, where.filename, where.lineno), f"{how}: {exc!r}")
    assert not escaped, "\n".join(f"{k}: {v}" for k, v in escaped.items())


@FUZZ
@given(st.data())
def test_several_fields_changed_at_once(data) -> None:
    name = data.draw(st.sampled_from(sorted(TARGETS)))
    use, valid = TARGETS[name]
    replies = copy.deepcopy(valid)
    for _ in range(data.draw(st.integers(1, 2))):
        replies = mutate_one(data, replies)
    survives(use, replies)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.sampled_from(["\ud800", "====", "A" * 47])),
       st.binary(max_size=200), st.integers(0, 8))
def test_resume_lists(text: str, raw: bytes, count: int) -> None:
    survives(messages.parse_have, text, count)
    survives(messages.parse_have, base64.b64encode(raw).decode(), count)


# ------------------------------------------------------------ stream frames

TAGS = [bytes([n]) * 16 for n in range(3)]
HEADERS = {kind: wire.header_size(kind) for kind in wire.FRAME_KINDS}


def header_of(data, kind: int) -> bytes:
    """A header of the kind's size (as FramedConn.receive cuts it), naming what is in flight, or anything."""
    size = HEADERS[kind]
    if size == 16:
        known = TAGS
    elif size == 28:
        known = [t + struct.pack(">QI", o, n) for t in TAGS for o, n in ((0, 3000), (0, 1 << 20), (1 << 20, 5))]
    else:
        known = [struct.pack(">III", n, c, 0)[:size] for n in (0, 1) for c in (0, 1, 2)]
    return data.draw(st.one_of(st.sampled_from(known), st.binary(min_size=size, max_size=size)))


SIZES = (3000, 3 << 20, 3000)  # of the files in flight, by tag
CODES = st.sampled_from([0, 3, 5, 6, 8, 10, 200, 255])
TEXT = st.sampled_from([b"", b"no such file", b"\xff\xfe\xfd", "\u2603".encode()])


def chunk_of(data) -> tuple[bytes, int, int]:
    """(tag, offset, length) of a chunk in flight."""
    n = data.draw(st.integers(0, 2))
    index = data.draw(st.integers(0, layout.chunk_count(SIZES[n], 1 << 20) - 1))
    return (TAGS[n], *layout.chunk_span(SIZES[n], 1 << 20, index))


def well_formed(data, kind: int) -> tuple[bytes, bytes]:
    """A header and body of *kind* as a server would send them about what is in flight."""
    if kind in (wire.DATA, wire.ZEROS):
        tag, offset, length = chunk_of(data)
        if kind == wire.ZEROS:
            return wire.zeros_header(tag, offset, length), b""
        chunk = data.draw(st.sampled_from([b"a", b"\0"])) * length
        return wire.data_header(tag, offset, length), chunk + hashlib.sha256(chunk).digest()
    if kind == wire.DATAS:
        number = data.draw(st.sampled_from([0, 2, 9]))
        tag, size = TAGS[number % 3], SIZES[number % 3]
        if data.draw(st.booleans()):
            payload = b"a" * size
            entry = tag + bytes([0, 0]) + struct.pack(">I", size + 32) + payload + hashlib.sha256(payload).digest()
        else:
            text = data.draw(TEXT)
            entry = tag + bytes([1, data.draw(CODES)]) + struct.pack(">I", len(text)) + text
        return wire.datas_header(number, 1), entry
    if kind == wire.ACK:
        entries = data.draw(st.lists(st.tuples(st.sampled_from(TAGS), st.sampled_from([0, 1 << 20, 2 << 20, 5])),
                                     max_size=4))
        return wire.ack_header(len(entries)), wire.encode_acks(entries)
    if kind == wire.BUNDLE_ACK:
        number = data.draw(st.sampled_from([0, 1, 7]))  # bundle 0 holds one file, bundle 1 two
        count = data.draw(st.sampled_from([number % 7 + 1, 0, 3]))
        statuses = data.draw(st.lists(st.tuples(st.integers(0, 3), CODES, TEXT), min_size=count, max_size=count))
        body = b"".join(struct.pack(">BBH", s, c, len(t)) + t for s, c, t in statuses)
        return struct.pack(">II", number, count), body
    if kind in (wire.NAK, wire.ERROR):
        header = data.draw(st.sampled_from(TAGS + [b"\x07" * 16])) if kind == wire.NAK else b""
        return header, bytes([data.draw(CODES)]) + data.draw(TEXT)
    return header_of(data, kind), data.draw(st.binary(max_size=64))


def damaged(data, header: bytes, body: bytes) -> tuple[bytes, bytes]:
    """*header* and *body*, perhaps with a byte changed, cut short or grown (a server's bug, not transit:
    the frame still opens)."""
    how = data.draw(st.sampled_from(["as is", "as is", "header", "cut", "flip", "grow"]))
    if how == "header" and header:
        at = data.draw(st.integers(0, len(header) - 1))
        header = header[:at] + bytes([header[at] ^ data.draw(st.integers(1, 255))]) + header[at + 1 :]
    elif how == "cut" and body:
        body = body[: data.draw(st.integers(0, len(body) - 1))]
    elif how == "flip" and body:
        at = data.draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]
    elif how == "grow":
        body += data.draw(st.binary(min_size=1, max_size=8))
    return header, body


def frame_of(data, kinds: list[int]) -> Frame:
    """Mostly a kind the stream takes, well formed or damaged; sometimes any kind with any bytes."""
    kind = data.draw(st.sampled_from(kinds + [k for k in sorted(wire.FRAME_KINDS) if k not in kinds][:3]))
    header, body = damaged(data, *well_formed(data, kind))
    return Frame(kind, header, memoryview(body))


def restoring_stream(folder: int) -> tuple[FetchStream, Window, list[Fetch]]:
    """A get stream's frame handling, with files in flight as its requests left them."""
    places = Places(events.ignore)
    stream = FetchStream(types.SimpleNamespace(places=places))
    window = Window(64, 1 << 30)
    fetches = []
    for n, (tag, size) in enumerate(zip(TAGS, (3000, 3 << 20, 3000))):
        f = Fetch({**FILE, "path": f"d/{n}", "size": size}, [b"d", b"%d" % n], parent=folder, tag=tag,
                  tmp=b"tmp%d" % n)
        f.fd = os.open(f.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=folder)
        f.left = layout.chunk_count(f.size, f.chunk)
        f.digests = [None] * f.left
        fetches.append(f)
        places.pending += 1
        for i in range(f.left):
            offset, length = layout.chunk_span(f.size, f.chunk, i)
            window.add((tag, offset), [(f, i)], length)
        if n != 1:
            window.add((BATCH, n), [(f, 0)], 4000)
    return stream, window, fetches


@FUZZ
@given(st.data())
def test_frames_a_get_stream_reads(data) -> None:
    folder = os.open(SCRATCH, os.O_RDONLY | os.O_DIRECTORY)
    stream, window, fetches = restoring_stream(folder)
    try:
        for _ in range(data.draw(st.integers(1, 4))):
            survives(stream._receive, frame_of(data, [wire.DATA, wire.DATAS, wire.ZEROS, wire.NAK, wire.ERROR]), window)
    finally:
        for f in fetches:
            if f.status in ("pending", "verified"):  # the others' descriptors were closed with them
                os.close(f.fd)
        os.close(folder)


def sending_link() -> Link:
    """A send stream's frame handling, with chunks and a bundle in flight."""
    shared = Shared(events.ignore, False)
    link = Link(types.SimpleNamespace(shared=shared))
    for n, tag in enumerate(TAGS[:2]):
        job = FileJob(source(BIG, f"d/{n}"), (0, 0, 0, 0), fid=tag, chunk=1 << 20)
        job.digests, job.waiting = [None] * job.count, set(range(job.count))
        shared.add_file(job)
        for i in range(job.count):
            link.window.add((tag, i << 20), (job, i, b"\x00" * 32), 1 << 20)
    for number in (0, 1):
        bundle = Bundle(number, [source(SMALL, f"s/{number}/{i}") for i in range(number + 1)])
        shared.add_bundle()
        link.window.add((BUNDLE_KEY, number), (bundle, -1, []), 10)
    return link


@FUZZ
@given(st.data())
def test_frames_a_send_stream_reads(data) -> None:
    link = sending_link()
    for _ in range(data.draw(st.integers(1, 4))):
        survives(link._settle, frame_of(data, [wire.ACK, wire.BUNDLE_ACK, wire.NAK, wire.ERROR]))


@FUZZ
@given(st.binary(min_size=5, max_size=64), st.binary(max_size=64))
def test_frame_prefixes_and_openings(prefix: bytes, rest: bytes) -> None:
    survives(wire.parse_open_reply, prefix + rest)
    try:
        kind, size = wire.parse_prefix(prefix[:5], 1 << 12)
    except FxError:
        return
    head = wire.split_rest(kind, (rest * (size // max(1, len(rest)) + 1))[:size] if rest else bytes(size))
    assert len(head.header) == HEADERS[kind]
