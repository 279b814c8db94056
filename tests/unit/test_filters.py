"""The send's filters on real trees: rsync's patterns (first match wins),
--exclude-from files, CACHEDIR.TAG, and the spool of standard input."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fastxfer.client.filters import TAG_SIGNATURE, Filters, read_rules, rule
from fastxfer.client.spool import Spool
from fastxfer.client.walk import walk_filtered
from fastxfer.errors import UsageError


def tree(top: Path, files: list[str]) -> Path:
    for rel in files:
        p = top / rel
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rel.encode())
    return top


def sent(top: Path, *rules: tuple[str, str], caches: bool = False, contents: bool = False) -> list[str]:
    filters = Filters([rule(p, k == "+") for k, p in rules], exclude_caches=caches)
    done = walk_filtered([str(top) + ("/" if contents else "")], None, filters)
    assert not done.skipped
    return sorted(e.remote for e in done.entries)


SRC = ["a.c", "a.o", "lib/b.c", "lib/b.o", "lib/deep/c.c", "build/x.c", "build/sub/y.o", "docs/build", "empty/"]


def test_a_name_pattern_matches_at_any_depth(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    assert sent(top, ("-", "*.o")) == sorted(
        ["src", "src/a.c", "src/lib", "src/lib/b.c", "src/lib/deep", "src/lib/deep/c.c", "src/build",
         "src/build/x.c", "src/build/sub", "src/docs", "src/docs/build", "src/empty"])


def test_a_trailing_slash_matches_folders_only(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    got = sent(top, ("-", "build/"))
    assert "src/docs/build" in got  # a file named build stays
    assert not [p for p in got if p.startswith("src/build")]


def test_a_path_pattern_matches_the_end_of_the_path_and_a_leading_slash_anchors_it(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    assert "src/lib/deep" not in sent(top, ("-", "lib/deep"))
    assert "src/lib/deep" not in sent(top, ("-", "/src/lib/deep"))
    assert "src/lib/deep" in sent(top, ("-", "/lib/deep"))  # the top's own name comes first
    assert "src/lib/deep" not in sent(top, ("-", "/lib/deep"), contents=True)  # DIR/: its contents are the top
    assert "src/lib/deep/c.c" in sent(top, ("-", "src/*.c"))  # '*' stops at '/'
    assert "src/lib/deep/c.c" not in sent(top, ("-", "src/**.c"))  # '**' does not


def test_first_match_wins_in_the_order_given(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    only_c = sent(top, ("+", "*/"), ("+", "*.c"), ("-", "*"))
    assert [p for p in only_c if "." in p] == sorted(["src/a.c", "src/lib/b.c", "src/lib/deep/c.c", "src/build/x.c"])
    # the other order: the exclude is met first and wins
    assert sent(top, ("-", "*"), ("+", "*.c")) == ["src"]
    # an include does not bring back what is inside a folder left out: it is never entered
    assert not [p for p in sent(top, ("-", "lib/"), ("+", "*.c")) if p.startswith("src/lib")]


def test_triple_star_is_a_folder_and_everything_in_it(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    got = sent(top, ("+", "/src/lib/***"), ("-", "*"))
    assert got == ["src", "src/lib", "src/lib/b.c", "src/lib/b.o", "src/lib/deep", "src/lib/deep/c.c"]


def test_the_named_paths_are_sent_whatever_the_patterns(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", ["a.o"])
    done = walk_filtered([str(top / "a.o")], None, Filters([rule("*.o", False)]))
    assert [e.remote for e in done.entries] == ["a.o"]


def test_excluded_entries_are_counted_a_folder_once(tmp_path: Path) -> None:
    top = tree(tmp_path / "src", SRC)
    done = walk_filtered([str(top)], None, Filters([rule("build/", False), rule("*.o", False)]))
    assert done.excluded == 3  # build/ (with its two entries), a.o, lib/b.o


def test_exclude_from_reads_rules_comments_and_prefixes(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules"
    rules_file.write_bytes(b"# build products\n\n*.o\n   \n  # indented comment\n+ keep.log\n- *.log\r\n"
                           b"  spaced.tmp  \nlatin1-\xe9\n")
    rules = read_rules(str(rules_file))
    assert [(r.include, r.pattern) for r in rules] == [
        (False, "*.o"), (True, "keep.log"), (False, "*.log"), (False, "spaced.tmp"), (False, "latin1-\udce9")]
    top = tree(tmp_path / "src", ["keep.log", "other.log", "x.o", "spaced.tmp", "y"])
    (top / os.fsdecode(b"latin1-\xe9")).write_bytes(b"z")
    done = walk_filtered([str(top)], None, Filters(rules))
    assert sorted(e.remote for e in done.entries) == ["src", "src/keep.log", "src/y"]


def test_a_pattern_that_cannot_be_one_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="pattern '\\[z-a\\]': bad character range"):
        rule("[z-a]", False)
    assert rule("[%--]", False).regex.search("-")  # and no warning about set operations


def test_exclude_from_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file"):
        read_rules(str(tmp_path / "missing"))
    (tmp_path / "bad").write_text("ok\n- /\n")
    with pytest.raises(UsageError, match="line 2"):
        read_rules(str(tmp_path / "bad"))


def write_tag(folder: Path, body: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CACHEDIR.TAG").write_bytes(body)


def test_a_cache_folder_keeps_its_tag_and_nothing_else(tmp_path: Path) -> None:
    top = tree(tmp_path / "home", ["doc.txt", "cache/blob", "cache/sub/more", "fake/blob", "short/blob",
                                   "linked/blob"])
    write_tag(top / "cache", TAG_SIGNATURE + b"\n# This file is a cache directory tag.\n")
    write_tag(top / "fake", b"Signature: 0000000000000000000000000000000")  # not the signature
    write_tag(top / "short", TAG_SIGNATURE[:-1])  # one byte short
    os.symlink(top / "cache" / "CACHEDIR.TAG", top / "linked" / "CACHEDIR.TAG")  # a link is no tag
    got = sent(top, caches=True)
    assert [p for p in got if p.startswith("home/cache")] == ["home/cache", "home/cache/CACHEDIR.TAG"]
    assert "home/fake/blob" in got and "home/short/blob" in got and "home/linked/blob" in got
    done = walk_filtered([str(top)], None, Filters(exclude_caches=True))
    assert done.caches == [str(top / "cache")] and done.excluded == 2
    assert "home/cache/blob" in sent(top)  # only when asked


def test_a_named_top_that_is_a_cache_is_sent_as_its_tag(tmp_path: Path) -> None:
    top = tree(tmp_path / "cache", ["a", "b/c"])
    write_tag(top, TAG_SIGNATURE)
    assert sent(top, caches=True) == ["cache", "cache/CACHEDIR.TAG"]


def test_a_fifo_named_like_a_tag_does_not_hang_the_walk(tmp_path: Path) -> None:
    top = tree(tmp_path / "t", ["a"])
    os.mkfifo(top / "CACHEDIR.TAG")
    assert "t/a" in sent(top, caches=True)


# Patterns without brackets or backslashes, on names without '/': the same verdict as fnmatch.
NAMES = st.text(alphabet="ab.*?", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(pattern=NAMES, name=st.text(alphabet="ab.", min_size=1, max_size=6))
def test_a_name_pattern_agrees_with_fnmatch(pattern: str, name: str) -> None:
    r = rule(pattern, False)
    assert bool(r.regex.search(name)) == fnmatch.fnmatchcase(name, pattern)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(pattern=st.text(alphabet="az/*?[]!^-&~|\\", min_size=1, max_size=8),
       path=st.text(alphabet="az/-", min_size=1, max_size=8))
def test_any_pattern_compiles_and_matches_no_more_folders_than_it_names(pattern: str, path: str) -> None:
    try:
        r = rule(pattern, False)
    except UsageError as exc:
        assert not pattern.strip("/") or "bad character range" in exc.message
        return
    found = r.regex.search(path)  # compiles and runs on any input
    if found and "**" not in pattern:  # '*', '?' and classes never match a '/': only the pattern's own do
        assert found.group(0).strip("/").count("/") <= pattern.strip("/").count("/")


def test_the_spool_holds_standard_input_and_has_no_name(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    reader, writer = os.pipe()
    feeder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
                              stdin=subprocess.PIPE, stdout=writer)
    os.close(writer)
    feeder.stdin.write(data)
    feeder.stdin.close()
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    try:
        with Spool("dumps/db.dump", 0o640, 1_700_000_000_123_456_789, fd=reader) as spool:
            e = spool.entry
            assert (e.remote, e.kind, e.size, e.mode, e.mtime_ns) == ("dumps/db.dump", "file", len(data), 0o640,
                                                                       1_700_000_000_123_456_789)
            with open(e.local, "rb") as f:
                assert f.read() == data
            assert set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) == before  # nameless
            path = e.local
        assert not os.path.exists(path)
    finally:
        os.close(reader)
        feeder.wait(10)


def test_without_proc_the_spool_is_a_private_named_file_removed_at_the_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    reader, writer = os.pipe()
    os.write(writer, b"hello")
    os.close(writer)
    try:
        with Spool("x", fd=reader, by_proc=False) as spool:
            folder = Path(spool.entry.local).parent
            assert folder.parent == tmp_path and (folder.stat().st_mode & 0o777) == 0o700
            assert (Path(spool.entry.local).stat().st_mode & 0o777) == 0o600
            assert Path(spool.entry.local).read_bytes() == b"hello" and spool.entry.mode == 0o600
        assert list(tmp_path.iterdir()) == []
    finally:
        os.close(reader)


def test_the_options_keep_the_order_they_were_given_in(tmp_path: Path) -> None:
    from fastxfer.cli import main
    from fastxfer.cli.send_input import check_input

    (tmp_path / "rules").write_text("+ b\n# c\nd\n")
    args = main.build_parser("send").parse_args(
        ["send", "src", "--to", "h", "--exclude", "a", "--exclude-from", str(tmp_path / "rules"), "--include", "e",
         "--exclude", "f/", "--exclude-caches", "-x"])
    check_input(args)
    assert [(r.include, r.pattern) for r in args.filter_set.rules] == [
        (False, "a"), (True, "b"), (False, "d"), (True, "e"), (False, "f/")]
    assert args.filter_set.exclude_caches and args.filter_set.one_file_system and args.stdin_name is None
    again = main.build_parser("send").parse_args(["send", "src", "--to", "h"])
    assert again.filters == []  # the list of one parse is not shared with the next
