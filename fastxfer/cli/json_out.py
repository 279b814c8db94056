"""Documents for scripts: ``--json`` and ``--json-lines`` (docs/JSON.md names every field).

With --json a command writes exactly one JSON document on standard output,
and nothing else there: its human lines are not printed, its warnings stay
on standard error, its progress bar is off.  With --json-lines (send, get,
check) it writes one JSON object per line as each entry's outcome becomes
final, then that same document as the last line.  A command that ends in
an error still writes one document, {"error": {...}}, as the ERROR line on
standard error says it.  The exit codes are those of the human form.

The documents are built from what the commands computed (their results,
outcomes and counts); nothing here asks the server or the disk again,
except `check`'s loop, which is the store's own.
"""

from __future__ import annotations

import _thread  # not threading: every command's start-up would pay for it
import sys

VERSION = 1  # "fastxfer_json": raised when a field changes meaning or goes away, not when one is added
KINDS = {1: "failure", 2: "usage", 3: "trust", 4: "connection", 5: "verification", 6: "refused",
         7: "local_file", 8: "protocol", 9: "partial", 10: "busy", 11: "worker_start", 130: "interrupted"}
FLAGS = ("--json", "--json-lines")
_LOCK = _thread.allocate_lock()  # lines come from the engine's threads and the main one


def wanted(args) -> bool:
    return bool(getattr(args, "json", False) or getattr(args, "json_lines", False))


def command_of(args) -> str:
    return f"trust {args.trust_cmd}" if args.cmd == "trust" else args.cmd


def write(obj: dict, pretty: bool = False) -> bool:
    """One JSON text on standard output, flushed (a script reads each line as it comes).
    Names that are not UTF-8 are in Python's surrogateescape form, as \\udcXX escapes."""
    import json

    text = json.dumps(obj, indent=1 if pretty else None, ensure_ascii=True)
    with _LOCK:
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            return False  # the reader went away: the command still ends with its own code
    return True


def document(args, body: dict) -> None:
    """The command's one document (with --json-lines: its last line, the summary)."""
    written(command_of(args), body, bool(getattr(args, "json_lines", False)))


def written(command: str, body: dict, lines: bool = False) -> None:
    head = {"fastxfer_json": VERSION, "command": command, **({"event": "summary"} if lines else {})}
    write({**head, **body}, pretty=not lines)


def error_body(code: int, message: str) -> dict:
    return {"exit_code": code, "error": {"code": code, "kind": KINDS.get(code, "failure"), "message": message}}


def failed(args, code: int, message: str, **extra) -> None:
    """The document of a command that ended in an error (nothing when no JSON was asked for)."""
    if args is None or not wanted(args):
        return
    lines = bool(getattr(args, "json_lines", False))
    write({"fastxfer_json": VERSION, "command": command_of(args), **({"event": "error"} if lines else {}),
           **error_body(code, message), **extra}, pretty=not lines)


def parse(parser, argv: list[str]):
    """parse_args; a command line argparse refuses (exit 2) with a JSON flag
    among its words still gets its error document."""
    import contextlib
    import io

    words = argv[: argv.index("--")] if "--" in argv else argv
    if not any(w in FLAGS for w in words):
        return parser.parse_args(argv)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2:
            said = [line for line in err.getvalue().splitlines() if ": error: " in line]
            message = said[-1].split(": error: ", 1)[1] if said else "the command line is not valid"
            write({"fastxfer_json": VERSION, "command": argv[0] if argv else None, **error_body(2, message)},
                  pretty=True)
        raise
    finally:
        sys.stderr.write(err.getvalue())


# ------------------------------------------------------------------ shared


def error_of(exc) -> dict | None:
    if exc is None:
        return None
    return {"code": exc.exit_code, "kind": KINDS.get(exc.exit_code, "failure"), "message": exc.message}


def cause(message: str, *names: str) -> str:
    """A failure's cause without the path it starts with, so one cause groups many files."""
    from fastxfer.client.walk import display

    for name in names:
        for shown in (name, display(name)):
            if shown and message.startswith(shown + ": "):
                return message[len(shown) + 2 :]
    return message


