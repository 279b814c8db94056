"""What ``fastxfer send`` reads: the filter options (--exclude, --include,
--exclude-from, --exclude-caches, --one-file-system) and standard input
(``send - --name NAME``); the notes and counts they add to its report."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from fastxfer.errors import FxError, UsageError

FILTER_EPILOG = """\
filters (rsync's rules: tried in the order given, the first that matches decides;
an entry no rule matches is sent; a folder left out is not entered):
  fastxfer send ~/src --to backup --exclude '*.o' --exclude build/
  fastxfer send ~/src --to backup --include '*/' --include '*.c' --exclude '*'   (only the .c files)
  fastxfer send ~ --to backup --exclude-from ~/.config/fastxfer/excludes --exclude-caches
  fastxfer send / --to backup --one-file-system --exclude /tmp/
A pattern without '/' matches a name at any depth; with one, the path from the
top of what is sent (its own name first: ~/src sends src/...), ending there;
a leading '/' anchors it at the top, a trailing '/' matches folders only; '*'
and '?' stop at '/', '**' does not. --exclude-from FILE: one pattern a line,
'+ PATTERN' includes, blank lines and '#' comments are ignored. The paths
named on the command line are always sent. An entry an earlier snapshot held
and a filter now leaves out leaves the current view as a deleted one does
(counted in "deleted"); the earlier snapshots keep it.

standard input:
  pg_dump mydb | fastxfer send - --name db.dump --to backup
  tar -c /etc | fastxfer send - --name etc.tar --dest dumps --to backup --mtime @1765000000
'-' is the only PATH then. The input is first spooled to a nameless file in
$TMPDIR (the disk there must hold all of it; it is gone when the send ends),
then stored as NAME with mode 0600 and the current time unless --mode and
--mtime say otherwise; sent again with the same --mtime and the same bytes,
a cut-short send resumes."""


class _Ordered(argparse.Action):
    """--exclude, --include and --exclude-from kept in one list, in the order given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def add_filter_options(s) -> None:
    order = dict(dest="filters", action=_Ordered, default=[], metavar="PATTERN")
    s.add_argument("--exclude", const="-", **order,
                   help="leave out entries matching PATTERN (rsync's rules, see below); repeatable")
    s.add_argument("--include", const="+", **order,
                   help="send entries matching PATTERN even if a later --exclude matches them; repeatable")
    s.add_argument("--exclude-from", const="from", **{**order, "metavar": "FILE"},
                   help="the rules in FILE, one a line ('+ ' includes), read where the option stands")
    s.add_argument("--exclude-caches", action="store_true",
                   help="leave out the contents of folders marked by a valid CACHEDIR.TAG (the tag is sent)")
    s.add_argument("-x", "--one-file-system", action="store_true",
                   help="do not enter folders on another filesystem below a PATH (each kept empty, noted once)")
    s.add_argument("--name", default=None, metavar="NAME",
                   help="with PATH '-': the stored name of what standard input holds (required)")
    s.add_argument("--mode", default=None, metavar="OCTAL", help="with '-': its permission bits (default 0600)")
    s.add_argument("--mtime", default=None, metavar="TIME",
                   help="with '-': its time, '@SECONDS' or '2026-12-01 18:30' (default: now)")


def check_input(args: argparse.Namespace) -> None:
    """Usage errors of the filter and standard-input options, before any walk;
    args.filter_set and args.stdin_name (the stored path, or None) set."""
    from fastxfer.client.filters import Filters, read_rules, rule

    rules = []
    for kind, value in args.filters:
        if kind == "from":
            rules += read_rules(value)
        else:
            try:
                rules.append(rule(value, kind == "+"))
            except UsageError as exc:
                raise UsageError(f"--{'include' if kind == '+' else 'exclude'}: {exc.message}") from None
    args.filter_set = Filters(rules, args.exclude_caches, args.one_file_system)
    args.stdin_name = None
    if "-" not in args.files:
        for option in ("name", "mode", "mtime"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option} is for standard input only (PATH '-')")
        return
    if len(args.files) > 1:
        raise UsageError("'-' (standard input) must be the only PATH")
    if not args.name:
        raise UsageError("sending standard input ('-') needs --name NAME, the name to store it as")
    if rules or args.exclude_caches or args.one_file_system or args.follow_links:
        raise UsageError("filters and --follow-links choose what a walk sends; standard input is one file")
    args.stdin_name = _stored_name(args.name, args.dest)
    args.stdin_mode = _mode(args.mode)
    args.stdin_mtime = _mtime(args.mtime)


