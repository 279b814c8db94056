"""The snapshots a client's sends recorded: listed."""

from __future__ import annotations

import argparse

from fastxfer.cli.report import human


def add_snapshots(sub) -> None:
    s = sub.add_parser("snapshots", help="list the snapshots this client's sends recorded",
                       description="One line per snapshot, oldest first: its id (for --at), when it was "
                                   "taken, whether it is complete, its files and bytes, and the paths it "
                                   "holds. A partial snapshot is one whose send did not store every file.",
                       epilog="example:\n  fastxfer snapshots --from backup\n"
                              "  fastxfer get Documents --from backup --at 11 -o /tmp/restore",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="only the snapshots holding this path (default: all)")
    s.add_argument("--from", dest="server", required=True, metavar="HOST[:PORT]",
                   help="the server, as pinned (`fastxfer pins`); port 4455 if not given")
    s.add_argument("--json", action="store_true", help="one JSON array instead of a table")


def cmd_snapshots(args: argparse.Namespace) -> int:
    import datetime
    import json

    from fastxfer.client.connect import connect_control
    from fastxfer.protocol import messages

    control, _ = connect_control(args.server)
    try:
        reply = control.call({"t": "snapshots", "prefix": args.path}, "snapshots_ok")
    finally:
        control.close()
    snaps = [messages.get_obj(s) for s in messages.get_list(reply, "snapshots", 1 << 20)]
    if args.json:
        print(json.dumps(snaps, indent=1, ensure_ascii=True))
        return 0
    if not snaps:
        print("no snapshots yet" + (f" of {args.path!r}" if args.path else ""))
        return 0
    print(f"{'id':>6}  {'time':16}  {'state':8}  {'files':>9}  {'bytes':>11}  paths")
    for s in snaps:
        when = datetime.datetime.fromtimestamp(messages.get_int(s, "time_ns") / 1e9).strftime("%Y-%m-%d %H:%M")
        shown = ", ".join(str(p) or "(everything)" for p in messages.get_list(s, "paths", 1 << 16))
        note = f"  ({s['note']})" if s.get("note") else ""
        print(f"{messages.get_int(s, 'id'):>6}  {when:16}  {str(s.get('state'))[:8]:8}  "
              f"{messages.get_int(s, 'files'):>9,}  {human(messages.get_int(s, 'bytes')):>11}  {shown}{note}")
    return 0