def groups(failures: list[tuple[str, str, object]]) -> list[dict]:
    """[(path, cause, error)] -> one group per (cause, exit code), largest first."""
    out: dict[tuple[str, int], dict] = {}
    for path, why, exc in failures:
        key = (why, exc.exit_code)
        group = out.setdefault(key, {"cause": why, "kind": KINDS.get(exc.exit_code, "failure"),
                                     "exit_code": exc.exit_code, "count": 0, "paths": []})
        group["count"] += 1
        group["paths"].append(path)
    return sorted(out.values(), key=lambda g: -g["count"])


def tally(items, key) -> dict:
    counts: dict = {}
    for item in items:
        k = key(item)
        counts[k] = counts.get(k, 0) + 1
    return counts


# ------------------------------------------------------------------ --json-lines


class Lines:
    """The engine's sink under --json-lines: a line per entry as it settles
    (client/events.Settled).  A send's file that changed while read is held
    back: the next round sends it again, and only its last outcome is told."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self.held: list = []

    def __call__(self, event) -> None:
        from fastxfer.client import events
        from fastxfer.errors import ChangedError

        if not isinstance(event, events.Settled):
            return
        item = event.result
        if hasattr(item, "src"):  # a send's Result
            if item.status == "failed" and isinstance(item.error, ChangedError):
                with _LOCK:
                    self.held.append(item)
                return
            write({"event": "file", **send_entry(item)})
        else:  # a get's Outcome
            write({"event": "file", **({"root": self.root} if self.root is not None else {}), "path": item.path,
                   "status": item.status, **({"error": error_of(item.error)} if item.error else {})})

    def flush(self, results: list) -> None:
        """The held-back files whose failure is final: those the send's results still hold."""
        final = {id(r) for r in results}
        for item in self.held:
            if id(item) in final:
                write({"event": "file", **send_entry(item)})
        self.held = []


def lines(args, root: str | None = None) -> Lines | None:
    return Lines(root) if getattr(args, "json_lines", False) else None


def send_entry(r) -> dict:
    out = {"path": r.src.remote, "local": r.src.local, "kind": r.src.kind, "status": r.status}
    if r.src.kind == "file":
        out["size"] = r.src.size
    for key, value in (("hardlink", r.src.hardlink), ("version", r.version),
                       ("sha256", r.sha256.hex() if r.sha256 else None), ("error", error_of(r.error))):
        if value is not None:
            out[key] = value
    if r.changed:
        out["changed_while_read"] = True
    if r.by_other:
        out["by_other"] = True
    return out


# ------------------------------------------------------------------ send, get


def send(args, results: list, skipped: list, sender, elapsed: float, snap, name: str, code: int,
         excluded: int = 0) -> int:
    """send's document; *code* is the exit code of a real send (a dry run's is its own rule);
    *excluded*: entries the filters left out."""
    if args.dry_run:
        code = 0 if not skipped and all(r.status != "failed" for r in results) else 9
    files = [r for r in results if r.src.kind == "file"]
    failed_ = [r for r in results if r.status == "failed"]
    body = {
        "exit_code": code, "dry_run": bool(args.dry_run), "client": name,
        "snapshot": snap.id if snap else None, "snapshot_state": snap.state if snap else None,
        "files": len(files),
        "stored": sum(1 for r in files if r.status == "stored"),
        "unchanged": sum(1 for r in files if r.status == "unchanged"),
        "failed": len(failed_),
        "recorded": sum(1 for r in results if r.status == "recorded"),
        "skipped": len(skipped),
        "excluded": excluded,
        "deleted": snap.removed if snap else 0,
        "by_status": tally(results, lambda r: r.status),
        "by_kind": {kind: tally([r for r in results if r.src.kind == kind], lambda r: r.status)
                  for kind in sorted({r.src.kind for r in results})},
        "bytes": sum(r.src.size for r in files if r.status in ("stored", "unchanged")),
        "bytes_sent": sender.bytes_sent,
        "resumed_bytes": sender.bytes_resumed,
        "linked_bytes": sender.bytes_linked,
        "streams": sender.streams_opened,
        "seconds": round(elapsed, 3),
        "changed_while_read": [r.src.remote for r in results if r.changed],
        "failures": groups([(r.src.remote, cause(r.error.message, r.src.local, r.src.remote), r.error)
                            for r in failed_ if r.error]),
        "errors": [r.error.message for r in failed_ if r.error],
        "skipped_paths": [{"path": s.local, "reason": s.reason} for s in skipped],
    }
    if args.dry_run:
        would = [r for r in results if r.status == "send"]
        body["would_send"] = len(would)
        body["would_send_bytes"] = sum(r.src.size for r in would if r.src.kind == "file")
    document(args, body)
    return code


