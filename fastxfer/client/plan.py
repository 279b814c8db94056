"""What a send asks the server before it moves anything: put (large files,
folders, links), probe (small files, and every file of a dry run or a
--checksum send), in batches that fit one control message.

The requests are built and the answers read here; the one call that goes
over the wire (``call``) and the one look at the disk (``stat``) are passed
in, so the rules are tested without a server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from fastxfer.errors import FxError, LocalFileError, ProtocolError, from_wire_name
from fastxfer.protocol import layout, messages, paths, wire
from fastxfer.client.jobs import FileJob, Result, Source, file_identity, find_holes, whole_sha256
from fastxfer.client.sums import sums_pages

# Files this small travel in bundles: many to a frame, no staging, no
# round trip of their own, committed and made durable together.
SMALL_FILE = 256 << 10
BUNDLE_BYTES = 4 << 20
BUNDLE_FILES = 1024
# A path of at most this many characters is within paths.MAX_TOTAL bytes (4
# per character at most) and paths.MAX_DEPTH parts, whatever its characters.
SHORT_PATH = min(paths.MAX_TOTAL // 4, 2 * paths.MAX_DEPTH - 2)

Call = Callable[[dict, str], dict]


def batches(sources: list, max_bytes: int = 1 << 20, first: int = messages.MAX_BATCH) -> Iterator[list]:
    """Slices that fit one control message: bounded in count and in bytes of names.

    With *first*, the first slice is that small and later ones double up to the
    bound, so that work on the answer to the first can start early.
    """
    batch: list = []
    size = 0
    limit = max(1, min(first, messages.MAX_BATCH))
    for s in sources:
        cost = 2 * (len(s.remote) + len(s.target or "")) + 200  # JSON may escape a name
        if batch and (len(batch) >= limit or size + cost > max_bytes):
            yield batch
            batch, size = [], 0
            limit = min(2 * limit, messages.MAX_BATCH)
        batch.append(s)
        size += cost
    if batch:
        yield batch


def tops_of(sources: list[Source]) -> list[str] | None:
    """Fewest paths at or below which every source lies, or None if more than a probe may name."""
    tops: list[str] = []
    current = None
    for s in sources:
        if current is not None and (s.remote == current or s.remote.startswith(current + "/")):
            continue
        current = s.remote
        tops.append(current)
        if len(tops) > messages.MAX_PROBE_TOPS:
            return None
    return tops


def wire_failure(answer: dict) -> FxError:
    return from_wire_name(str(answer.get("code")), str(answer.get("message")))


def is_small(src: Source) -> bool:
    return src.kind == "file" and src.size <= SMALL_FILE


def refuse_bad_names(sources: list[Source]) -> tuple[list[Source], list[Result]]:
    """(the sources the server may take, a failure for each name it would refuse)."""
    kept, failed = [], []
    for s in sources:
        # The walk's names come from the filesystem: only a long path can
        # break the server's rules (depth, bytes), so short ones skip the check.
        if len(s.remote) > SHORT_PATH:
            try:
                paths.split(s.remote)
            except FxError as exc:
                failed.append(Result(s, "failed", exc))
                continue
        kept.append(s)
    return kept, failed


def call_batch(call: Call, kind: str, reply: str, items: list[dict], extra: dict | None = None) -> list[dict]:
    """One control call naming many files; one answer object per file, in order."""
    answers = messages.get_list(call({"t": kind, "files": items, **(extra or {})}, reply), "files")
    if len(answers) != len(items):
        raise ProtocolError("server answered a different number of files")
    return [messages.get_obj(a) for a in answers]


def put_request(batch: list[Source], chunk_of: Callable[[int], int], forced: set[int],
                stat=os.stat) -> tuple[list[dict], list[FileJob], list[Result]]:
    """The put items for *batch*, a job per item, and the files that could not be looked at."""
    items, opened, failed = [], [], []
    for src in batch:
        chunk = layout.choose_chunk(src.size, chunk_of(src.size))
        item = {"path": src.remote, "size": src.size, "mtime_ns": src.mtime_ns,
                "mode": src.mode, "chunk": chunk, "force": id(src) in forced}
        if src.kind == "file":
            try:
                st = stat(src.local, follow_symlinks=src.follow)
            except OSError as exc:
                failed.append(Result(src, "failed", LocalFileError(f"{src.local}: {exc.strerror}; not stored")))
                continue
            if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
                # Listed a moment ago; what counts is what is sent from now on.
                src.size, src.mtime_ns = st.st_size, st.st_mtime_ns
                item.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
            holes = find_holes(src, st, chunk)
            if holes:
                runs = layout.hole_ranges(holes)[: layout.MAX_HOLE_RANGES]
                holes = {i for first, n in runs for i in range(first, first + n)}
                item["holes"] = runs
            opened.append(FileJob(src, file_identity(st), chunk=chunk, holes=holes))
        else:
            item.update(kind=src.kind, target=src.target)
            opened.append(FileJob(src, (0, 0, 0, 0), chunk=chunk))
        items.append(item)
    return items, opened, failed


def take_put_answer(job: FileJob, answer: dict) -> Result | None:
    """The result of a put that settled *job* (an error, unchanged, a folder or
    link stored), or None with *job* made ready to send: its transfer id, its
    server-recorded chunk size and the chunks the server already holds."""
    if answer.get("t") == "error":
        return Result(job.src, "failed", wire_failure(answer))
    if job.src.kind != "file" or answer.get("status") == "unchanged":
        status = str(answer.get("status"))
        if status == "unchanged":
            return Result(job.src, "unchanged")
        # A folder: "new", or "stored" when its recorded mode or time changed; a link: its older copy kept or not.
        how = "new" if status == "new" or (job.src.kind == "link" and answer.get("version") is None) \
            else "touched" if job.src.kind == "dir" else "changed"
        return Result(job.src, "stored", how=how)
    job.fid = messages.get_hex(answer, "fid", 16)
    chunk = messages.get_int(answer, "chunk", layout.MIN_CHUNK, wire.MAX_CHUNK)
    if chunk != job.chunk or answer.get("status") != "new":
        job.holes = set()  # a resumed staging has its own record: every chunk it lists is checked
    job.chunk = chunk
    if not layout.valid_layout(job.src.size, job.chunk):
        raise ProtocolError("server recorded an impossible chunk size")
    job.have = messages.parse_have(messages.get_str(answer, "have", messages.MAX_CONTROL * 16), job.count)
    job.digests = [None] * job.count
    job.waiting = set(range(job.count))
    for item in messages.get_list(answer, "same", 16) if answer.get("same") is not None else []:
        item = messages.get_obj(item)
        chunk = messages.get_int(item, "chunk", layout.MIN_CHUNK, wire.MAX_CHUNK)
        if layout.valid_layout(job.src.size, chunk):
            job.same.append((messages.get_hex(item, "digest", 32), chunk))
    return None


def probe_item(src: Source) -> dict:
    return {"path": src.remote, "size": src.size, "mtime_ns": src.mtime_ns}


def verdict(src: Source, answer: dict) -> Result:
    """A probe's answer as a result: failed, unchanged, or "send"."""
    if answer.get("t") == "error":
        return Result(src, "failed", wire_failure(answer))
    if answer.get("status") == "unchanged":
        return Result(src, "unchanged")
    # "new": nothing is recorded at the path (a server from before says "send" for both).
    return Result(src, "send", how="new" if answer.get("status") == "new" else "changed")


