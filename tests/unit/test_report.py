"""What cli/report.py shows a person: a bar's numbers in binary units, failures
grouped by cause, and a bar that counts a lost stream's bytes once."""

from __future__ import annotations

import io
import sys

from fastxfer.cli import report
from fastxfer.client.events import Finished, Moved, Planned, Requeued, Unneeded
from fastxfer.client.jobs import Bundle, FileJob
from fastxfer.client.send import Shared
from fastxfer.client.walk import Entry

MIB = 1 << 20


def test_a_bars_numbers_are_in_the_summaries_units() -> None:
    assert report.bar_numbers(2 * 1024 * MIB, 2 * 1024 * MIB, 139.2 * MIB) == "2.00 GiB/2.00 GiB, 139.20 MiB/s"
    assert report.bar_numbers(512, 2048, None) == "512 B/2.00 KiB, ? B/s"
    assert report.bar_numbers(5 * MIB, None, 1.5 * 1024) == "5.00 MiB, 1.50 KiB/s"  # a total not known
    assert report.bar_numbers(1200, 3000, 400.4, unit="files") == "1,200/3,000 files, 400 files/s"
    assert report.bar_numbers(52, None, None, unit="entries") == "52 entries"


def drawn(events: list) -> str:
    """What a Progress sink draws for *events*, as a terminal would get it."""
    err, sys.stderr = sys.stderr, io.StringIO()
    try:
        sink = report.Progress(True)
        for e in events:
            sink(e)
        return sys.stderr.getvalue()
    finally:
        sys.stderr = err


def test_a_bar_says_gib_not_g_and_keeps_its_total_when_bytes_are_sent_again() -> None:
    text = drawn([Planned(2048 * MIB, 1), Moved(1024 * MIB), Requeued(512 * MIB), Moved(512 * MIB),
                  Moved(1024 * MIB), Finished()])
    last = text.split("\r")[-1]
    assert "100%" in last and "2.00 GiB/2.00 GiB" in last, text
    assert "2.00G" not in text and "MB/s" not in text.replace("MiB/s", "")


def test_a_bar_left_more_than_its_total_would_lose_it() -> None:
    sink = report.Progress(True)
    err, sys.stderr = sys.stderr, io.StringIO()
    try:
        sink(Planned(1000, 1))
        sink(Moved(600))
        sink(Requeued(600))  # the stream was lost before the acknowledgement
        sink(Moved(600))
        assert (sink.bar.n, sink.bar.total) == (600, 1000)
        sink(Requeued(5000))  # never below nothing
        assert sink.bar.n == 0
        sink(Unneeded(400))
        assert sink.bar.total == 600
        sink(Finished())
        assert sink.bar is None
    finally:
        sys.stderr = err


def test_a_lost_streams_pieces_are_taken_back_from_the_bar() -> None:
    told: list = []
    shared = Shared(told.append, want_sha256=False)
    src = Entry("/x/big", "big", "file", 3 * MIB + 5, 0, 0o644)
    job = FileJob(src, (0, 0, 0, 0), chunk=MIB)
    small = [Entry(f"/x/s{i}", f"s{i}", "file", 100, 0, 0o644) for i in range(3)]
    shared.requeue([(job, 0, b""), (job, 3, b""), (Bundle(1, small), -1, [])])
    assert told == [Requeued(MIB + 5 + 300)]
    assert shared.work.qsize() == 3


def test_failures_are_grouped_by_cause_the_largest_first() -> None:
    failures = [(f"d/f{i}", f"d/f{i}: No space left on device") for i in range(978)]
    failures += [(f"l{i}", f"l{i}: link to '/etc/x{i}' leaves the restore") for i in range(20)]
    failures += [("a", "a: exists locally; not replaced (use --force)"),
                 ("b", "b: exists locally; not replaced (use --force)")]
    out = io.StringIO()
    report.print_failures(failures, stream=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "ERROR: No space left on device (978 entries: d/f0, d/f1, d/f2 and 975 more (-v lists them))"
    assert lines[1] == "ERROR: exists locally; not replaced (use --force) (2 entries: a, b)"
    assert lines[2] == "ERROR: l0: link to '/etc/x0' leaves the restore" and len(lines) == 22
    every = io.StringIO()
    report.print_failures(failures[:3], verbose=True, stream=every)
    assert every.getvalue() == "ERROR: No space left on device (3 entries):\n  d/f0\n  d/f1\n  d/f2\n"


def test_a_cause_is_the_message_without_its_path() -> None:
    assert report.cause_of("docs/a: Permission denied; not stored", "docs/a") == "Permission denied; not stored"
    assert report.cause_of("'docs/a' is missing", "docs/a") == "is missing"
    assert report.cause_of("the session ended", "docs/a") == "the session ended"


def test_verbosity_levels() -> None:
    import argparse

    p = argparse.ArgumentParser()
    report.add_verbosity(p)
    assert [report.verbosity(p.parse_args(a)) for a in ([], ["-q"], ["-v"], ["--itemize"], ["-vv"], ["-vvv"])] \
        == [0, -1, 1, 1, 2, 2]
    assert report.item("new", "docs/a.txt", "1.00 KiB") == "new       docs/a.txt  (1.00 KiB)"


def test_what_a_stored_entrys_line_calls_the_change() -> None:
    from fastxfer.client.jobs import Result
    from fastxfer.client.plan import Planner, take_put_answer, verdict
    from fastxfer.client.send import itemized

    f = Entry("/x/a", "a", "file", 10, 0, 0o644)
    assert (verdict(f, {"t": "ok", "status": "new"}).how, verdict(f, {"t": "ok", "status": "send"}).how) \
        == ("new", "changed")
    d = Entry("/x/d", "d", "dir", 0, 0, 0o755)
    answers = [{"t": "ok", "status": s} for s in ("new", "stored", "unchanged")]
    assert [(r.status, r.how) for r in (take_put_answer(FileJob(d, (0, 0, 0, 0)), a) for a in answers)] \
        == [("stored", "new"), ("stored", "touched"), ("unchanged", "")]
    planner = Planner(lambda *_: {}, lambda _size: MIB)
    planner.forced, planner.new = {id(f)}, set()
    assert itemized(Result(f, "stored", how="same"), planner) == "repaired"  # --checksum found the server's copy bad
    g = Entry("/x/g", "g", "file", 10, 0, 0o644)
    planner.new = {id(g)}
    assert itemized(Result(g, "stored", how="same"), planner) == "touched"  # the same content, a new time
    assert itemized(Result(g, "stored"), planner) == "new"
    assert itemized(Result(f, "stored"), planner) == "changed"
    assert itemized(Result(f, "stored", how="linked"), planner) == "linked"
