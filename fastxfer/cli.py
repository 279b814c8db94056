"""Command line: the only place that prints to the user and exits.

Exit codes: 0 done and verified; 1 unexpected failure; 2 usage; 3 trust
(server not pinned or not matching, client not authorized); 4 connection;
5 verification; 6 refused by the server (path, space, limits); 7 a local
file unreadable or changed while sent; 8 protocol violation by the peer;
9 some files not stored (when several files failed for different causes,
or some were stored); 10 server busy or shutting down, try again.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from .errors import FxError, LocalFileError, RefusedError, UsageError

EPILOG = """exit codes: 0 verified, 2 usage, 3 trust, 4 connection, 5 verification,
6 refused by server, 7 local file, 8 protocol, 9 partial, 10 server busy, 1 unexpected."""


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4M, 512K, 1G)")
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastxfer",
        description="Back files up to a fastxfer server over parallel encrypted "
        "streams, verified by SHA-256.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    sub.add_parser("id", help="print this identity's fingerprint (creates it on first use)")

    s = sub.add_parser("serve", help="run a backup server")
    s.add_argument("--root", default="./fastxfer-backup", help="folder the backups go to (default: %(default)s)")
    s.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on (default: %(default)s)")
    s.add_argument("--port", type=int, default=4455, help="port (default: %(default)s; 0 picks a free one)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    s.add_argument("--keep-versions", type=int, default=10, metavar="N",
                   help="older copies kept per file when a changed file replaces it (default: %(default)s, at least 1)")
    s.add_argument("--max-staging", type=parse_size, default=1 << 40, metavar="SIZE",
                   help="bytes of unfinished transfers allowed per client (default: 1T)")

    s = sub.add_parser("send", help="send files to a server", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("files", nargs="+", metavar="PATH",
                   help="files and folders; DIR sends DIR/..., DIR/ sends what is inside DIR")
    s.add_argument("--to", required=True, metavar="HOST[:PORT]", help="the server (pinned with `fastxfer pin`)")
    s.add_argument("--streams", type=int, default=None, help="parallel connections (default: automatic)")
    s.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE",
                   help="chunk size, e.g. 4M (default: automatic)")
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
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the result")
    s.add_argument("-v", "--verbose", action="store_true", help="list every entry, however many")

    t = sub.add_parser("trust", help="server side: which clients may send")
    tsub = t.add_subparsers(dest="trust_cmd", metavar="ACTION", required=True)
    ta = tsub.add_parser("add", help="authorize a client fingerprint under a name (its folder)")
    ta.add_argument("fingerprint")
    ta.add_argument("--name", required=True)
    tsub.add_parser("list", help="list authorized clients")
    tr = tsub.add_parser("remove", help="remove a client by fingerprint or name")
    tr.add_argument("who", metavar="FP|NAME")

    ls = sub.add_parser("ls", help="list what the server holds for this client")
    ls.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    ls.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    ls.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    ls.add_argument("--versions", action="store_true", help="list the older copies kept instead")

    g = sub.add_parser("get", help="restore files and folders from the server")
    g.add_argument("paths", nargs="+", metavar="PATH", help="as `fastxfer ls` shows them")
    g.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    g.add_argument("-o", "--output", default=".", metavar="DEST",
                   help="an existing folder receives PATH inside it; otherwise DEST is the new name (default: .)")
    g.add_argument("--streams", type=int, default=None, help="parallel connections (default: automatic)")
    g.add_argument("--force", action="store_true", help="replace local files that exist")
    g.add_argument("--version", default=None, metavar="VERSION",
                   help="an older copy of one file, as `fastxfer ls --versions PATH` names it")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the result")
    g.add_argument("-v", "--verbose", action="store_true",
                   help=f"list every entry not restored (default: the first {LISTED_ERRORS})")

    sm = sub.add_parser("sums", help="SHA256SUMS of this client's backup, for sha256sum -c")
    sm.add_argument("path", nargs="?", default="", metavar="PATH", help="a file or folder (default: everything)")
    sm.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                    help="the server, as pinned (`fastxfer pins`); port 4455 if not given")

    ck = sub.add_parser("check", help="server side: re-hash stored files, report any that changed on disk")
    ck.add_argument("--root", required=True, help="the server's root folder")
    ck.add_argument("--client", default=None, metavar="NAME", help="only this client's files")

    rc = sub.add_parser("receipt", help="check signed receipts offline")
    rsub = rc.add_subparsers(dest="receipt_cmd", metavar="ACTION", required=True)
    rv = rsub.add_parser("verify", help="check every receipt in FILE against the pinned servers")
    rv.add_argument("file")

    pn = sub.add_parser("pin", help="client side: trust a server fingerprint at HOST[:PORT]")
    pn.add_argument("address", metavar="HOST[:PORT]")
    pn.add_argument("fingerprint")
    sub.add_parser("pins", help="list pinned servers")
    up = sub.add_parser("unpin", help="forget the pin for HOST[:PORT]")
    up.add_argument("address", metavar="HOST[:PORT]")
    return p


def cmd_id(_args: argparse.Namespace) -> int:
    from .identity import format_fp, load_or_create

    print(format_fp(load_or_create().fingerprint))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from .identity import format_fp, home, parse_fp
    from .trust import ClientList

    clients = ClientList(home())
    if args.trust_cmd == "add":
        fp = parse_fp(args.fingerprint)
        others = [k for k, v in clients.all().items() if v == args.name and k != fp.hex()]
        clients.add(fp, args.name)
        print(f"authorized {format_fp(fp)} as {args.name}")
        if others:
            # The lost-laptop case: a new identity takes over an old folder.
            print(f"note: {len(others)} other identity(ies) also write to {args.name}'s folder; "
                  f"`fastxfer trust remove FP` revokes one")
    elif args.trust_cmd == "list":
        for fp, name in sorted(clients.all().items(), key=lambda kv: kv[1]):
            print(f"{name}\t{format_fp(bytes.fromhex(fp))}")
    else:
        try:
            fp, name = parse_fp(args.who), None
        except UsageError:
            fp, name = None, args.who
        if not clients.remove(fp, name):
            raise UsageError(f"no authorized client matches {args.who!r}")
        print(f"removed {args.who}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    from .identity import format_fp, home, parse_fp
    from .trust import PinList, address_key, parse_address

    pins = PinList(home())
    if args.cmd == "pins":
        for addr, fp in sorted(pins.all().items()):
            print(f"{addr}\t{format_fp(bytes.fromhex(fp))}")
        return 0
    host, port = parse_address(args.address)
    if args.cmd == "pin":
        fp = parse_fp(args.fingerprint)
        pins.add(host, port, fp)
        print(f"pinned {address_key(host, port)} to {format_fp(fp)}")
    elif not pins.remove(host, port):
        raise UsageError(f"no pin for {address_key(host, port)}")
    else:
        print(f"unpinned {address_key(host, port)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import sqlite3

    from .identity import format_fp, home, load_or_create
    from .master import Master, bind, setup_logging
    from .store import Policy, Store
    from .worker import WorkerConfig

    setup_logging()
    if args.workers is not None and not 1 <= args.workers <= 256:
        raise UsageError("--workers must be between 1 and 256")
    workers = args.workers
    if workers is None:
        import psutil

        workers = psutil.cpu_count(logical=True) or 1
    if args.keep_versions < 1:
        raise UsageError("--keep-versions must be at least 1: a replaced file is never destroyed outright")
    policy = Policy(keep_versions=args.keep_versions, max_staging_bytes=args.max_staging)
    ident = load_or_create()
    try:
        store = Store(args.root, policy)  # fails early, in the master, on an unusable root
        store.init_manifest()
        cleaned = store.clean_staging(time.time())
    except (OSError, sqlite3.Error) as exc:
        raise FxError(f"cannot use {args.root} as the root: {getattr(exc, 'strerror', None) or exc}") from None
    listener = bind(args.bind, args.port)
    host, port = listener.getsockname()[:2]
    print(f"fastxfer server fingerprint: {format_fp(ident.fingerprint)}", flush=True)
    print(f"root {os.path.abspath(args.root)}, {workers} workers"
          + (f", {cleaned} abandoned staging files removed" if cleaned else ""), flush=True)
    print(f"listening on {host}:{port}", flush=True)
    config = WorkerConfig(os.path.abspath(args.root), str(home()), os.urandom(32), policy)
    Master(listener, workers, config).run()
    return 0


def report_dry_run(results: list, skipped: list, name: str) -> int:
    from .client import human
    from .tree import display

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


def fetch_receipts(control, paths: list[str], target: str) -> None:
    import base64
    from pathlib import Path

    from . import identity, receipts

    for start in range(0, len(paths), 2000):
        reply = control.call({"t": "receipts", "paths": paths[start : start + 2000]}, "receipts_ok")
        cert = base64.b64decode(reply.get("cert") or "")
        if identity.fingerprint_of(cert) != control.server_fp:
            raise FxError("the server signed receipts with another identity than the one it presented")
        receipts.write(Path(target), cert, [r for r in reply.get("receipts") or [] if r])


def cmd_receipt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import receipts
    from .identity import home
    from .trust import PinList

    pinned = {bytes.fromhex(fp) for fp in PinList(home()).all().values()}
    bodies = receipts.verify_file(Path(args.file), pinned)
    print(f"{len(bodies)} receipts verified, signed by a pinned server")
    return 0


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
    from . import client  # noqa: F401 - imported here, in the background, for the caller
    return connect_control(address)


def cmd_send(args: argparse.Namespace) -> int:
    # Only what the walk needs is imported here; the session's modules (TLS,
    # cryptography: most of the start-up) load in the connecting thread while
    # the walk runs.
    from .tree import display, walk
    from .trust import parse_address

    if args.streams is not None and not 1 <= args.streams <= 64:
        raise UsageError("--streams must be between 1 and 64")
    if args.dest is not None:
        from .paths import split
        from .errors import RefusedError

        try:
            split(args.dest.strip("/"))
        except RefusedError as exc:
            raise UsageError(f"--dest: {exc.message}") from None
    parse_address(args.to)  # a usage error before any walk
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
    from .client import Sender, human
    from .session import KEEP_ALIVE

    if time.monotonic() - started > KEEP_ALIVE:
        # A long walk left the session idle, perhaps past the server's limit:
        # a ping finds out, and opens it again if it is gone.
        control.call({"t": "ping"}, "pong")
        welcome = control.welcome or welcome
    show = sys.stderr.isatty() and not args.quiet
    sender = Sender(control, welcome, args.streams, args.chunk_size, args.sha256, show,
                    checksum=args.checksum, dry_run=args.dry_run)
    try:
        results = sender.run(sources)
        if args.receipts and not args.dry_run:
            fetch_receipts(control, [r.src.remote for r in results if r.src.kind == "file"
                                     and r.status in ("stored", "unchanged")], args.receipts)
    finally:
        if sender.progress is not None:
            sender.progress.close()
        control.close()
    reopened_note(control)
    elapsed = time.monotonic() - started
    if args.dry_run:
        return report_dry_run(results, skipped, welcome.name)
    failed = [r for r in results if r.status == "failed"]
    listed = args.verbose or len(results) <= 100
    # One line per cause: a session that ended takes every file not yet sent with it.
    causes: dict[str, int] = {}
    for r in failed:
        assert r.error is not None
        causes[r.error.message] = causes.get(r.error.message, 0) + 1
    for message, count in causes.items():
        print(f"ERROR: {message}" + (f" ({count} files)" if count > 1 else ""), file=sys.stderr)
    for r in results:
        if r.status == "failed":
            continue
        if not listed:
            continue
        what = "" if r.src.kind == "file" else f" ({'folder' if r.src.kind == 'dir' else 'link'})"
        if r.status == "stored":
            size = f" ({human(r.src.size)}, verified)" if r.src.kind == "file" else what
            print(f"stored {welcome.name}/{display(r.src.remote)}{size}")
        else:
            print(f"unchanged {welcome.name}/{display(r.src.remote)}{what or ' (same size and time as stored)'}")
        if r.sha256:
            print(f"{r.sha256.hex()}  {display(r.src.local)}")
    files = [r for r in results if r.src.kind == "file"]
    stored = sum(1 for r in files if r.status == "stored")
    unchanged = sum(1 for r in files if r.status == "unchanged")
    rate = sender.bytes_sent / elapsed / 2**20 if elapsed else 0.0
    print(f"{plural(stored, 'file')} stored and verified, {unchanged} unchanged, {len(failed)} failed, "
          f"{len(skipped)} skipped; sent {human(sender.bytes_sent)} in {elapsed:.2f} s "
          f"({rate:.0f} MiB/s) over {plural(sender.streams_opened, 'stream')}"
          + (f"; resumed: {human(sender.bytes_resumed)} were already on the server" if sender.bytes_resumed else ""))
    codes = [r.error.exit_code for r in failed if r.error is not None] + [7] * len(skipped)
    if not codes:
        return 0
    if len(failed) == len(results) and len(set(codes)) == 1:
        return codes[0]  # nothing stored, one cause: say which
    return 9


def connect_control(address: str):
    from .identity import home, load_or_create
    from .session import ControlClient
    from .trust import PinList, parse_address

    host, port = parse_address(address)
    control = ControlClient(host, port, load_or_create(), PinList(home()))
    return control, control.connect()


def cmd_ls(args: argparse.Namespace) -> int:
    import datetime
    import json

    from .client import human
    from .tree import display

    control, _ = connect_control(args.server)
    entries: list[dict] = []
    try:
        cursor = None
        while True:
            reply = control.call({"t": "list", "prefix": args.path, "versions": args.versions,
                                  "after": cursor}, "list_ok")
            entries += reply.get("entries") or []
            cursor = reply.get("next")
            if not cursor:
                break
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
        else:
            print(f"{human(e['size']):>11}  {when}  {sha}  {name}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from .client import LONG_PATH_RTT, auto_streams, human, make_progress
    from .restore import Getter, list_all, plan
    from .tree import display

    if len(args.paths) > 1 and not os.path.isdir(args.output):
        raise UsageError(f"{args.output}: with several PATHs, -o must be an existing folder")
    control, welcome = connect_control(args.server)
    started = time.monotonic()
    outcomes = []
    received = streams_used = 0
    try:
        for path in args.paths:
            entries = list_all(control, path, args.version)
            root, planned = plan(entries, path, args.output)
            total = sum(int(e.get("size") or 0) for e, _ in planned if e.get("kind") == "file")
            progress = make_progress(total, sys.stderr.isatty() and not args.quiet)
            streams = min(args.streams or auto_streams(len(planned), control.rtt >= LONG_PATH_RTT), 16)
            getter = Getter(control, welcome, streams, args.force, progress)
            try:
                outcomes += getter.run(root, planned)
            finally:
                if progress is not None:
                    progress.close()
                received += getter.bytes_received
                streams_used = max(streams_used, len(getter.threads))
    finally:
        control.close()
    reopened_note(control)
    elapsed = time.monotonic() - started
    bad = [o for o in outcomes if o.status not in ("restored", "unchanged")]
    there = sum(1 for o in outcomes if o.status == "unchanged")
    shown = bad if args.verbose else bad[:LISTED_ERRORS]
    for o in shown:
        print(f"ERROR: {o.error.message if o.error else display(o.path)}", file=sys.stderr)
    if len(bad) > len(shown):
        print(f"ERROR: and {len(bad) - len(shown)} more not restored (-v lists them all)", file=sys.stderr)
    rate = received / elapsed / 2**20 if elapsed else 0.0
    print(f"{len(outcomes) - len(bad) - there} restored and verified, {there} already there (same size and "
          f"time), {len(bad)} not; received {human(received)} "
          f"in {elapsed:.2f} s ({rate:.0f} MiB/s) over {plural(streams_used, 'stream')}")
    if not bad:
        return 0
    codes = {o.error.exit_code for o in bad if o.error is not None}
    return codes.pop() if len(bad) == len(outcomes) and len(codes) == 1 else 9


LISTED_ERRORS = 20  # a get that fails for many files lists this many unless -v


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def reopened_note(control) -> None:
    """Say so when the control connection had to be opened again (a network blip, a server restart)."""
    if control.reopened:
        times = "once" if control.reopened == 1 else f"{control.reopened} times"
        print(f"NOTE: the connection to the server was lost and opened again ({times})", file=sys.stderr)


def sums_line(sha: str, path: str) -> str:
    """A line sha256sum -c reads back, with its escaping for awkward names."""
    if "\\" in path or "\n" in path:
        return "\\" + sha + "  " + path.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{sha}  {path}"


def cmd_sums(args: argparse.Namespace) -> int:
    from .restore import list_all

    control, _ = connect_control(args.server)
    bad = 0
    try:
        files = [e["path"] for e in list_all(control, args.path) if e.get("kind") == "file"]
        if not files and args.path:
            raise RefusedError(f"nothing stored at {args.path!r}")
        for start in range(0, len(files), 2000):
            reply = control.call({"t": "sums", "paths": files[start : start + 2000]}, "sums_ok")
            for item in reply.get("files") or []:
                if item.get("status") == "ok":
                    sys.stdout.buffer.write(os.fsencode(sums_line(item["sha256"], item["path"])) + b"\n")
                else:
                    bad += 1
                    print(f"ERROR: {item['path']!r} is {item.get('status')} on the server", file=sys.stderr)
    finally:
        control.close()
    return 5 if bad else 0


def cmd_check(args: argparse.Namespace) -> int:
    from .store import STATE, Store

    if not os.path.isfile(os.path.join(args.root, STATE, "manifest.sqlite")):
        raise UsageError(f"{args.root} is not a fastxfer root (no {STATE}/manifest.sqlite)")
    store = Store(args.root)
    counts = {"ok": 0, "changed": 0, "missing": 0}
    for client, raw in store.stored_files(args.client):
        status, _ = store.verify_stored(client, raw)
        counts[status] += 1
        if status != "ok":
            print(f"{status.upper()}: {client}/{os.fsdecode(raw)!r}")
    print(f"{counts['ok']} files intact, {counts['changed']} changed on disk, {counts['missing']} missing")
    if counts["changed"] or counts["missing"]:
        print("to repair them, send those files again from the client with --checksum", file=sys.stderr)
    return 0 if counts["changed"] == counts["missing"] == 0 else 5


COMMANDS = {"id": cmd_id, "ls": cmd_ls, "get": cmd_get, "sums": cmd_sums, "check": cmd_check,
            "receipt": cmd_receipt, "trust": cmd_trust, "pin": cmd_pin, "pins": cmd_pin, "unpin": cmd_pin,
            "serve": cmd_serve, "send": cmd_send}


def entry() -> None:
    """What `fastxfer` and `python -m fastxfer` run: main(), then an exit that
    skips the interpreter's teardown (15-20 ms of freeing what a large send
    built, on every command). Every command has closed its files and joined
    its threads and processes by the time main() returns; only the standard
    streams are left to flush."""
    try:
        code = main()
    except BrokenPipeError:  # the reader stopped reading (`fastxfer ls | head`): its choice, not an error to show
        os._exit(141)  # what a shell reports for a command ended by SIGPIPE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader stopped reading (`fastxfer ls | head`): its choice
    except OSError as exc:  # a full disk under `fastxfer sums > SHA256SUMS` must not pass silently
        print(f"ERROR: cannot write the output: {exc.strerror}", file=sys.stderr)
        code = code or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except FxError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"ERROR: interrupted; {INTERRUPTED.get(args.cmd, 'nothing was changed')}", file=sys.stderr)
        return 130


INTERRUPTED = {  # what an interrupted command leaves, and what to do next
    "send": "run the same send again to resume: it sends only what the server has not made durable",
    "get": "the files restored so far are in place, whole; run the same get again: it skips them "
           "(same size and time) and brings the rest",
    "serve": "the server stopped",
}
