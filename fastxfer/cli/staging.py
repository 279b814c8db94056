"""`fastxfer staging`: the server's unfinished transfers, listed or cleared."""

from __future__ import annotations

import argparse
import os
import time

from fastxfer.cli import config
from fastxfer.errors import UsageError
from fastxfer.protocol.units import human

EXAMPLES = """examples:
  fastxfer staging --root /srv/backup                   list every unfinished transfer
  fastxfer staging --config /etc/fastxfer/server.toml   the same, for the server that file configures
  fastxfer staging --root /srv/backup --client laptop --clear
                                                        remove laptop's (they are sent again from the start)

Unfinished transfers are what a send leaves when it is cut short: a send run
again resumes from them.  The server removes those untouched for 7 days when
it starts.  --clear works while the server runs: a transfer a stream is writing
or a commit holds at that moment is left alone and reported."""


def add_staging(sub) -> None:
    sp = sub.add_parser("staging", help="server side: list or clear unfinished transfers",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--root", default=None, help="the server's root folder (default: the --config file's root)")
    config.add_option(sp)
    sp.add_argument("--client", default=None, metavar="NAME", help="only this client's")
    sp.add_argument("--clear", action="store_true", help="remove them (space is freed at once)")


def cmd_staging(args: argparse.Namespace) -> int:
    from fastxfer.store.facade import STATE
    from fastxfer.store import unfinished

    root = config.root_of(args)
    top = os.path.join(root, STATE, "staging")
    if not os.path.isdir(top):
        raise UsageError(f"{root} is not a fastxfer root (no {STATE}/staging)")
    if args.client is not None and not os.path.isdir(os.path.join(top, args.client)):
        print(f"no unfinished transfers of {args.client}")
        return 0
    items = unfinished.unfinished(top, args.client)
    now = time.time()
    for u in items:
        what = u.path if u.path is not None else f"(cut short while created: {u.stem})"
        print(f"{u.client}\t{what}\t{human(u.received)} of {human(u.size)} received\t"
              f"{human(u.on_disk)} on disk\tidle {_age(now - u.last)}")
    total = sum(u.on_disk for u in items)
    if not args.clear:
        print(f"{len(items)} unfinished transfer{'s' if len(items) != 1 else ''}, {human(total)} on disk")
        return 0
    busy = [u for u in items if not unfinished.clear(top, u)]
    freed = total - sum(u.on_disk for u in busy)
    print(f"cleared {len(items) - len(busy)} unfinished transfer{'s' if len(items) - len(busy) != 1 else ''}, "
          f"{human(freed)} freed")
    for u in busy:
        print(f"left alone (being written or committed now): {u.client}\t{u.path or u.stem}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"
