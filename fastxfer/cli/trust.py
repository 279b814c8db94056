"""Identity and trust commands: id, pin, pins, unpin, trust, receipt."""

from __future__ import annotations

import argparse

from fastxfer.cli import config
from fastxfer.cli.args import parse_size
from fastxfer.errors import UsageError
from fastxfer.protocol.units import human


def add_id(sub) -> None:
    i = sub.add_parser("id", help="print this identity's fingerprint (creates it on first use)",
                       epilog="examples:\n  fastxfer id\n"
                              "  fastxfer id --config /etc/fastxfer/server.toml     the server's, from its state folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("--config", metavar="FILE", default=None,
                   help="print the fingerprint of the server this TOML file configures (its state-dir)")



TRUST_EPILOG = f"""\
examples:
  fastxfer trust add ABCD-EFGH-... --name laptop --config /etc/fastxfer/server.toml
  fastxfer trust list --config /etc/fastxfer/server.toml
  fastxfer trust quota laptop 500G

The list is in the server's state folder: the --config file's state-dir (the file
from ${config.ENV} without --config), else $FASTXFER_HOME, else ~/.config/fastxfer.
Give the one the server runs with; a change where no server has run yet warns."""


def add_trust(sub) -> None:
    t = sub.add_parser("trust", help="server side: which clients may send", epilog=TRUST_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = t.add_subparsers(dest="trust_cmd", metavar="ACTION", required=True)
    ta = tsub.add_parser("add", help="authorize a client fingerprint under a name (its folder)",
                         epilog="examples (the fingerprint as `fastxfer id` prints it on the client):\n"
                                "  fastxfer trust add ABCD-EFGH-... --name laptop\n"
                                "  fastxfer trust add ABCD-EFGH-... --name laptop --quota 500G "
                                "--config /etc/fastxfer/server.toml",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ta.add_argument("fingerprint")
    ta.add_argument("--name", required=True)
    ta.add_argument("--quota", type=parse_size, metavar="SIZE",
                    help="bytes the client may hold on the server: stored files, older copies and "
                         "unfinished transfers (e.g. 500G; default: no quota)")
    tq = tsub.add_parser("quota", help="set or remove a client's quota",
                         epilog="examples:\n  fastxfer trust quota laptop 500G\n  fastxfer trust quota laptop none",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    tq.add_argument("name")
    tq.add_argument("size", type=quota_size, metavar="SIZE|none")
    tl = tsub.add_parser("list", help="list authorized clients (name, fingerprint, quota)",
                         epilog="example:\n  fastxfer trust list --json | jq -r '.clients[].name'",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    tl.add_argument("--json", action="store_true", help="one JSON document instead of lines (docs/JSON.md)")
    tr = tsub.add_parser("remove", help="remove a client by fingerprint or name",
                         epilog="examples:\n  fastxfer trust remove laptop\n  fastxfer trust remove ABCD-EFGH-...",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("who", metavar="FP|NAME")
    for action in (ta, tq, tl, tr):
        config.add_option(action)



def add_pins(sub) -> None:
    pn = sub.add_parser("pin", help="client side: trust a server fingerprint at HOST[:PORT]",
                        epilog="example (the fingerprint as `fastxfer id` prints it on the server):\n"
                               "  fastxfer pin backup-host ABCD-EFGH-...\n"
                               "  fastxfer pin 192.168.1.20:4455 ABCD-EFGH-...\n"
                               "or, without copying it: fastxfer invite on the server, fastxfer pair here",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pn.add_argument("address", metavar="HOST[:PORT]")
    pn.add_argument("fingerprint")
    ps = sub.add_parser("pins", help="list pinned servers",
                        epilog="example:\n  fastxfer pins --json | jq -r '.pins[].address'",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.add_argument("--json", action="store_true", help="one JSON document instead of lines (docs/JSON.md)")
    up = sub.add_parser("unpin", help="forget the pin for HOST[:PORT]",
                        epilog="example:\n  fastxfer unpin backup-host:4455",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("address", metavar="HOST[:PORT]")



def add_receipt(sub) -> None:
    example = ("example:\n  fastxfer send ~/Documents --to backup --receipts receipts.jsonl\n"
               "  fastxfer receipt verify receipts.jsonl")
    rc = sub.add_parser("receipt", help="check signed receipts offline", epilog=example,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    rsub = rc.add_subparsers(dest="receipt_cmd", metavar="ACTION", required=True)
    rv = rsub.add_parser("verify", help="check every receipt in FILE against the pinned servers", epilog=example,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rv.add_argument("file")



def quota_size(text: str) -> int | None:
    return None if text.strip().lower() == "none" else parse_size(text)


def cmd_id(args: argparse.Namespace) -> int:
    from fastxfer.trust.identity import CERT_FILE, KEY_FILE, format_fp, load_or_create

    # Only an explicit --config: FASTXFER_CONFIG names the server's file, and a
    # client's `fastxfer id` on the same machine must stay the client's.
    state = config.load(args.config).state_dir()
    print(format_fp(load_or_create(state).fingerprint))
    if args.config:
        config.hand_over(state, (KEY_FILE, CERT_FILE))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from fastxfer.trust.clients import CLIENTS_FILE, LOCK_FILE, QUOTAS_FILE, ClientList

    settings = config.for_command(args)
    state = settings.state_dir()
    clients = ClientList(state, settings.quotas)
    if args.trust_cmd != "list":
        config.warn_if_no_server(state)
    try:
        _change(args, clients, settings)
    finally:
        if args.trust_cmd != "list":
            config.hand_over(state, (CLIENTS_FILE, QUOTAS_FILE, LOCK_FILE))
    return 0


def _change(args: argparse.Namespace, clients, settings: config.ServerConfig) -> None:
    from fastxfer.trust.identity import format_fp, parse_fp

    if args.trust_cmd == "add":
        fp = parse_fp(args.fingerprint)
        others = [k for k, v in clients.all().items() if v == args.name and k != fp.hex()]
        clients.add(fp, args.name)
        print(f"authorized {format_fp(fp)} as {args.name}")
        if args.quota is not None:
            clients.set_quota(args.name, args.quota)
            print(f"quota of {args.name}: {human(args.quota)}")
            _fixed_quota_note(args.name, args.quota, clients, settings)
        if others:
            # The lost-laptop case: a new identity takes over an old folder.
            print(f"note: {len(others)} other identity(ies) also write to {args.name}'s folder; "
                  f"`fastxfer trust remove FP` revokes one")
    elif args.trust_cmd == "quota":
        clients.set_quota(args.name, args.size)
        known = args.name in clients.all().values()
        print(f"quota of {args.name}: {'none' if args.size is None else human(args.size)}"
              + ("" if known else " (no authorized client has this name yet)"))
        _fixed_quota_note(args.name, args.size, clients, settings)
    elif args.trust_cmd == "list" and args.json:
        from fastxfer.cli import json_out

        json_out.trust_list(args, clients)
    elif args.trust_cmd == "list":
        for fp, name in sorted(clients.all().items(), key=lambda kv: kv[1]):
            quota = clients.quota_of(name)
            print(f"{name}\t{format_fp(bytes.fromhex(fp))}\t{'no quota' if quota is None else 'quota ' + human(quota)}")
    else:
        try:
            fp, name = parse_fp(args.who), None
        except UsageError:
            fp, name = None, args.who
        if not clients.remove(fp, name):
            raise UsageError(f"no authorized client matches {args.who!r}")
        print(f"removed {args.who}")


def _fixed_quota_note(name: str, size: int | None, clients, settings: config.ServerConfig) -> None:
    fixed = settings.quotas.get(name)
    if fixed is not None and clients.quota_of(name) != size:
        print(f"note: {settings.path} sets {name}'s quota to {human(fixed)}: the smaller, "
              f"{human(clients.quota_of(name))}, applies")


def cmd_pin(args: argparse.Namespace) -> int:
    from fastxfer.trust.identity import format_fp, home, parse_fp
    from fastxfer.trust.pins import PinList, address_key, parse_address

    pins = PinList(home())
    if args.cmd == "pins" and args.json:
        from fastxfer.cli import json_out

        json_out.pins(args, pins.all())
        return 0
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


def cmd_receipt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastxfer.trust import receipts
    from fastxfer.trust.identity import home
    from fastxfer.trust.pins import PinList

    pinned = {bytes.fromhex(fp) for fp in PinList(home()).all().values()}
    bodies = receipts.verify_file(Path(args.file), pinned)
    print(f"{len(bodies)} receipts verified, signed by a pinned server")
    return 0
