"""Pairing commands: invite (server side) and pair (client side)."""

from __future__ import annotations

import argparse
import re
import sys

from fastxfer.cli import config

INVITE_EPILOG = """\
The code is printed alone on standard output; read it to the person at the
client, who runs `fastxfer pair`. It works once, for --valid-for (10
minutes), and authorizes one client under NAME (its folder on the server).
The running server takes it at once: no restart. A wrong code uses it up.

examples:
  fastxfer invite --name laptop
  fastxfer invite --name laptop --valid-for 30m
  fastxfer invite --name laptop --cancel
  fastxfer invite --name laptop --config /etc/fastxfer/server.toml   (the server's state folder)"""

PAIR_EPILOG = """\
Pins the server and gets this machine authorized on it, with the code that
`fastxfer invite --name NAME` printed on the server; no fingerprint to copy.
A wrong, expired or used code exits 3 and pins nothing (a wrong one uses the
code up: ask for a new one). Afterwards `fastxfer send PATH --to HOST[:PORT]`
works as after `fastxfer pin` and `fastxfer trust add`.

examples:
  fastxfer pair backup.lan 7-absurd-vessel
  fastxfer pair backup.lan:4455 "7 absurd vessel"
  fastxfer pair [fd00::5]:4455 7-absu-vess     (four letters of a word are enough)"""


def add_invite(sub) -> None:
    p = sub.add_parser("invite", help="server side: print a one-time pairing code for a new client",
                       epilog=INVITE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the client's name on this server (its folder under the root)")
    p.add_argument("--valid-for", type=parse_duration, default=600.0, metavar="DURATION",
                   help="how long the code stays valid (e.g. 90s, 10m, 2h; default 10m, at most 24h)")
    p.add_argument("--cancel", action="store_true", help="use up every open invitation for --name instead")
    config.add_option(p)


def add_pair(sub) -> None:
    p = sub.add_parser("pair", help="client side: pin a server and get authorized with its pairing code",
                       epilog=PAIR_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", metavar="HOST[:PORT]", help="the server, as `send --to` will name it (port 4455 by default)")
    p.add_argument("code", metavar="CODE", help="the code `fastxfer invite` printed on the server, e.g. 7-absurd-vessel")


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 10m, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def state_folder(args: argparse.Namespace):
    """The server's state folder: where clients.json is, as `fastxfer trust` finds it."""
    return config.for_command(args).state_dir()


def cmd_invite(args: argparse.Namespace) -> int:
    from fastxfer.trust.identity import CERT_FILE
    from fastxfer.trust.invites import INVITES_FILE, LOCK_FILE, InviteBook

    folder = state_folder(args)
    book = InviteBook(folder)
    try:
        if args.cancel:
            print(f"cancelled {book.cancel(args.name)} open invitation(s) for {args.name}")
            return 0
        invite = book.create(args.name, args.valid_for)
    finally:
        config.hand_over(folder, (INVITES_FILE, LOCK_FILE))
    print(invite.code, flush=True)
    minutes = args.valid_for / 60
    shown = f"{minutes:g} minutes" if args.valid_for >= 60 else f"{args.valid_for:g} s"
    print(f"on the client run: fastxfer pair THIS-SERVER[:PORT] {invite.code}  "
          f"(once, within {shown}, to authorize it as {args.name})", file=sys.stderr)
    _shared_folder_note(folder, args.name)
    if not (folder / CERT_FILE).exists():
        print(f"note: no server has run with its state in {folder} yet; the invitation waits there",
              file=sys.stderr)
    return 0


def _shared_folder_note(folder, name: str) -> None:
    """As `trust add` says it: the client that pairs will share (and read) the
    folder of every identity already under *name*."""
    from fastxfer.trust.clients import ClientList

    others = [fp for fp, n in ClientList(folder).all().items() if n == name]
    if others:
        print(f"note: {len(others)} authorized identity(ies) already write to {name}'s folder; the client "
              f"that pairs will share it, backups and all (`fastxfer trust remove FP` revokes one)",
              file=sys.stderr)


def cmd_pair(args: argparse.Namespace) -> int:
    from fastxfer.client.pair import pair
    from fastxfer.protocol.pairing import parse_code
    from fastxfer.trust.identity import format_fp, home, load_or_create
    from fastxfer.trust.pins import PinList, parse_address

    host, port = parse_address(args.address)
    code = parse_code(args.code)  # a typo is caught here and uses nothing up
    ident = load_or_create()
    done = pair(host, port, code, ident, PinList(home()))
    print(f"paired: {done.address} is pinned ({format_fp(done.server_fp)}) and this client "
          f"({format_fp(ident.fingerprint)}) is authorized there as {done.name}")
    if done.was and done.was != done.name:
        print(f"note: this client was authorized there as {done.was}; its backups stay under that name, "
              f"and it now reads and writes {done.name}'s", file=sys.stderr)
    print(f"back up with: fastxfer send PATH --to {done.address}")
    return 0
