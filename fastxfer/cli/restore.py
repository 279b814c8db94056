"""Reading the backup back: ls, get and sums."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastxfer.cli.args import BWLIMIT_HELP, pacer_for, parse_rate
from fastxfer.cli.report import add_verbosity, human, item, plural, print_failures, reopened_note, verbosity
from fastxfer.errors import FxError, LocalFileError, RefusedError, UsageError, aggregate


AT_HELP = ("the tree as a snapshot holds it: its id (`fastxfer snapshots`), 'latest', or a time "
           "('2026-12-01', '2026-12-01 18:30': the last snapshot taken by then)")
KIND_SHOWN = {"fifo": "fifo", "socket": "socket", "chardev": "char dev", "blockdev": "block dev"}


def add_ls(sub) -> None:
    ls = sub.add_parser("ls", help="list what the server holds for this client",
                        epilog="examples:\n  fastxfer ls Documents --from backup\n"
                               "  fastxfer ls Documents --from backup --json | jq -r '.entries[].path'",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    ls.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    ls.add_argument("--json", action="store_true",
                    help="one JSON document, its entries as the server lists them (docs/JSON.md)")
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
                              "  fastxfer get Documents --from backup -v      a line per entry restored, made or deleted\n"
                              "  fastxfer get Documents --from backup -q      errors only\n"
                              "  fastxfer get Documents --from backup --json | jq .restored\n"
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
    add_verbosity(g)
    g.add_argument("--json", action="store_true",
                   help="print one JSON document (counts, bytes received, failures, exit_code) instead "
                        "of the summary line; fields: docs/JSON.md")
    g.add_argument("--json-lines", action="store_true",
                   help="print a JSON object per entry as it is restored (or found there, or fails), then "
                        "the --json document as the last line")



def add_sums(sub) -> None:
    sm = sub.add_parser("sums", help="SHA256SUMS of this client's backup, for sha256sum -c",
                        epilog="examples:\n  fastxfer sums Documents --from backup > SHA256SUMS\n"
                               "  fastxfer sums Documents --from backup --json | jq -r '.files[].sha256'",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    sm.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    sm.add_argument("--at", default=None, metavar="SNAPSHOT",
                    help="the files of that snapshot (an id, 'latest' or a time such as 2026-12-01T18:00) "
                         "instead of the current view")
    sm.add_argument("-q", "--quiet", action="store_true", help="no progress bars (the listing's, the re-hashing's)")
    sm.add_argument("--json", action="store_true",
                    help="one JSON document listing each file's path and SHA-256 instead of SHA256SUMS lines")



def cmd_ls(args: argparse.Namespace) -> int:
    from fastxfer.cli import json_out
    from fastxfer.client.connect import connect_control
    from fastxfer.protocol.snapshot import parse_at
    from fastxfer.client.listing import list_all

    at = parse_at(args.at) if args.at is not None else None
    if at is not None and args.versions:
        raise UsageError("--at and --versions do not go together: a snapshot holds one copy of each file")
    control, _ = connect_control(args.server)
    try:
        entries = list_all(control, args.path, args.versions, at)
    finally:
        control.close()
    if not entries and args.path:
        raise RefusedError(f"nothing stored at {args.path!r}")
    if args.json:
        json_out.document(args, {"path": args.path, "at": args.at, "versions": args.versions, "entries": entries})
        return 0
    print_listing(entries, args.versions)
    return 0


def print_listing(entries: list[dict], versions: bool) -> None:
    """One line per listed entry (client/listing.py checked every field shown)."""
    import datetime

    from fastxfer.client.walk import display

    for e in entries:
        when_ns = e.get("replaced_ns") if versions else e.get("mtime_ns")
        when = datetime.datetime.fromtimestamp((when_ns or 0) / 1e9).strftime("%Y-%m-%d %H:%M")
        sha = e.get("sha256") or "-" * 64
        name = display(e["path"])
        if versions:
            print(f"{human(e['size'] or 0):>11}  {when}  {sha}  {name}  ({display(e['version'])})")
        elif e.get("kind") == "link":
            print(f"{'link':>11}  {when}  {'-' * 64}  {name} -> {display(e.get('target') or '')}")
        elif e.get("kind") == "dir":
            print(f"{'folder':>11}  {when}  {'-' * 64}  {name}/")
        elif e.get("kind") in KIND_SHOWN:
            print(f"{KIND_SHOWN[e['kind']]:>11}  {when}  {'-' * 64}  {name}")
        else:
            print(f"{human(e['size']):>11}  {when}  {sha}  {name}")


def cmd_get(args: argparse.Namespace) -> int:
    from fastxfer.cli import json_out
    from fastxfer.cli.report import Progress
    from fastxfer.client.connect import connect_control
    from fastxfer.client.get import Getter
    from fastxfer.client.listing import list_version
    from fastxfer.client.restore_plan import plan, restorable
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
                entries = listing(control, path, at, sys.stderr.isatty() and verbosity(args) >= 0 and not json_out.wanted(args))
            restorable(entries)
            root, planned = plan(entries, path, dest, inside)
            if not os.path.isdir(root):
                try:
                    os.mkdir(root)
                except OSError as exc:
                    raise LocalFileError(f"{root}: {exc.strerror}") from None
            streams = min(args.streams or auto_streams(len(planned), control.rtt >= LONG_PATH_RTT, args.bwlimit), 16)
            show = sys.stderr.isatty() and verbosity(args) >= 0 and not json_out.wanted(args)
            getter = Getter(control, welcome, streams, args.force, json_out.lines(args, root) or Progress(show),
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
    reopened_note(control, verbosity(args))
    return (json_out.get if json_out.wanted(args) else report_get)(args, outcomes, received,
                                                                   time.monotonic() - started, streams_used)


def copy_folders(entries: list[dict], planned: list, path: str) -> list[list[bytes]]:
    """The local folders that are the copy of PATH's folders (for --delete): every
    folder listed, and DEST itself when it is the copy of PATH."""
    folders = [parts for e, parts in planned if e.get("kind") == "dir"]
    top = path.strip("/")
    if not top or any(e.get("path") == top and e.get("kind") == "dir" for e in entries) \
            and not any(e.get("path") == top for e, _ in planned):
        folders.append([])
    return folders


KIND_MADE = {"dir": "folder", "link": "link"}


def report_get(args: argparse.Namespace, outcomes: list, received: int, elapsed: float, streams_used: int) -> int:
    """The end of a get: what was not restored (by cause), what changed (-v), one summary line, the exit code."""
    level = verbosity(args)
    bad = [o for o in outcomes if o.status not in ("restored", "unchanged", "recorded", "unsafe", "deleted")]
    unsafe = [o for o in outcomes if o.status == "unsafe"]
    if level >= 0:  # a link left out is what --safe-links asked for: exit 0, a warning
        print_failures([(o.path, o.error.message if o.error else o.path) for o in unsafe], level >= 1, "left out")
    print_failures([(o.path, o.error.message if o.error else f"{o.path}: not restored") for o in bad], level >= 1)
    for o in outcomes if level >= 1 else []:
        line = get_item(o, level)
        if line:
            print(line)
    if level >= 0:
        print_get_summary(outcomes, len(bad), len(unsafe), received, elapsed, streams_used)
    failure = aggregate([o.error or FxError(f"{o.path}: not restored") for o in bad], len(outcomes))
    return failure.exit_code if failure else 0


def get_item(o, level: int) -> str | None:
    """One restored entry's itemized line; None when -v leaves it out."""
    what = KIND_MADE.get(o.kind, o.kind) if o.kind != "file" else ""
    if o.status == "restored":
        return item(o.how or "restored", o.path, what or "verified")
    if o.status == "deleted":
        return item("deleted", o.path, "not in the server's tree (--delete)")
    if o.status in ("unchanged", "recorded") and level >= 2:
        return item(o.status, o.path, what if o.status == "unchanged" and what else
                    "already there: same size and time" if o.status == "unchanged" else f"{what}: not made")
    return None


