"""``fastxfer send``: walk, connect, send, report."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastxfer.cli.args import BWLIMIT_HELP, EPILOG, parse_rate, parse_size, pacer_for
from fastxfer.cli.send_input import check_input
from fastxfer.cli.report import add_verbosity, human, item, plural, print_failures, reopened_note, verbosity
from fastxfer.errors import FxError, LocalFileError, UsageError, aggregate


ATTEMPTS = 3  # reads of a file that keeps changing while it is read, before it is reported
OUTPUT_EXAMPLES = """examples:
  fastxfer send ~/Documents --to backup          a summary line, a progress bar on a terminal
  fastxfer send ~/Documents --to backup -v       and a line per entry that changed:
      new       Documents/todo.txt  (1.20 KiB)
      changed   Documents/report.pdf  (2.31 MiB)
  fastxfer send ~/Documents --to backup -n -v    what would change, counted as the real run counts
  fastxfer send ~/Documents --to backup -q       errors only (cron, systemd timers)
  fastxfer send ~/Documents --to backup --json | jq .bytes_sent
  fastxfer send ~/Documents --to backup --json-lines    one line per file, then the summary
  fastxfer send big.iso --to backup --bwlimit 8M       at most 8 MiB/s over all streams
  fastxfer send ~/Photos --to backup --bwlimit 500K    at most 500 KiB/s

