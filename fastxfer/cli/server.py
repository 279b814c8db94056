"""Server-side commands: serve and check."""

from __future__ import annotations

import argparse
import os
import sys
import time

from fastxfer.cli import config as conf  # `config` is cmd_serve's WorkerConfig
from fastxfer.cli.args import parse_rate, parse_size
from fastxfer.cli.report import add_verbosity, make_progress, plural, print_groups, verbosity
from fastxfer.protocol import limits
from fastxfer.errors import FxError, UsageError


def add_serve(sub) -> None:
    s = sub.add_parser("serve", help="run a backup server", epilog=SERVE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", metavar="FILE", default=None,
                   help=f"read the options from this TOML file (default: ${conf.ENV} if set); "
                        "options given here win over it")
    s.add_argument("--state-dir", default=None, metavar="DIR",
                   help="the server's identity (identity.key) and authorized clients (clients.json) "
                        "(default: $FASTXFER_HOME, else ~/.config/fastxfer)")
    s.add_argument("--root", default="./fastxfer-backup", help="folder the backups go to (default: %(default)s)")
    s.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on (default: %(default)s)")
    s.add_argument("--port", type=int, default=4455, help="port (default: %(default)s; 0 picks a free one)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    s.add_argument("--min-age", default="7d", metavar="AGE", type=age_text,
                   help="neither a client's own `forget` nor the --keep-* retention removes a snapshot younger "
                        "than this, so a stolen client cannot erase its history (default: 7d; s, m, h, d, w)")
    for kind, unit in (("last", "newest snapshots"), ("hourly", "hours"), ("daily", "days"),
                       ("weekly", "weeks"), ("monthly", "months")):
        s.add_argument(f"--keep-{kind}", type=int, default=0, metavar="N",
                       help="retention after each send: keep the N newest snapshots" if kind == "last" else
                       f"retention after each send: keep the newest snapshot of each of the last N {unit} that have one")
    s.add_argument("--keep-versions", type=int, default=None, metavar="N",
                   help="the same as --keep-last N (older copies are kept as long as a kept snapshot holds them)")
    s.add_argument("--connections", type=int, default=limits.MAX_CONNECTIONS_PER_WORKER, metavar="N",
                   help="connections each worker serves at once; at most half of them may be unauthenticated: "
                        "for a new one, the address holding the most gives up its oldest (default: %(default)s)")
    s.add_argument("--worker-timeout", type=float, default=limits.WORKER_SILENCE, metavar="SECONDS",
                   help="a worker that sends no heartbeat for this long (stopped, or stuck) is killed and "
                        "replaced; its clients' transfers resume on the others "
                        f"(default: %(default)g; at least {limits.MIN_WORKER_SILENCE:g})")
    s.add_argument("--max-staging", type=parse_size, default=1 << 40, metavar="SIZE",
                   help="bytes of unfinished transfers allowed per client (default: 1T)")
    s.add_argument("--client-share", type=share_percent, default=0.9, metavar="PERCENT",
                   help="of the free space, what one client's unfinished transfers may still take, so that "
                        "no client can make another's send fail for lack of space (default: 90)")
    s.add_argument("--hash-per-reply", type=parse_size, default=limits.HASH_PER_REPLY, metavar="SIZE",
                   help="bytes of stored files one `sums` or `send --checksum` answer re-hashes before it "
                        "answers what is done and the client asks for the rest (default: 256M)")
    s.add_argument("--frame-budget", type=parse_size, default=limits.FRAME_BUDGET_PER_CLIENT, metavar="SIZE",
                   help="memory one client's streams may hold in frame buffers, per worker; a stream that "
                        f"finds no room within {limits.FRAME_BUDGET_WAIT:g} s is refused as busy and the client "
                        "goes on with fewer streams (default: 256M, at least 33M)")
    s.add_argument("--client-bwlimit", type=parse_rate, default=0, metavar="RATE",
                   help="at most RATE bytes a second per client name, over all its streams in every worker, "
                        "both ways (what it sends, what it restores); binary suffixes: 20M = 20 MiB/s "
                        "(default: none, as 0); bursts of at most 1 MiB")
    s.add_argument("--worker-frame-budget", type=parse_size, default=limits.FRAME_BUDGET_PER_WORKER, metavar="SIZE",
                   help="memory all streams of one worker may hold in frame buffers (default: 1G, at least "
                        "--frame-budget)")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="the least severe messages logged (default: %(default)s)")
    conf.defer_defaults(s)  # last: so that a --config file can stand in for what is not given