def get(args, outcomes: list, received: int, elapsed: float, streams_used: int) -> int:
    """get's document and exit code (the rule of cli/restore.report_get)."""
    from fastxfer.errors import FxError, aggregate

    bad = [o for o in outcomes if o.status not in ("restored", "unchanged", "recorded", "unsafe", "deleted")]
    failure = aggregate([o.error or FxError(f"{o.path}: not restored") for o in bad], len(outcomes))
    code = failure.exit_code if failure else 0
    counts = tally(outcomes, lambda o: o.status)
    document(args, {
        "exit_code": code, "paths": args.paths, "output": args.output, "at": args.at,
        "entries": len(outcomes),
        **{status: counts.get(status, 0)
           for status in ("restored", "unchanged", "recorded", "unsafe", "deleted", "skipped", "failed")},
        "not_restored": len(bad),
        "bytes_received": received, "streams": streams_used, "seconds": round(elapsed, 3),
        "left_out": [o.path for o in outcomes if o.status == "unsafe"],
        "failures": groups([(o.path, cause(o.error.message if o.error else "not restored", o.path),
                             o.error or FxError("not restored")) for o in bad]),
    })
    return code


# ------------------------------------------------------------------ listings


def sums(args, listed: list[dict], bad: list[dict]) -> int:
    code = 5 if bad else 0
    document(args, {"exit_code": code, "path": args.path, "at": args.at, "ok": len(listed), "bad": len(bad),
                    "files": listed, "problems": bad})
    return code


def trust_list(args, clients) -> None:
    from fastxfer.trust.identity import format_fp

    document(args, {"clients": [{"name": name, "fingerprint": format_fp(bytes.fromhex(fp)), "fingerprint_hex": fp,
                                 "quota": clients.quota_of(name)}
                                for fp, name in sorted(clients.all().items(), key=lambda kv: (kv[1], kv[0]))]})


def pins(args, pinned: dict[str, str]) -> None:
    from fastxfer.trust.identity import format_fp

    document(args, {"pins": [{"address": addr, "fingerprint": format_fp(bytes.fromhex(fp)), "fingerprint_hex": fp}
                             for addr, fp in sorted(pinned.items())]})


# ------------------------------------------------------------------ check


def check(args, store) -> int:
    """check's document (and with --json-lines a line per file and per kept content), exit 5 on any damage."""
    import os

    each = bool(getattr(args, "json_lines", False))
    counts = {"ok": 0, "changed": 0, "missing": 0}
    kept = dict(counts)
    problems = []
    intact: set[tuple[str, bytes]] = set()
    for client, raw, digest in store.stored_files(args.client):
        status, _ = store.verify_stored(client, raw)
        counts[status] += 1
        path = os.fsdecode(raw)
        if status == "ok":
            intact.add((client, bytes(digest)))
        else:
            problems.append({"client": client, "path": path, "status": status, "snapshots": None})
        if each:
            write({"event": "file", "client": client, "path": path, "status": status})
    for client, digest, raw, snaps in store.snapshot_contents(args.client):
        status = "ok" if (client, digest) in intact else store.verify_content(client, digest, raw)[0]
        kept[status] += 1
        path = os.fsdecode(raw)
        if status != "ok":
            problems.append({"client": client, "path": path, "status": status, "snapshots": list(snaps)})
        if each:
            write({"event": "content", "client": client, "path": path, "status": status, "snapshots": list(snaps)})
    code = 0 if counts["changed"] == counts["missing"] == kept["changed"] == kept["missing"] == 0 else 5
    document(args, {"exit_code": code, "root": os.path.abspath(store.root), "client": args.client,
                    "files": counts, "snapshot_contents": kept, "problems": problems})
    return code
