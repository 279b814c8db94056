"""The snapshots a client's sends recorded: listed."""

from __future__ import annotations

import argparse

from fastxfer.cli.report import human


def add_snapshots(sub) -> None:
    s = sub.add_parser("snapshots", help="list the snapshots this client's sends recorded",
                       description="One line per snapshot, oldest first: its id (for --at), when it was "
                                   "taken, whether it is complete, its files and bytes, and the paths it "
                                   "holds. A partial snapshot is one whose send did not store every file.",
                       epilog="examples:\n  fastxfer snapshots --from backup\n"
                              "  fastxfer snapshots --from backup --json | jq '.snapshots[-1].id'\n"
                              "  fastxfer get Documents --from backup --at 11 -o /tmp/restore",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="only the snapshots holding this path (default: all)")
    s.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                   help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    s.add_argument("--json", action="store_true", help="one JSON document instead of a table (docs/JSON.md)")


def cmd_snapshots(args: argparse.Namespace) -> int:
    from fastxfer.client.connect import connect_control

    control, _ = connect_control(args.server)
    try:
        reply = control.call({"t": "snapshots", "prefix": args.path}, "snapshots_ok")
    finally:
        control.close()
    print_snapshots(reply, args.path, args.json)
    return 0


def print_snapshots(reply: dict, path: str, as_json: bool) -> None:
    import datetime

    from fastxfer.client.walk import display
    from fastxfer.protocol import messages

    snaps = [listed(s) for s in messages.get_list(reply, "snapshots", 1 << 20)]
    if as_json:
        from fastxfer.cli import json_out

        json_out.written("snapshots", {"path": path, "snapshots": snaps})
        return
    if not snaps:
        print("no snapshots yet" + (f" of {path!r}" if path else ""))
        return
    print(f"{'id':>6}  {'time':16}  {'state':8}  {'files':>9}  {'bytes':>11}  {'changed':>8}  {'deleted':>8}  paths")
    for s in snaps:
        when = datetime.datetime.fromtimestamp(s["time_ns"] / 1e9).strftime("%Y-%m-%d %H:%M")
        shown = ", ".join(display(p) if p else "(everything)" for p in s["paths"])
        note = f"  ({display(s['note'])})" if s.get("note") else ""
        print(f"{s['id']:>6}  {when:16}  {display(s['state'])[:8]:8}  "
              f"{s['files']:>9,}  {human(s['bytes']):>11}  "
              f"{s.get('changed') or 0:>8,}  {s.get('removed') or 0:>8,}  {shown}{note}")


def listed(value) -> dict:
    """A snapshot as the server describes it, every field shown checked (ProtocolError otherwise)."""
    from fastxfer.errors import ProtocolError
    from fastxfer.protocol import messages
    from fastxfer.client.listing import is_text

    s = messages.get_obj(value)
    for key in ("id", "time_ns", "files", "bytes"):
        messages.get_int(s, key)
    for key in ("changed", "removed"):
        if s.get(key) is not None:
            messages.get_int(s, key)
    shown = [s.get("state"), s.get("note") or ""] + messages.get_list(s, "paths", 1 << 16)
    if not all(is_text(t) for t in shown):
        raise ProtocolError(f"the server described snapshot {s['id']} with a broken field")
    return s