SERVE_EPILOG = f"""\
examples:
  fastxfer serve --root /srv/backup
  fastxfer serve --root /srv/backup --keep-daily 14 --keep-weekly 8 --keep-monthly 12
  fastxfer serve --config /etc/fastxfer/server.toml
  fastxfer serve --config /etc/fastxfer/server.toml --port 0 --log-level debug
  fastxfer serve --root /srv/backup --client-bwlimit 20M   each client at most 20 MiB/s

Without --keep-*, every snapshot is kept until `fastxfer forget`. With them, each client's
snapshots are forgotten after each of its sends as `forget --prune` would, but never one
younger than --min-age, so no number of sends can push history out.

--config FILE (or ${conf.ENV}): a TOML file whose keys are these options' long names,
with dashes or underscores, and a [quotas] table of client name = size:
  root = "/srv/backup"
  state-dir = "/var/lib/fastxfer"
  port = 4455
  keep-daily = 14
  min-age = "7d"
  [quotas]
  laptop = "500G"
Relative paths are from the file's folder. `trust`, `staging`, `check` and `forget --root`
take the same --config and find the same root and state folder. A quota in the file and
one set by `trust quota` both hold: the smaller applies. The file is read at start."""


def age_text(text: str) -> str:
    from fastxfer.protocol.retention import parse_age

    try:
        parse_age(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def share_percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        value = -1.0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"not a percentage from 1 to 100: {text!r}")
    return value / 100


