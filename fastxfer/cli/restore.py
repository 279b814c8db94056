"""Reading the backup back: ls, get and sums."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastxfer.cli.args import BWLIMIT_HELP, pacer_for, parse_rate
from fastxfer.cli.report import human, plural, reopened_note
from fastxfer.errors import FxError, LocalFileError, RefusedError, UsageError, aggregate


LISTED_ERRORS = 20  # a get that fails for many files lists this many unless -v
AT_HELP = ("the tree as a snapshot holds it: its id (`fastxfer snapshots`), 'latest', or a time "
           "('2026-12-01', '2026-12-01 18:30': the last snapshot taken by then)")
KIND_SHOWN = {"fifo": "fifo", "socket": "socket", "chardev": "char dev", "blockdev": "block dev"}


def add_ls(sub) -> None:
    ls = sub.add_parser("ls", help="list what the server holds for this client")
    ls.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    ls.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    ls.add_argument("--versions", action="store_true", help="list the older copies kept instead")
    ls.add_argument("--at", default=None, metavar="SNAPSHOT", help=AT_HELP)



def add_get(sub) -> None:
    g = sub.add_parser("get", help="restore files and folders from the server",
                       description="Restore files, folders and links as the server holds them (the latest "
                                   "send, or a snapshot with --at), each file verified against the digest "
                                   "recorded at backup. Nothing outside DEST is created, changed or followed.",
                       epilog="examples:\n"
                              "  fastxfer get Documents --from backup                 ./Documents\n"
                              "  fastxfer get Documents --from backup -o /tmp/docs    /tmp/docs is the copy\n"
                              "  fastxfer get Documents --from backup --at 11 -o /tmp/tuesday\n"
                              "  fastxfer get Documents/a.pdf Mail --from backup -o /tmp/r   /tmp/r/a.pdf, /tmp/r/Mail\n"
                              "  fastxfer get Photos --from backup --bwlimit 8M       at most 8 MiB/s over all streams\n\n"
                              "Links are made exactly as stored (absolute and '..' targets too: a link's "
                              "target is data);\n--safe-links leaves out those whose target leaves the "
                              "restore. A local file is never replaced\nwithout --force; one of the same "
                              "size and time is skipped as already there.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("paths", nargs="+", metavar="PATH", help="as `fastxfer ls` shows them")
    g.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    g.add_argument("-o", "--output", default=None, metavar="DEST",
                   help="the copy of PATH: made if missing, merged into if it is a folder (a single file goes "
                        "inside an existing folder); with several PATHs, the folder receiving each "
                        "(default: PATH's last part in the current folder)")
    g.add_argument("--at", default=None, metavar="SNAPSHOT", help=AT_HELP)
    g.add_argument("--streams", type=int, default=None, help="parallel connections (default: automatic)")
    g.add_argument("--bwlimit", type=parse_rate, default=0, metavar="RATE", help=BWLIMIT_HELP)
    g.add_argument("--force", action="store_true",
                   help="replace local files that exist, and give existing folders the stored mode")
    g.add_argument("--safe-links", action="store_true",
                   help="leave out links whose target is absolute or climbs out of the restore (as rsync)")
    g.add_argument("--delete", action="store_true",
                   help="remove what the copy of PATH holds locally that the server's tree does not (as rsync); "
                        "nothing is removed when something was not restored")
    g.add_argument("--devices", action="store_true",
                   help="make device nodes as recorded (as root only; otherwise they are reported, never made)")
    g.add_argument("--version", default=None, metavar="VERSION",
                   help="an older copy of one file, as `fastxfer ls --versions PATH` names it")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the result")
    g.add_argument("-v", "--verbose", action="store_true",
                   help=f"list every entry not restored (default: the first {LISTED_ERRORS})")



def add_sums(sub) -> None:
    sm = sub.add_parser("sums", help="SHA256SUMS of this client's backup, for sha256sum -c")
    sm.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    sm.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    sm.add_argument("--at", default=None, metavar="SNAPSHOT",
                    help="the files of that snapshot (an id, 'latest' or a time such as 2026-12-01T18:00) "
                         "instead of the current view")
    sm.add_argument("-q", "--quiet", action="store_true", help="no progress bar")



def cmd_ls(args: argparse.Namespace) -> int:
    import datetime
    import json

    from fastxfer.client.connect import connect_control
    from fastxfer.protocol.snapshot import parse_at
    from fastxfer.client.listing import list_all
    from fastxfer.client.walk import display

    at = parse_at(args.at) if args.at is not None else None
    if at is not None and args.versions:
        raise UsageError("--at and --versions do not go together: a snapshot holds one copy of each file")
    control, _ = connect_control(args.server)
    try:
        entries = list_all(control, args.path, args.versions, at)
    finally:
        control.close()
    if args.json:
        print(json.dumps(entries, indent=1, ensure_ascii=True))
        return 0
    if not entries and args.path:
        raise RefusedError(f"nothing stored at {args.path!r}")
    for e in entries:
        when_ns = e.get("replaced_ns") if args.versions else e.get("mtime_ns")
        when = datetime.datetime.fromtimestamp((when_ns or 0) / 1e9).strftime("%Y-%m-%d %H:%M")
        sha = e.get("sha256") or "-" * 64
        name = display(e["path"])
        if args.versions:
            print(f"{human(e['size'] or 0):>11}  {when}  {sha}  {name}  ({e['version']})")
        elif e.get("kind") == "link":
            print(f"{'link':>11}  {when}  {'-' * 64}  {name} -> {display(e.get('target') or '')}")
        elif e.get("kind") == "dir":
            print(f"{'folder':>11}  {when}  {'-' * 64}  {name}/")
        elif e.get("kind") in KIND_SHOWN:
            print(f"{KIND_SHOWN[e['kind']]:>11}  {when}  {'-' * 64}  {name}")
        else:
            print(f"{human(e['size']):>11}  {when}  {sha}  {name}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from fastxfer.cli.report import Progress
    from fastxfer.client.connect import connect_control
    from fastxfer.client.get import Getter
    from fastxfer.client.listing import list_all, list_version
    from fastxfer.client.restore_plan import plan
    from fastxfer.client.tuning import LONG_PATH_RTT, auto_streams
    from fastxfer.protocol.snapshot import parse_at

    if args.devices and os.geteuid() != 0:
        raise UsageError("--devices makes device nodes, which only root may do")
    at = parse_at(args.at) if args.at is not None else None
    if at is not None and args.version:
        raise UsageError("--at and --version do not go together: pick a snapshot or an older copy")
    inside = args.output is None or len(args.paths) > 1
    dest = "." if args.output is None else args.output
    control, welcome = connect_control(args.server)
    started = time.monotonic()
    pacer = pacer_for(args.bwlimit)  # one limit over every PATH's streams
    outcomes = []
    received = streams_used = 0
    try:
        for path in args.paths:
            if args.version:
                entries = list_version(control, path, args.version)
            else:
                entries = list_all(control, path, at=at)
            root, planned = plan(entries, path, dest, inside)
            if not os.path.isdir(root):
                try:
                    os.mkdir(root)
                except OSError as exc:
                    raise LocalFileError(f"{root}: {exc.strerror}") from None
            streams = min(args.streams or auto_streams(len(planned), control.rtt >= LONG_PATH_RTT, args.bwlimit), 16)
            getter = Getter(control, welcome, streams, args.force, Progress(sys.stderr.isatty() and not args.quiet),
                            safe_links=args.safe_links, devices=args.devices, pacer=pacer)
            try:
                outcomes += getter.run(root, planned, copy_folders(entries, planned, path) if args.delete else None)
                if getter.delete_held_back:
                    print("WARNING: not everything was restored, so nothing was deleted (--delete)", file=sys.stderr)
            finally:
                received += getter.bytes_received
                streams_used = max(streams_used, len(getter.threads))
    finally:
        control.close()
    reopened_note(control)
    return report_get(args, outcomes, received, time.monotonic() - started, streams_used)


def copy_folders(entries: list[dict], planned: list, path: str) -> list[list[bytes]]:
    """The local folders that are the copy of PATH's folders (for --delete): every
    folder listed, and DEST itself when it is the copy of PATH."""
    folders = [parts for e, parts in planned if e.get("kind") == "dir"]
    top = path.strip("/")
    if not top or any(e.get("path") == top and e.get("kind") == "dir" for e in entries) \
            and not any(e.get("path") == top for e, _ in planned):
        folders.append([])
    return folders


def report_get(args: argparse.Namespace, outcomes: list, received: int, elapsed: float, streams_used: int) -> int:
    """The end of a get: what was not restored, one summary line, the exit code."""
    from fastxfer.client.walk import display

    bad = [o for o in outcomes if o.status not in ("restored", "unchanged", "recorded", "unsafe", "deleted")]
    deleted = sum(1 for o in outcomes if o.status == "deleted")
    there = sum(1 for o in outcomes if o.status == "unchanged")
    recorded = sum(1 for o in outcomes if o.status == "recorded")
    unsafe = [o for o in outcomes if o.status == "unsafe"]
    for o in unsafe if args.verbose else unsafe[:LISTED_ERRORS]:
        print(f"left out: {o.error.message if o.error else display(o.path)}", file=sys.stderr)
    shown = bad if args.verbose else bad[:LISTED_ERRORS]
    for o in shown:
        print(f"ERROR: {o.error.message if o.error else display(o.path)}", file=sys.stderr)
    if len(bad) > len(shown):
        print(f"ERROR: and {len(bad) - len(shown)} more not restored (-v lists them all)", file=sys.stderr)
    rate = received / elapsed / 2**20 if elapsed else 0.0
    if deleted:
        print(f"deleted {deleted} local {'entry' if deleted == 1 else 'entries'} the server's tree does not hold (--delete)")
    print(f"{len(outcomes) - len(bad) - there - recorded - len(unsafe) - deleted} restored and verified, {there} already "
          f"there (same size and time), " + (f"{recorded} recorded only (sockets, devices), " if recorded else "")
          + (f"{len(unsafe)} unsafe links left out, " if unsafe else "")
          + f"{len(bad)} not; received {human(received)} "
          f"in {elapsed:.2f} s ({rate:.0f} MiB/s) over {plural(streams_used, 'stream')}")
    failure = aggregate([o.error or FxError(f"{o.path}: not restored") for o in bad], len(outcomes))
    return failure.exit_code if failure else 0


def sums_line(sha: str, path: str) -> str:
    """A line sha256sum -c reads back, with its escaping for awkward names."""
    if "\\" in path or "\n" in path:
        return "\\" + sha + "  " + path.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{sha}  {path}"


def cmd_sums(args: argparse.Namespace) -> int:
    from fastxfer.client.connect import connect_control
    from fastxfer.client.listing import list_all
    from fastxfer.client.sums import sums_pages
    from fastxfer.cli.report import make_progress
    from fastxfer.protocol.snapshot import parse_at

    at = parse_at(args.at) if args.at is not None else None
    control, _ = connect_control(args.server)
    bad = 0
    try:
        listed = [e for e in list_all(control, args.path, at=at) if e.get("kind") == "file"]
        if not listed and args.path:
            raise RefusedError(f"nothing stored at {args.path!r}" + (f" in snapshot {args.at}" if at else ""))
        later: dict[str, list[str]] = {}  # a file's later names: the content is its first name's
        if at is None:
            for e in listed:
                if isinstance(e.get("hardlink"), str):
                    later.setdefault(e["hardlink"], []).append(e["path"])
            asked = [(e["path"], e["size"]) for e in listed if not e.get("hardlink")]
        else:  # a snapshot's files name their content, held in the view or as older copies
            asked = [(e["path"] + "\x00" + e["ref"], e["size"]) for e in listed if isinstance(e.get("ref"), str)]
        bar = make_progress(sum(size for _, size in asked), sys.stderr.isatty() and not args.quiet,
                            "re-hashing on the server")
        answered = answered_bytes = shown = 0
        for page, partly in sums_pages(control.call, [name for name, _ in asked]):
            answered_bytes += sum(size for _, size in asked[answered : answered + len(page)])
            answered += len(page)
            if bar is not None:  # a page at a time: the server answers once its hashing budget is spent
                bar.update(answered_bytes + partly - shown)
                shown = answered_bytes + partly
            for item in page:
                if item.get("status") == "ok":
                    for name in [item["path"], *later.get(item["path"], [])]:
                        sys.stdout.buffer.write(os.fsencode(sums_line(item["sha256"], name)) + b"\n")
                else:
                    bad += 1
                    print(f"ERROR: {item['path']!r} is {item.get('status')} on the server", file=sys.stderr)
        if bar is not None:
            bar.close()
    finally:
        control.close()
    return 5 if bad else 0