codes (-v): new, changed, touched (same content, new time or mode), repaired (--checksum: the
server's copy no longer matched its record), linked (a copy the server holds: not sent);
-vv also lists unchanged entries. The paths are those `fastxfer get` takes.

"""
KIND_SHOWN = {"dir": "folder", "link": "link", "fifo": "FIFO", "socket": "socket",
              "chardev": "character device", "blockdev": "block device"}


def add_send(sub) -> None:
    from fastxfer.cli.send_input import FILTER_EPILOG, add_filter_options

    s = sub.add_parser("send", help="send files to a server", epilog=OUTPUT_EXAMPLES + FILTER_EPILOG + "\n\n" + EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("files", nargs="+", metavar="PATH",
                   help="files and folders; DIR sends DIR/..., DIR/ sends what is inside DIR; "
                        "'-' sends standard input (with --name)")
    s.add_argument("--to", required=True, metavar="HOST[:PORT]", help="the server (pinned with `fastxfer pin`)")
    s.add_argument("--streams", type=int, default=None, help="parallel connections (default: automatic)")
    s.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE",
                   help="chunk size, e.g. 4M (default: automatic)")
    s.add_argument("--bwlimit", type=parse_rate, default=0, metavar="RATE", help=BWLIMIT_HELP)
    s.add_argument("--dest", default=None, metavar="DIR", help="folder on the server, below this client's folder")
    s.add_argument("--sha256", action="store_true",
                   help="also print each file's plain SHA-256, as sha256sum shows it")
    s.add_argument("--follow-links", action="store_true", help="send what symlinks point to, not the links")
    s.add_argument("-n", "--dry-run", action="store_true", help="show what would be sent; send nothing")
    s.add_argument("-c", "--checksum", action="store_true",
                   help="decide what changed by SHA-256 of the content, not by size and time")
    s.add_argument("--receipts", default=None, metavar="FILE",
                   help="append the server's signed receipts for the stored files to FILE")
    s.add_argument("--allow-changing", action="store_true",
                   help=f"a file still changing after {ATTEMPTS} reads (a log, a live database) is stored "
                        f"as last read and reported as changed while read, instead of failing")
    add_verbosity(s)
    s.add_argument("--json", action="store_true",
                   help="print one JSON document (counts, bytes sent, resumed_bytes, snapshot, failures, "
                        "exit_code) instead of the summary lines; fields: docs/JSON.md")
    s.add_argument("--json-lines", action="store_true",
                   help="print a JSON object per entry as it is stored (or found unchanged, or fails), "
                        "then the --json document as the last line")
    add_filter_options(s)



def report_dry_run(results: list, skipped: list, level: int) -> int:
    """What a real run would do, counted as a real run counts (files), listed as it lists them."""
    files = [r for r in results if r.src.kind == "file"]
    send = [r for r in files if r.status == "send"]
    report_results(results, level)
    if level >= 0:
        total = sum(r.src.size for r in send)
        unchanged = sum(1 for r in files if r.status == "unchanged")
        failed = sum(1 for r in results if r.status == "failed")
        print(f"dry run: {plural(len(send), 'file')} would be stored ({human(total)}), {unchanged} unchanged, "
              f"{failed} failed, {len(skipped)} skipped; nothing was sent")
    return 0 if not skipped and all(r.status != "failed" for r in results) else 9


def fetch_receipts(control, paths: list[str], target: str, snap: int = 0) -> None:
    import base64
    from pathlib import Path

    from fastxfer.errors import ProtocolError
    from fastxfer.protocol import messages
    from fastxfer.trust import identity
    from fastxfer.trust import receipts

    for start in range(0, len(paths), 2000):
        asked = paths[start : start + 2000]
        message = {"t": "receipts", "paths": asked, **({"snap": snap} if snap else {})}
        reply = control.call(message, "receipts_ok")
        try:
            cert = base64.b64decode(messages.get_str(reply, "cert", 16384), validate=True)
        except ValueError:
            raise ProtocolError("the server's receipts come with a malformed certificate") from None
        if identity.fingerprint_of(cert) != control.server_fp:
            raise FxError("the server signed receipts with another identity than the one it presented")
        signed = messages.get_list(reply, "receipts", len(asked)) if reply.get("receipts") is not None else []
        receipts.write(Path(target), cert, [messages.get_obj(r) for r in signed if r])


class Background:
    """One call run in a thread; result() returns its value or raises its exception here."""

    def __init__(self, fn) -> None:
        import threading

        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _connect_for_send(address: str):
    from fastxfer.client import send as _loaded_here  # noqa: F401 - its imports load while the walk runs
    from fastxfer.client.connect import connect_control

    return connect_control(address)


def check_args(args: argparse.Namespace) -> None:
    """Usage errors before any walk."""
    from fastxfer.trust.pins import parse_address

    if args.streams is not None and not 1 <= args.streams <= 64:
        raise UsageError("--streams must be between 1 and 64")
    if args.dest is not None:
        from fastxfer.protocol.paths import split
        from fastxfer.errors import RefusedError

        try:
            split(args.dest.strip("/"))
        except RefusedError as exc:
            raise UsageError(f"--dest: {exc.message}") from None
    parse_address(args.to)
    check_input(args)


def cmd_send(args: argparse.Namespace) -> int:
    # Only what the walk needs is imported here; the session's modules (TLS,
    # cryptography: most of the start-up) load in the connecting thread while
    # the walk runs.
    from fastxfer.cli.send_input import gathered

    check_args(args)
    started = time.monotonic()
    # The handshake waits on the network while the walk waits on the disk:
    # they overlap. A walk that fails ends the command; the process's exit
    # closes a session that was still being opened.
    connecting = Background(lambda: _connect_for_send(args.to))
    with gathered(args) as walked:  # a spool of standard input is removed on leaving, however it is left
        return send_walked(args, started, connecting, walked)


def send_walked(args: argparse.Namespace, started: float, connecting: Background, walked) -> int:
    from fastxfer.cli import json_out
    from fastxfer.cli.send_input import deleted_note, filtered_line, print_notes
    from fastxfer.client.walk import display

    sources, skipped = walked.entries, walked.skipped
    print_notes(walked, args.quiet)
    if skipped and not sources:  # nothing to send at all: most likely a mistyped path
        for s in skipped:
            print(f"ERROR: {display(s.local)}: {s.reason}", file=sys.stderr)
        json_out.failed(args, LocalFileError.exit_code, "nothing to send: every path was skipped",
                        skipped_paths=[{"path": s.local, "reason": s.reason} for s in skipped])
        return LocalFileError.exit_code
    level = verbosity(args)
    for s in skipped:  # printed even with -q: a skipped entry makes the exit code 9
        print(f"WARNING: {display(s.local)}: {s.reason}", file=sys.stderr)
    control, welcome = connecting.result()
    from fastxfer.client.connect import KEEP_ALIVE

    if time.monotonic() - started > KEEP_ALIVE:
        # A long walk left the session idle, perhaps past the server's limit:
        # a ping finds out, and opens it again if it is gone.
        control.call({"t": "ping"}, "pong")
        welcome = control.welcome or welcome
    snap = None
    try:
        snapshot = None if args.dry_run else SnapshotOfSend(control, args, sources, level)
        sender, results = run_sender(args, control, welcome, sources, snapshot.id if snapshot else 0)
        if snapshot:
            snap = snapshot.finish(results, skipped)
        if args.receipts and not args.dry_run:  # after the snapshot: each receipt names it
            fetch_receipts(control, [r.src.remote for r in results if r.src.kind == "file"
                                     and r.status in ("stored", "unchanged")], args.receipts, snap.id if snap else 0)
    finally:
        control.close()
    reopened_note(control, level)
    elapsed = time.monotonic() - started
    filtered = filtered_line(walked)
    if args.dry_run and not json_out.wanted(args):
        code = report_dry_run(results, skipped, level)
        if filtered and level >= 0:
            print(filtered)
        return code
    code = exit_code(results, skipped)
    for r in results if level >= 0 else []:
        if r.changed:
            print(f"WARNING: {display(r.src.local)}: changed while it was read, stored as last read "
                  f"(--allow-changing): the copy may mix old and new bytes", file=sys.stderr)
    if json_out.wanted(args):
        return json_out.send(args, results, skipped, sender, elapsed, snap, welcome.name, code, walked.excluded)
    report_results(results, level)
    print_sha256(results, args.sha256)
    if level >= 0:
        print_summary(results, skipped, sender, elapsed)
        if filtered:
            print(filtered)
        print_snapshot(snap, welcome.name, results)
        if note := deleted_note(walked, snap):
            print(note, file=sys.stderr)
    return code


class SnapshotOfSend:
    """The send's snapshot: opened before the first file is stored, ended after
    the last; with a warning and no snapshot when the session cannot."""

    def __init__(self, control, args: argparse.Namespace, sources: list, level: int = 0) -> None:
        from fastxfer.client import snapshot
        from fastxfer.cli.send_input import tops_of

        self.control, self.names, self.begun, self.level = control, snapshot.Names(), None, level
        try:
            self.begun = snapshot.begin(control.call, tops_of(args), sources, self.names)
        except FxError as exc:
            if level >= 0:
                print(f"WARNING: no snapshot will be recorded: {exc.message}", file=sys.stderr)

    @property
    def id(self) -> int:
        return self.begun.id if self.begun else 0

    def finish(self, results: list, skipped: list):
        from fastxfer.client import snapshot

        if self.begun is None:
            return None
        try:
            return snapshot.finish(self.control.call, self.begun, results, bool(skipped), self.names)
        except FxError as exc:
            if self.level >= 0:
                print(f"WARNING: no snapshot was recorded: {exc.message}", file=sys.stderr)
            return None


def print_snapshot(snap, name: str, results: list) -> None:
    from fastxfer.client.walk import display

    if snap is None:
        return
    for path, was, now in snap.moved:
        print(f"WARNING: {display(path)} was last sent from {display(was)}, now from {display(now)}; "
              f"both are kept as snapshots of one path: to keep them apart, send with --dest", file=sys.stderr)
    changed = sum(1 for r in results if r.status == "stored" and r.src.kind == "file")
    partial = " (partial: not everything walked was stored)" if snap.state == "partial" else ""
    print(f"snapshot {snap.id} of {name}: {plural(snap.files, 'file')}, {human(snap.bytes)}, "
          f"{changed} changed, {snap.removed} deleted{partial}")


class Rounds:
    """The senders of one send, counted as one: the first round sends everything,
    later ones only the files that changed while they were read."""

    def __init__(self) -> None:
        self.senders: list = []

    def __getattr__(self, name: str) -> int:
        if name.startswith("_") or name == "senders":
            raise AttributeError(name)
        values = [getattr(s, name) for s in self.senders]
        return max(values, default=0) if name == "streams_opened" else sum(values)


def run_sender(args: argparse.Namespace, control, welcome, sources: list, snap: int = 0):
    """Send, and send again what changed while it was read (ATTEMPTS in all)."""
    from fastxfer.cli import json_out
    from fastxfer.cli.report import Progress
    from fastxfer.client.send import Sender
    from fastxfer.errors import ChangedError

    show = sys.stderr.isatty() and verbosity(args) >= 0 and not json_out.wanted(args)
    lines = json_out.lines(args)
    rounds = Rounds()
    results: list = []
    pacer = pacer_for(args.bwlimit)  # one limit over every round
    for attempt in range(1 if args.dry_run else ATTEMPTS):
        last = attempt == ATTEMPTS - 1
        sender = Sender(control, welcome, args.streams, args.chunk_size, args.sha256, lines or Progress(show),
                        checksum=args.checksum, dry_run=args.dry_run, allow_changing=args.allow_changing and last,
                        snap=snap, pacer=pacer)
        rounds.senders.append(sender)
        results += sender.run(sources)
        again = [r for r in results if r.status == "failed" and isinstance(r.error, ChangedError)]
        if not again or last:
            break
        results = [r for r in results if not any(r is a for a in again)]
        time.sleep(0.2 * (attempt + 1))  # let a burst of writes end
        sources = [a.src for a in again if refresh(a.src)]
        results += [a for a in again if not any(a.src is s for s in sources)]
    if lines:
        lines.flush(results)
    return rounds, results


def refresh(src) -> bool:
    """A file read again after it changed: its size and time as they are now,
    or False when it is no longer a regular file (its failure stands)."""
    import stat

    try:
        st = os.stat(src.local) if src.follow else os.lstat(src.local)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    src.size, src.mtime_ns = st.st_size, st.st_mtime_ns
    return True


def report_results(results: list, level: int) -> None:
    """Failures by cause (always), then with -v a line per entry that changed, with -vv every entry."""
    from fastxfer.client.walk import display

    print_failures([(display(r.src.local), r.error.message) for r in results
                    if r.status == "failed" and r.error is not None], level >= 1)
    for r in results if level >= 1 else []:
        line = item_line(r, display(r.src.remote), level)
        if line:
            print(line)


def item_line(r, path: str, level: int) -> str | None:
    """One entry's itemized line (cli/report.py item), or None when -v leaves it out."""
    from fastxfer.client.walk import display

    kind = r.src.kind
    what = "" if kind == "file" else KIND_SHOWN.get(kind, kind)
    if r.status == "send":  # a dry run: files compared by size and time; folders and links are not asked about
        if kind == "file":
            return item(r.how or "changed", path, f"{human(r.src.size)}, would be stored")
        return item(what, path, "not compared in a dry run") if level >= 2 else None
    if r.status == "recorded":
        note = f"hard link to {display(r.src.hardlink)}" if r.src.hardlink else what
        return item("recorded", path, f"{note}, in the snapshot only") if level >= 2 else None
    if r.status == "stored":
        note = {"touched": "the same content, a new time or mode",
                "repaired": "the server's copy no longer matched its record: sent again",
                "linked": "a copy of content the server holds: not sent"}.get(r.how, "")
        size = human(r.src.size) if kind == "file" else what
        return item(r.how or "stored", path, ", ".join(x for x in (size, note) if x))
    if r.status == "unchanged" and level >= 2:
        return item("unchanged", path, "stored meanwhile by another send of it: the server holds this very content"
                    if r.by_other else what)
    return None


def print_sha256(results: list, asked: bool) -> None:
    """send --sha256: each file's plain SHA-256, as sha256sum prints it (asked for, so shown even with -q)."""
    from fastxfer.client.walk import display

    for r in results if asked else []:
        if r.sha256:
            print(f"{r.sha256.hex()}  {display(r.src.shown or r.src.local)}")


def print_summary(results: list, skipped: list, sender, elapsed: float) -> None:
    files = [r for r in results if r.src.kind == "file"]
    stored = sum(1 for r in files if r.status == "stored")
    unchanged = sum(1 for r in files if r.status == "unchanged")
    failed = sum(1 for r in results if r.status == "failed")
    rate = sender.bytes_sent / elapsed / 2**20 if elapsed else 0.0
    print(f"{plural(stored, 'file')} stored and verified, {unchanged} unchanged, {failed} failed, "
          f"{len(skipped)} skipped; sent {human(sender.bytes_sent)} in {elapsed:.2f} s "
          f"({rate:.0f} MiB/s) over {plural(sender.streams_opened, 'stream')}"
          + (f"; resumed: {human(sender.bytes_resumed)} were already on the server" if sender.bytes_resumed else "")
          + (f"; {human(sender.bytes_linked)} linked to copies already on the server, not sent"
             if sender.bytes_linked else ""))


def exit_code(results: list, skipped: list) -> int:
    failures = [r.error or FxError("not sent") for r in results if r.status == "failed"]
    failures += [LocalFileError(f"{s}: skipped") for s in skipped]
    failure = aggregate(failures, len(results) + len(skipped))
    return failure.exit_code if failure else 0