def add_check(sub) -> None:
    ck = sub.add_parser("check", help="server side: re-hash stored files, report any that changed on disk",
                        epilog="examples:\n"
                               "  fastxfer check --root /srv/backup              damage grouped, a summary line\n"
                               "  fastxfer check --root /srv/backup -v           every damaged copy named\n"
                               "  fastxfer check --root /srv/backup --client laptop -q   only what is damaged\n"
                               "  fastxfer check --config /etc/fastxfer/server.toml\n"
                               "  fastxfer check --root /srv/backup --json | jq '.problems[].path'",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ck.add_argument("--root", default=None, help="the server's root folder (default: the --config file's root)")
    conf.add_option(ck)
    ck.add_argument("--client", default=None, metavar="NAME", help="only this client's files")
    add_verbosity(ck, quiet="only what is damaged: no progress bar, no summary",
                  verbose="name every damaged copy (by default a cause met more than 3 times shows 3 of them)")
    ck.add_argument("--json", action="store_true",
                    help="one JSON document (counts, and each file changed or missing) instead of lines; "
                         "fields: docs/JSON.md")
    ck.add_argument("--json-lines", action="store_true",
                    help="a JSON object per file re-hashed, then the --json document as the last line")



def check_bounds(args: argparse.Namespace) -> None:
    """The serve options that bound the server's resources, each within its range."""
    if args.workers is not None and not 1 <= args.workers <= 256:
        raise UsageError("--workers must be between 1 and 256")
    if not limits.MIN_SLOTS <= args.connections <= limits.MAX_SLOTS:
        raise UsageError(f"--connections must be between {limits.MIN_SLOTS} and {limits.MAX_SLOTS}")
    if not args.worker_timeout >= limits.MIN_WORKER_SILENCE:  # also refuses nan
        raise UsageError(f"--worker-timeout must be at least {limits.MIN_WORKER_SILENCE:g} seconds")
    if args.hash_per_reply < 1:
        raise UsageError("--hash-per-reply must be at least 1 byte")
    if not limits.FRAME_BUDGET_MIN <= args.frame_budget <= args.worker_frame_budget:
        raise UsageError("--frame-budget must be at least 33M (a largest frame and its plaintext), "
                         "and --worker-frame-budget at least --frame-budget")


def serve_policy(args: argparse.Namespace):
    from fastxfer.protocol import retention
    from fastxfer.store.facade import Policy

    counts = {k: getattr(args, f"keep_{k}") for k in ("last", *retention.BUCKETS)}
    if args.keep_versions is not None:
        if args.keep_versions < 1 or counts["last"] not in (0, args.keep_versions):
            raise UsageError("--keep-versions N is the same as --keep-last N: give one of them, N at least 1")
        print(f"WARNING: --keep-versions is now --keep-last: the {args.keep_versions} newest snapshots of each "
              f"set of paths are kept, with every older copy they hold", file=sys.stderr)
        counts["last"] = args.keep_versions
    if any(n < 0 for n in counts.values()):
        raise UsageError("--keep-* counts cannot be negative")
    return Policy(max_staging_bytes=args.max_staging, client_share=args.client_share,
                  min_age_ns=retention.parse_age(args.min_age), retention=retention.Policy(**counts))


def cmd_serve(args: argparse.Namespace) -> int:
    import sqlite3

    from fastxfer.trust.identity import format_fp, load_or_create
    from fastxfer.server.master import Master, bind, setup_logging
    from fastxfer.store.facade import Store
    from fastxfer.server.worker import WorkerConfig

    settings = conf.load(conf.find(args.config))
    conf.apply(args, settings)
    setup_logging(args.log_level)
    try:
        check_bounds(args)
        policy = serve_policy(args)
    except UsageError as exc:
        if settings.path is None:
            raise
        raise UsageError(f"{exc.message} (what the command line does not give is from {settings.path})") from None
    workers = args.workers
    if workers is None:
        import psutil

        workers = psutil.cpu_count(logical=True) or 1
    state = settings.state_dir(args.state_dir)
    ident = load_or_create(state)
    try:
        store = Store(args.root, policy)  # fails early, in the master, on an unusable root
        try:
            store.init_manifest()
            cleaned = store.clean_staging(time.time())
        finally:
            store.close()  # each worker opens its own
    except (OSError, sqlite3.Error) as exc:
        raise FxError(f"cannot use {args.root} as the root: {getattr(exc, 'strerror', None) or exc}") from None
    listener = bind(args.bind, args.port)
    host, port = listener.getsockname()[:2]
    print(f"fastxfer server fingerprint: {format_fp(ident.fingerprint)}", flush=True)
    print(f"root {os.path.abspath(args.root)}, state {os.path.abspath(state)}, {workers} workers"
          + (f", {cleaned} abandoned staging files removed" if cleaned else ""), flush=True)
    print(f"listening on {host}:{port}", flush=True)
    from fastxfer.server.rates import ClientRates

    config = WorkerConfig(os.path.abspath(args.root), str(state), os.urandom(32), policy,
                          hash_budget=args.hash_per_reply, slots=args.connections,
                          frame_budget=args.frame_budget, worker_frame_budget=args.worker_frame_budget,
                          quotas=settings.quotas,
                          client_rates=ClientRates(args.client_bwlimit) if args.client_bwlimit else None)
    Master(listener, workers, config, silence=args.worker_timeout).run()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fastxfer.store.facade import STATE, Store

    root = conf.root_of(args)
    if not os.path.isfile(os.path.join(root, STATE, "manifest.sqlite")):
        raise UsageError(f"{root} is not a fastxfer root (no {STATE}/manifest.sqlite)")
    store = Store(root)
    if args.json or args.json_lines:
        from fastxfer.cli import json_out

        return json_out.check(args, store)
    level = verbosity(args)
    found: dict[str, dict[str, list[tuple[str, str]]]] = {"changed": {}, "missing": {}}
    counts = {"ok": 0, "changed": 0, "missing": 0}
    intact: set[tuple[str, bytes]] = set()  # (client, digest) of contents just re-hashed in the view
    stored = store.stored_files(args.client)
    bar = make_progress(len(stored), sys.stderr.isatty() and level >= 0, "checking stored files", unit="files")
    for client, raw, digest in stored:
        status, _ = store.verify_stored(client, raw)
        counts[status] += 1
        if status == "ok":
            intact.add((client, bytes(digest)))
        else:
            shown = f"{client}/{os.fsdecode(raw)!r}"
            found[status].setdefault("in the current view", []).append((shown, shown))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    # Then what every kept snapshot refers to: each content once, wherever it is held.
    kept = {"ok": 0, "changed": 0, "missing": 0}
    contents = store.snapshot_contents(args.client)
    bar = make_progress(len(contents), sys.stderr.isatty() and level >= 0, "checking snapshots' contents", unit="files")
    for client, digest, raw, snaps in contents:
        status = "ok" if (client, digest) in intact else store.verify_content(client, digest, raw)[0]
        kept[status] += 1
        if status != "ok":
            shown = f"{client}/{os.fsdecode(raw)!r}"
            found[status].setdefault("as kept snapshots hold them", []).append(
                (shown, f"{shown} as snapshot{'s' if len(snaps) > 1 else ''} {', '.join(map(str, snaps))} holds it"))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for status, groups in found.items():  # damage is what check reports: on standard output, even with -q
        print_groups(groups, level >= 1, status.upper(), sys.stdout)
    if level >= 0:
        print(f"{plural(counts['ok'], 'file')} intact, {counts['changed']} changed on disk, {counts['missing']} missing; "
              f"of what kept snapshots hold, {kept['ok']} contents intact, {kept['changed']} changed, "
              f"{kept['missing']} missing")
    if counts["changed"] or counts["missing"]:
        print("to repair them, send those files again from the client with --checksum", file=sys.stderr)
    return 0 if counts["changed"] == counts["missing"] == kept["changed"] == kept["missing"] == 0 else 5