def print_get_summary(outcomes: list, bad: int, unsafe: int, received: int, elapsed: float, streams_used: int) -> None:
    """Files restored (each verified), what was there already, what else was made: folders are not files."""
    def count(status: str, files: bool) -> int:
        return sum(1 for o in outcomes if o.status == status and (o.kind == "file") == files)

    deleted = sum(1 for o in outcomes if o.status == "deleted")
    folders = sum(1 for o in outcomes if o.status == "restored" and o.kind == "dir")
    others = count("restored", False) - folders
    recorded = sum(1 for o in outcomes if o.status == "recorded")
    if deleted:
        print(f"deleted {deleted} local {'entry' if deleted == 1 else 'entries'} the server's tree does not hold (--delete)")
    rate = received / elapsed / 2**20 if elapsed else 0.0
    made = ", ".join(x for x in (plural(folders, "folder") if folders else "",
                                 plural(others, "link") if others else "") if x)
    print(f"{plural(count('restored', True), 'file')} restored and verified, "
          f"{sum(1 for o in outcomes if o.status == 'unchanged' and o.kind != 'dir')} already there "
          f"(same size and time), "
          + (f"{made} made, " if made else "")
          + (f"{recorded} recorded only (sockets, devices), " if recorded else "")
          + (f"{unsafe} unsafe links left out, " if unsafe else "")
          + f"{bad} not; received {human(received)} "
          f"in {elapsed:.2f} s ({rate:.0f} MiB/s) over {plural(streams_used, 'stream')}")