def add_diff(sub) -> None:
    d = sub.add_parser("diff", help="what changed between two snapshots",
                       description="One line per path that differs between snapshot A and snapshot B: "
                                   "+ added, - removed, M content changed, T kind changed (file, folder, "
                                   "link, ...), U only mode, owner or time changed; then the counts.",
                       epilog="examples:\n  fastxfer diff 11 12 --from backup\n"
                              "  fastxfer diff 2026-12-01 latest Documents --from backup --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("a", metavar="A", help="the older snapshot: an id, 'latest' or a time")
    d.add_argument("b", metavar="B", help="the newer snapshot: an id, 'latest' or a time")
    d.add_argument("path", nargs="?", default="", metavar="PATH", help="only at or below this path (default: all)")
    d.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                   help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    d.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def cmd_diff(args: argparse.Namespace) -> int:
    import os
    import sys

    from fastxfer.client.connect import connect_control
    from fastxfer.client.listing import list_all
    from fastxfer.client.walk import display
    from fastxfer.protocol.snapshot import DIFF_CODES, diff, parse_at

    a, b = parse_at(args.a), parse_at(args.b)
    control, _ = connect_control(args.server)
    try:
        changes = diff(list_all(control, args.path, at=a), list_all(control, args.path, at=b))
    finally:
        control.close()
    counts = {kind: sum(1 for k, _ in changes if k == kind) for kind in DIFF_CODES}
    if args.json:
        from fastxfer.cli import json_out

        json_out.document(args, {"a": args.a, "b": args.b, "changes": [{"change": k, "path": p} for k, p in changes],
                                 "counts": counts})
        return 0
    for kind, path in changes:
        sys.stdout.buffer.write(os.fsencode(f"{DIFF_CODES[kind]}  {display(path)}") + b"\n")
    sys.stdout.flush()
    print(f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed, "
          f"{counts['kind']} changed kind, {counts['meta']} changed mode, owner or time")
    return 0


FORGET_EPILOG = """\
examples:
  fastxfer forget --from backup --keep-last 7 --keep-daily 14 --keep-weekly 8 --prune
  fastxfer forget --root /srv/backup --client laptop --keep-last 1 --min-age 0 --prune   (on the server)
  fastxfer forget --config /etc/fastxfer/server.toml --client laptop --keep-daily 30      (on the server)

A snapshot is kept when any --keep-* rule keeps it; each group of snapshots
of the same paths is judged on its own. Snapshots younger than the minimum
age are always kept: from a client, the server's (`serve --min-age`, 7 days
unless set); on the server, --min-age (default: the --config file's min-age,
else 7d; 0 lets the administrator forget anything). --prune then removes the older copies no kept snapshot
refers to; the current view (what `ls` shows) is never removed."""


def add_forget(sub) -> None:
    f = sub.add_parser("forget", help="forget old snapshots (and with --prune free their space)",
                       description="Forget the snapshots a retention policy does not keep.",
                       epilog=FORGET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = f.add_mutually_exclusive_group()
    where.add_argument("--from", dest="server", metavar="HOST[:PORT]", help="this client's snapshots on that server")
    where.add_argument("--root", metavar="DIR", help="on the server: the server's root folder (with --client)")
    where.add_argument("--config", metavar="FILE",
                       help="on the server: the root and --min-age of the server this TOML file configures "
                            "(with --client; default: $FASTXFER_CONFIG if set, when neither --from nor --root)")
    f.add_argument("--client", metavar="NAME", help="with --root: whose snapshots")
    for kind, unit in (("last", "newest snapshots"), ("hourly", "hours"), ("daily", "days"),
                       ("weekly", "weeks"), ("monthly", "months")):
        f.add_argument(f"--keep-{kind}", type=int, default=0, metavar="N",
                       help=f"keep the N {unit}" if kind == "last" else f"keep the newest snapshot of each of the last N {unit} that have one")
    f.add_argument("--min-age", default=None, metavar="AGE",
                   help="with --root: keep every snapshot younger than this (default: 7d; 0: none)")
    f.add_argument("--dry-run", action="store_true", help="say what would be forgotten; change nothing")
    f.add_argument("--prune", action="store_true", help="then remove the older copies no kept snapshot refers to")
    f.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def cmd_forget(args: argparse.Namespace) -> int:
    import time

    from fastxfer.errors import UsageError
    from fastxfer.protocol import retention

    counts = {k: getattr(args, f"keep_{k}") for k in ("last", *retention.BUCKETS)}
    if any(n < 0 for n in counts.values()):
        raise UsageError("--keep-* counts cannot be negative")
    if not any(counts.values()):
        raise UsageError("give at least one --keep-* rule: a forget that keeps nothing is refused")
    if args.server:
        if args.client or args.min_age is not None:
            raise UsageError("--client and --min-age are for the server's administrator (with --root or --config)")
        from fastxfer.client.connect import connect_control

        control, _ = connect_control(args.server)
        try:
            done = control.call({"t": "forget", "keep": counts, "dry_run": args.dry_run, "prune": args.prune},
                                "forget_ok")
        finally:
            control.close()
    else:
        from fastxfer.cli import config

        settings = config.ServerConfig() if args.root else config.for_command(args)
        if settings.path is None and not args.root:
            raise UsageError("give --from HOST (from a client) or, on the server, --root DIR or --config FILE")
        if not args.client:
            raise UsageError("--root needs --client NAME: whose snapshots to forget")
        age = args.min_age or settings.get("min_age") or "7d"
        policy = retention.Policy(**counts, min_age_ns=retention.parse_age(age))
        store = open_root(args.root or config.root_of(args))
        done = store.forget(args.client, policy, time.time_ns(), args.dry_run, args.prune).as_message()
        done["min_age_ns"] = policy.min_age_ns
    if args.json:
        from fastxfer.cli import json_out

        json_out.document(args, {"dry_run": args.dry_run, **done})
    else:
        print_forget(done, args.dry_run, args.prune)
    return 0


def open_root(root: str):
    import os

    from fastxfer.errors import UsageError
    from fastxfer.store.facade import STATE, Store

    if not os.path.isfile(os.path.join(root, STATE, "manifest.sqlite")):
        raise UsageError(f"{root} is not a fastxfer root (no {STATE}/manifest.sqlite)")
    store = Store(root)
    store.init_manifest()  # a root from an older release is migrated first
    return store


def print_forget(done: dict, dry_run: bool, prune: bool) -> None:
    import datetime

    from fastxfer.protocol import messages

    def line(s: dict) -> str:
        when = datetime.datetime.fromtimestamp(messages.get_int(s, "time_ns") / 1e9).strftime("%Y-%m-%d %H:%M")
        return f"{messages.get_int(s, 'id'):>6}  {when}  {', '.join(texts(s, 'paths')) or '(everything)'}"

    kept = [messages.get_obj(s) for s in messages.get_list(done, "kept", 1 << 20)]
    gone = [messages.get_obj(s) for s in messages.get_list(done, "forgotten", 1 << 20)]
    for s in kept:
        print(f"keep    {line(s)}  ({', '.join(texts(s, 'why'))})")
    for s in gone:
        print(f"{'would forget' if dry_run else 'forget':<7} {line(s)}")
    days = messages.get_int(done, "min_age_ns") / 86400e9
    summary = f"{len(kept)} kept, {len(gone)} {'would be ' if dry_run else ''}forgotten (none younger than {days:g} days)"
    if prune:
        summary += (f"; {'would prune' if dry_run else 'pruned'} {messages.get_int(done, 'pruned_files')} older "
                    f"copies ({human(messages.get_int(done, 'pruned_bytes'))})")
    print(summary)


def texts(msg: dict, key: str) -> list[str]:
    """A list of names in a server's answer, as shown (ProtocolError if it is not one)."""
    from fastxfer.errors import ProtocolError
    from fastxfer.protocol import messages
    from fastxfer.client.listing import is_text
    from fastxfer.client.walk import display

    listed = messages.get_list(msg, key, 1 << 16) if msg.get(key) is not None else []
    if not all(is_text(t) for t in listed):
        raise ProtocolError(f"the server's answer has a broken {key!r}")
    return [display(t) for t in listed]
