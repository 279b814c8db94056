"""``fastxfer send``: walk, connect, send, report."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastxfer.cli.args import BWLIMIT_HELP, EPILOG, parse_rate, parse_size, pacer_for
from fastxfer.cli.report import human, plural, reopened_note
from fastxfer.errors import FxError, LocalFileError, UsageError, aggregate


ATTEMPTS = 3  # reads of a file that keeps changing while it is read, before it is reported
SEND_EXAMPLES = """examples:
  fastxfer send ~/Documents --to backup-host
  fastxfer send big.iso --to backup-host --bwlimit 8M     at most 8 MiB/s over all streams
  fastxfer send ~/Photos --to backup-host --bwlimit 500K  at most 500 KiB/s

"""
KIND_SHOWN = {"dir": "folder", "link": "link", "fifo": "FIFO", "socket": "socket",
              "chardev": "character device", "blockdev": "block device"}


def add_send(sub) -> None:
    s = sub.add_parser("send", help="send files to a server", epilog=SEND_EXAMPLES + EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("files", nargs="+", metavar="PATH",
                   help="files and folders; DIR sends DIR/..., DIR/ sends what is inside DIR")
    s.add_argument("--to", required=True, metavar="HOST[:PORT]", help="the server (pinned with `fastxfer pin`)")
    s.add_argument("--streams", type=int, default=None, help="parallel connections (default: automatic)")
    s.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE",
                   help="chunk size, e.g. 4M (default: automatic)")
    s.add_argument("--bwlimit", type=parse_rate, default=0, metavar="RATE", help=BWLIMIT_HELP)
    s.add_argument("--dest", default=None, metavar="DIR", help="folder on the server, below this client's folder")
    s.add_argument("--sha256", action="store_true",
                   help="also print each file's plain SHA-256, as sha256sum shows it")
    s.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="skip names matching PATTERN (with a '/', paths from the top); repeatable")
    s.add_argument("--follow-links", action="store_true", help="send what symlinks point to, not the links")
    s.add_argument("-n", "--dry-run", action="store_true", help="show what would be sent; send nothing")
    s.add_argument("-c", "--checksum", action="store_true",
                   help="decide what changed by SHA-256 of the content, not by size and time")
    s.add_argument("--receipts", default=None, metavar="FILE",
                   help="append the server's signed receipts for the stored files to FILE")
    s.add_argument("--allow-changing", action="store_true",
                   help=f"a file still changing after {ATTEMPTS} reads (a log, a live database) is stored "
                        f"as last read and reported as changed while read, instead of failing")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the result")
    s.add_argument("-v", "--verbose", action="store_true", help="list every entry, however many")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object (snapshot, counts, bytes) instead of the summary lines")



def report_dry_run(results: list, skipped: list, name: str) -> int:
    from fastxfer.client.walk import display

    send = [r for r in results if r.status == "send"]
    for r in results:
        if r.status == "failed":
            print(f"ERROR: {r.error.message}", file=sys.stderr)
        elif r.status == "send":
            print(f"would send {name}/{display(r.src.remote)}"
                  + (f" ({human(r.src.size)})" if r.src.kind == "file" else f" ({r.src.kind})"))
    unchanged = sum(1 for r in results if r.status == "unchanged")
    total = sum(r.src.size for r in send if r.src.kind == "file")
    print(f"dry run: {len(send)} entries would be sent ({human(total)}), {unchanged} unchanged, "
          f"{len(skipped)} skipped; nothing was sent")
    return 0 if not skipped and all(r.status != "failed" for r in results) else 9


def fetch_receipts(control, paths: list[str], target: str, snap: int = 0) -> None:
    import base64
    from pathlib import Path

    from fastxfer.trust import identity
    from fastxfer.trust import receipts

    for start in range(0, len(paths), 2000):
        message = {"t": "receipts", "paths": paths[start : start + 2000], **({"snap": snap} if snap else {})}
        reply = control.call(message, "receipts_ok")
        cert = base64.b64decode(reply.get("cert") or "")
        if identity.fingerprint_of(cert) != control.server_fp:
            raise FxError("the server signed receipts with another identity than the one it presented")
        receipts.write(Path(target), cert, [r for r in reply.get("receipts") or [] if r])


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


def cmd_send(args: argparse.Namespace) -> int:
    # Only what the walk needs is imported here; the session's modules (TLS,
    # cryptography: most of the start-up) load in the connecting thread while
    # the walk runs.
    from fastxfer.client.walk import display, walk

    check_args(args)
    started = time.monotonic()
    # The handshake waits on the network while the walk waits on the disk:
    # they overlap. A walk that fails ends the command; the process's exit
    # closes a session that was still being opened.
    connecting = Background(lambda: _connect_for_send(args.to))
    sources, skipped = walk(args.files, args.dest, args.exclude, args.follow_links)
    if skipped and not sources:  # nothing to send at all: most likely a mistyped path
        for s in skipped:
            print(f"ERROR: {display(s.local)}: {s.reason}", file=sys.stderr)
        return LocalFileError.exit_code
    for s in skipped:
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
        snapshot = None if args.dry_run else SnapshotOfSend(control, args, sources)
        sender, results = run_sender(args, control, welcome, sources, snapshot.id if snapshot else 0)
        if snapshot:
            snap = snapshot.finish(results, skipped)
        if args.receipts and not args.dry_run:  # after the snapshot: each receipt names it
            fetch_receipts(control, [r.src.remote for r in results if r.src.kind == "file"
                                     and r.status in ("stored", "unchanged")], args.receipts, snap.id if snap else 0)
    finally:
        control.close()
    reopened_note(control)
    elapsed = time.monotonic() - started
    if args.dry_run:
        return report_dry_run(results, skipped, welcome.name)
    code = exit_code(results, skipped)
    for r in results:
        if r.changed:
            print(f"WARNING: {display(r.src.local)}: changed while it was read, stored as last read "
                  f"(--allow-changing): the copy may mix old and new bytes", file=sys.stderr)
    if args.json:
        print_json(results, skipped, sender, elapsed, snap, code)
        return code
    report_results(results, welcome.name, args.verbose)
    print_summary(results, skipped, sender, elapsed)
    print_snapshot(snap, welcome.name, results)
    return code


class SnapshotOfSend:
    """The send's snapshot: opened before the first file is stored, ended after
    the last; with a warning and no snapshot when the session cannot."""

    def __init__(self, control, args: argparse.Namespace, sources: list) -> None:
        from fastxfer.client import snapshot
        from fastxfer.client.walk import tops

        self.control, self.names, self.begun = control, snapshot.Names(), None
        try:
            self.begun = snapshot.begin(control.call, tops(args.files, args.dest), sources, self.names)
        except FxError as exc:
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
            print(f"WARNING: no snapshot was recorded: {exc.message}", file=sys.stderr)
            return None


def print_snapshot(snap, name: str, results: list) -> None:
    from fastxfer.client.walk import display

    if snap is None:
        return
    for path, was, now in snap.moved:
        print(f"WARNING: {name}/{display(path)} was last sent from {display(was)}, now from {display(now)}; "
              f"both are kept as snapshots of one path: to keep them apart, send with --dest", file=sys.stderr)
    changed = sum(1 for r in results if r.status == "stored" and r.src.kind == "file")
    partial = " (partial: not everything walked was stored)" if snap.state == "partial" else ""
    print(f"snapshot {snap.id} of {name}: {plural(snap.files, 'file')}, {human(snap.bytes)}, "
          f"{changed} changed, {snap.removed} deleted{partial}")


def print_json(results: list, skipped: list, sender, elapsed: float, snap, code: int) -> None:
    import json

    files = [r for r in results if r.src.kind == "file"]
    print(json.dumps({
        "snapshot": snap.id if snap else None,
        "snapshot_state": snap.state if snap else None,
        "files": len(files),
        "stored": sum(1 for r in files if r.status == "stored"),
        "unchanged": sum(1 for r in files if r.status == "unchanged"),
        "failed": sum(1 for r in results if r.status == "failed"),
        "recorded": sum(1 for r in results if r.status == "recorded"),
        "skipped": len(skipped),
        "deleted": snap.removed if snap else 0,
        "bytes": sum(r.src.size for r in files if r.status in ("stored", "unchanged")),
        "bytes_sent": sender.bytes_sent,
        "resumed_bytes": sender.bytes_resumed,
        "linked_bytes": sender.bytes_linked,
        "changed_while_read": [r.src.remote for r in results if r.changed],
        "streams": sender.streams_opened,
        "seconds": round(elapsed, 3),
        "exit_code": code,
        "errors": [r.error.message for r in results if r.status == "failed" and r.error],
    }))


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
    from fastxfer.cli.report import Progress
    from fastxfer.client.send import Sender
    from fastxfer.errors import ChangedError

    show = sys.stderr.isatty() and not args.quiet
    rounds = Rounds()
    results: list = []
    pacer = pacer_for(args.bwlimit)  # one limit over every round
    for attempt in range(1 if args.dry_run else ATTEMPTS):
        last = attempt == ATTEMPTS - 1
        sender = Sender(control, welcome, args.streams, args.chunk_size, args.sha256, Progress(show),
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


def report_results(results: list, name: str, verbose: bool) -> None:
    from fastxfer.client.walk import display

    # One line per cause: a session that ended takes every file not yet sent with it.
    causes: dict[str, int] = {}
    for r in results:
        if r.status == "failed":
            assert r.error is not None
            causes[r.error.message] = causes.get(r.error.message, 0) + 1
    for message, count in causes.items():
        print(f"ERROR: {message}" + (f" ({count} files)" if count > 1 else ""), file=sys.stderr)
    if not (verbose or len(results) <= 100):
        return
    for r in results:
        if r.status == "failed":
            continue
        what = "" if r.src.kind == "file" else f" ({KIND_SHOWN.get(r.src.kind, r.src.kind)})"
        if r.src.hardlink:
            what = f" (hard link to {display(r.src.hardlink)})"
        if r.status == "recorded":
            print(f"recorded {name}/{display(r.src.remote)}{what}, in the snapshot only")
        elif r.status == "stored":
            size = f" ({human(r.src.size)}, verified)" if r.src.kind == "file" else what
            print(f"stored {name}/{display(r.src.remote)}{size}")
        elif r.by_other:
            print(f"unchanged {name}/{display(r.src.remote)} (stored meanwhile by another send of it; "
                  f"the server holds this very content)")
        else:
            print(f"unchanged {name}/{display(r.src.remote)}{what or ' (same size and time as stored)'}")
        if r.sha256:
            print(f"{r.sha256.hex()}  {display(r.src.local)}")


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