def group_bundles(sources: list[Source]) -> list[list[Source]]:
    """Small files to send, cut into bundles bounded in bytes and in files."""
    groups: list[list[Source]] = []
    bundle: list[Source] = []
    size = 0
    for src in sources:
        if bundle and (size + src.size > BUNDLE_BYTES or len(bundle) >= BUNDLE_FILES):
            groups.append(bundle)
            bundle, size = [], 0
        bundle.append(src)
        size += src.size
    if bundle:
        groups.append(bundle)
    return groups


class Planner:
    """The questions of one send, with what earlier answers taught."""

    def __init__(self, call: Call, chunk_of: Callable[[int], int], checksum: bool = False,
                 hash_file: Callable[[Source], bytes] = whole_sha256, stat=os.stat,
                 compared: Callable[[int], None] = lambda _size: None) -> None:
        self.call = call
        self.compared = compared  # told the bytes of files the server has compared by content
        self.chunk_of = chunk_of
        self.checksum = checksum
        self.hash_file = hash_file
        self.stat = stat
        self.forced: set[int] = set()  # files the server must not skip by size and time
        self.tops: list[str] | None = None  # asked with the first probe, then None
        self.nothing_stored = False  # the server has no file below any top: no probe needed
        self.new: set[int] = set()  # small files at whose path nothing is recorded (for the itemized list)

    def ask(self, sources: list[Source]) -> list[Result]:
        """What would move: "send", "unchanged" or "failed" per entry, nothing sent.

        With --checksum every file is hashed here and compared by content.
        """
        files = [s for s in sources if s.kind == "file"]
        results = [Result(s, "send") for s in sources if s.kind != "file"]
        for batch in batches(files):
            if self.checksum:
                results += self.compare(batch)
                continue
            answers = call_batch(self.call, "probe", "probe_ok", [probe_item(s) for s in batch])
            results += [verdict(src, answer) for src, answer in zip(batch, answers)]
        return results

    def compare(self, batch: list[Source]) -> list[Result]:
        """--checksum: each file's SHA-256 against the one the server re-hashes
        from what it holds (sums, a page at a time, so that no reply waits on
        more than the server's hashing budget): "unchanged" when they agree."""
        local: dict[int, str] = {}
        for s in batch:
            try:
                local[id(s)] = self.hash_file(s).hex()
            except LocalFileError:
                pass  # it will fail with its reason when sent
        same: set[int] = set()
        asked = [s for s in batch if id(s) in local]
        for page, _partly in sums_pages(self.call, [s.remote for s in asked]):
            done, asked = asked[: len(page)], asked[len(page) :]
            same.update(id(src) for src, answer in zip(done, page)
                        if answer["status"] == "ok" and answer["sha256"] == local[id(src)])
            self.compared(sum(s.size for s in done))
        return [Result(s, "unchanged" if id(s) in same else "send") for s in batch]

    def put(self, batch: list[Source]) -> tuple[list[Result], list[FileJob]]:
        """(results of entries settled by the put, files to send)."""
        items, opened, results = put_request(batch, self.chunk_of, self.forced, self.stat)
        if not items:
            return results, []
        files = []
        for job, answer in zip(opened, call_batch(self.call, "put", "put_ok", items)):
            settled = take_put_answer(job, answer)
            if settled is None:
                files.append(job)
            else:
                results.append(settled)
        return results, files

    def probe(self, batch: list[Source]) -> tuple[list[Result], list[list[Source]]]:
        """Ask which small files changed: (results of those that need no
        sending, bundles of those that do)."""
        # --checksum asked already; nothing to ask when the server has no file below our tops.
        ask = [] if self.nothing_stored else [s for s in batch if id(s) not in self.forced]
        answers: dict[int, dict] = {}
        if ask:
            msg: dict = {"t": "probe", "files": [probe_item(s) for s in ask]}
            if self.tops is not None:  # first probe only
                msg["tops"], self.tops = self.tops, None
            reply = self.call(msg, "probe_ok")
            got = messages.get_list(reply, "files")
            if len(got) != len(ask):
                raise ProtocolError("server answered a different number of files")
            answers = {id(s): messages.get_obj(a) for s, a in zip(ask, got)}
            self.nothing_stored = reply.get("empty") is True
        if not answers:  # nothing asked: every file goes
            if self.nothing_stored:
                self.new.update(id(s) for s in batch)
            return [], group_bundles(batch)
        settled, send = [], []
        for src in batch:
            answer = answers.get(id(src))
            result = verdict(src, answer) if answer is not None else None
            if result is None or result.status == "send":
                if result is not None and result.how == "new" or self.nothing_stored:
                    self.new.add(id(src))
                send.append(src)
            else:
                settled.append(result)
        return settled, group_bundles(send)
