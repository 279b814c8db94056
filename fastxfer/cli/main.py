"""Command line: the only place that prints to the user and exits.

Exit codes: 0 done and verified; 1 unexpected failure; 2 usage; 3 trust
(server not pinned or not matching, client not authorized); 4 connection;
5 verification; 6 refused by the server (path, space, limits); 7 a local
file unreadable or changed while sent; 8 protocol violation by the peer;
9 some files not stored (when several files failed for different causes,
or some were stored); 10 server busy or shutting down, try again; 11 a
server worker could not start (serve).
"""

from __future__ import annotations

import argparse
import os
import sys

from fastxfer.cli import pair, restore, send, server, snapshots, staging, trust
from fastxfer.cli.args import EPILOG
from fastxfer.errors import FxError

COMMANDS = {"id": trust.cmd_id, "ls": restore.cmd_ls, "get": restore.cmd_get, "sums": restore.cmd_sums,
            "snapshots": snapshots.cmd_snapshots, "forget": snapshots.cmd_forget,
            "diff": snapshots.cmd_diff, "check": server.cmd_check, "receipt": trust.cmd_receipt, "trust": trust.cmd_trust,
            "pin": trust.cmd_pin, "pins": trust.cmd_pin, "unpin": trust.cmd_pin,
            "serve": server.cmd_serve, "send": send.cmd_send, "staging": staging.cmd_staging,
            "invite": pair.cmd_invite, "pair": pair.cmd_pair}
# In the order `fastxfer --help` lists them.
PARSERS = [trust.add_id, server.add_serve, send.add_send, trust.add_trust, restore.add_ls, restore.add_get,
           snapshots.add_snapshots, snapshots.add_diff, snapshots.add_forget, restore.add_sums, server.add_check, staging.add_staging, trust.add_receipt, trust.add_pins,
           pair.add_invite, pair.add_pair]
# Which of them defines each command: a run builds only its own command's
# parser (all ten cost ~2 ms of every command's start-up).
DEFINED_BY = {"id": trust.add_id, "serve": server.add_serve, "send": send.add_send, "trust": trust.add_trust,
              "ls": restore.add_ls, "get": restore.add_get, "sums": restore.add_sums, "check": server.add_check,
              "snapshots": snapshots.add_snapshots, "forget": snapshots.add_forget, "diff": snapshots.add_diff,
              "receipt": trust.add_receipt, "staging": staging.add_staging, "pin": trust.add_pins, "pins": trust.add_pins, "unpin": trust.add_pins,
              "invite": pair.add_invite, "pair": pair.add_pair}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of *command* alone, or of every command (for --help, or a
    name that is not one, so argparse lists the choices)."""
    p = argparse.ArgumentParser(
        prog="fastxfer",
        description="Back files up to a fastxfer server over parallel encrypted "
        "streams, verified by SHA-256.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    for add in [DEFINED_BY[command]] if command in DEFINED_BY else PARSERS:
        add(sub)
    return p


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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    if "--json" in argv or "--json-lines" in argv:  # only then is json_out loaded
        from fastxfer.cli import json_out

        args = json_out.parse(parser, argv)
    else:
        args = parser.parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except FxError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        json_failed(args, exc.exit_code, exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        said = f"interrupted; {INTERRUPTED.get(args.cmd, 'nothing was changed')}"
        print(f"ERROR: {said}", file=sys.stderr)
        json_failed(args, 130, said)
        return 130


def json_failed(args: argparse.Namespace, code: int, message: str) -> None:
    if getattr(args, "json", False) or getattr(args, "json_lines", False):
        from fastxfer.cli import json_out

        json_out.failed(args, code, message)


INTERRUPTED = {  # what an interrupted command leaves, and what to do next
    "send": "run the same send again to resume: it sends only what the server has not made durable",
    "get": "the files restored so far are in place, whole; run the same get again: it skips them "
           "(same size and time) and brings the rest",
    "serve": "the server stopped",
}