def _stored_name(name: str, dest: str | None) -> str:
    from fastxfer.protocol.paths import split

    remote = "/".join(p for p in ((dest or "").strip("/"), name) if p)
    try:
        split(remote)
    except FxError as exc:
        raise UsageError(f"--name {name!r}: {exc.message}") from None
    return remote


def _mode(text: str | None) -> int:
    if text is None:
        return 0o600
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise UsageError(f"--mode {text!r}: give permission bits in octal, such as 0640")
    return mode


def _mtime(text: str | None) -> int | None:
    import datetime

    from fastxfer.protocol.snapshot import TIME_FORMATS

    if text is None:
        return None
    text = text.strip()
    if text.startswith("@"):
        try:
            return round(float(text[1:]) * 1e9)
        except ValueError:
            pass
    for fmt in TIME_FORMATS:
        try:
            return round(datetime.datetime.strptime(text, fmt).timestamp() * 1e6) * 1000
        except ValueError:
            continue
    raise UsageError(f"--mtime {text!r}: give @SECONDS or a time such as 2026-12-01 18:30")


@contextmanager
def gathered(args: argparse.Namespace):
    """The walk of the PATHs, or standard input spooled: a Walked; the spool is
    removed when the block ends, however it ends."""
    from fastxfer.client.walk import Walked, walk_filtered

    if args.stdin_name is None:
        yield walk_filtered(args.files, args.dest, args.filter_set, args.follow_links)
        return
    from fastxfer.client.spool import Spool

    if sys.stdin.isatty():
        print("reading standard input to the end (Ctrl-D ends it)...", file=sys.stderr)
    with Spool(args.stdin_name, args.stdin_mode, args.stdin_mtime) as spool:
        yield Walked(entries=[spool.entry])


def tops_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(stored path, source) of each path the send names, for its snapshot."""
    from fastxfer.client.spool import STDIN_SOURCE
    from fastxfer.client.walk import tops

    return [(args.stdin_name, STDIN_SOURCE)] if args.stdin_name else tops(args.files, args.dest)


def print_notes(walked, quiet: bool) -> None:
    """What the filters left out that a person may not expect: each cache and mount point, once."""
    from fastxfer.client.walk import display

    if quiet:
        return
    for path in walked.caches:
        print(f"note: {display(path)}: a cache (CACHEDIR.TAG): only its tag is sent (--exclude-caches)",
              file=sys.stderr)
    for path in walked.mounts:
        print(f"note: {display(path)}: another filesystem, not entered; kept as an empty folder "
              f"(--one-file-system)", file=sys.stderr)


def filtered_line(walked) -> str | None:
    """The count of what the filters left out, for the summary; None when nothing was."""
    parts = []
    if walked.excluded:
        parts.append(f"{walked.excluded:,} {'entry' if walked.excluded == 1 else 'entries'} excluded"
                     + (" (a folder counts once, with what it holds)" if walked.excluded > 1 else ""))
    if walked.caches:
        parts.append(f"{len(walked.caches):,} cache folder{'s' * (len(walked.caches) != 1)} sent as its tag only")
    if walked.mounts:
        parts.append(f"{len(walked.mounts):,} other filesystem{'s' * (len(walked.mounts) != 1)} not entered")
    return "filters: " + ", ".join(parts) if parts else None


def deleted_note(walked, snap) -> str | None:
    """Said when a snapshot removed entries while filters left some out: some of
    the removed may be there at the source, only left out now."""
    if snap is None or not snap.removed or not (walked.excluded or walked.caches or walked.mounts):
        return None
    return (f"note: of the {snap.removed:,} deleted, some may still be at the source: an entry an earlier "
            f"snapshot held that the filters now leave out leaves the current view as a deleted one does; "
            f"the earlier snapshots keep it (fastxfer diff, get --at)")