def sums_line(sha: str, path: str) -> str:
    """A line sha256sum -c reads back, with its escaping for awkward names."""
    if "\\" in path or "\n" in path:
        return "\\" + sha + "  " + path.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{sha}  {path}"


def listing(control, path: str, at, show: bool) -> list[dict]:
    """list_all with a counter on standard error: a whole backup's listing takes a while."""
    from fastxfer.cli.report import make_progress
    from fastxfer.client.listing import list_all

    bar = make_progress(0, show, "listing", unit="entries", always=True)
    try:
        return list_all(control, path, at=at, listed=bar.update if bar is not None else lambda _n: None)
    finally:
        if bar is not None:
            bar.close()


def cmd_sums(args: argparse.Namespace) -> int:
    from fastxfer.client.connect import connect_control
    from fastxfer.client.sums import sums_pages
    from fastxfer.cli import json_out
    from fastxfer.cli.report import make_progress
    from fastxfer.protocol.snapshot import parse_at

    at = parse_at(args.at) if args.at is not None else None
    show = sys.stderr.isatty() and not args.quiet and not args.json
    control, _ = connect_control(args.server)
    bad = 0
    collected: tuple[list, list] | None = ([], []) if args.json else None  # (files, problems) for --json
    try:
        listed = [e for e in listing(control, args.path, at, show) if e.get("kind") == "file"]
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
        bar = make_progress(sum(size for _, size in asked), sys.stderr.isatty() and not args.quiet and not args.json,
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
                        if collected is not None:
                            collected[0].append({"path": name, "sha256": item["sha256"]})
                        else:
                            sys.stdout.buffer.write(os.fsencode(sums_line(item["sha256"], name)) + b"\n")
                else:
                    bad += 1
                    if collected is not None:
                        collected[1].append({"path": item["path"], "status": item.get("status")})
                    print(f"ERROR: {item['path']!r} is {item.get('status')} on the server", file=sys.stderr)
        if bar is not None:
            bar.close()
    finally:
        control.close()
    if collected is not None:
        return json_out.sums(args, *collected)
    return 5 if bad else 0
