#!/usr/bin/env python3
"""Bandwidth limits (issue 14 item 5): how close a limited transfer comes to its limit.

A real server (2 workers) on 127.0.0.1 and one client; one random file
(default 64 MiB) sent and brought back through each limit of ``--limits``
(default 4M, 16M, 64M), first with the client's ``--bwlimit`` (send, get),
then with the server's ``serve --client-bwlimit`` and no client limit
(server-send, server-get); and once without any limit, for what the machine
does unlimited.  Every send lands under a folder of its own (``--dest``) and
every get in an empty folder, and every send sends new bytes (a copy of what
the server already holds would be linked there, not sent), so each run moves
the whole file; each copy's SHA-256 is checked against its source's.

The time is the command's own (send's ``--json`` ``seconds``, get's summary
line: from its connection to its end, without the interpreter's start-up),
and the wall time of the process beside it.  With a burst of 1 MiB the
limit allows (size - 1 MiB) / limit seconds at the least: ``ideal_s``.
Prints one row per direction and limit (median of ``--runs``: achieved MiB/s,
achieved / limit, time / ideal time, streams) and appends JSON lines to
perf/results/bwlimit-STAMP.jsonl.

    .venv/bin/python perf/bwlimit.py [--size 64M] [--limits 4M,16M,64M] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]

from conftest import fx, make_client, make_file, sha256_file, start_server  # noqa: E402

from fastxfer.cli.args import parse_rate, parse_size  # noqa: E402
from fastxfer.protocol.rate import burst_for  # noqa: E402

MiB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results"
GET_SUMMARY = re.compile(r"received .* in ([\d.]+) s .* over (\d+) stream")


def one_send(client, server, src: Path, dest: str, extra: list[str]) -> dict:
    started = time.monotonic()
    done = fx(client.home, "send", src, "--to", server.address, "--dest", dest, "--json", *extra, timeout=600)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"send failed ({done.returncode}): {done.stderr[-500:]}")
    report = json.loads(done.stdout)
    stored = server.root / client.name / dest / src.name
    return {"seconds": report["seconds"], "wall_s": wall, "streams": report["streams"],
            "verified": sha256_file(stored) == sha256_file(src)}


def one_get(client, server, src: Path, remote: str, out: Path, extra: list[str]) -> dict:
    started = time.monotonic()
    done = fx(client.home, "get", remote, "--from", server.address, "-o", out, *extra, timeout=600)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"get failed ({done.returncode}): {done.stderr[-500:]}")
    m = GET_SUMMARY.search(done.stdout)
    verified = sha256_file(out) == sha256_file(src)
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"seconds": float(m.group(1)) if m else wall, "wall_s": wall, "streams": int(m.group(2)) if m else 0,
            "verified": verified}


def measure(work: Path, src: Path, size: int, limit: int, side: str, runs: int, streams: list[str]) -> list[dict]:
    """Rows for one limit (0: none) applied on *side* ('client' or 'server')."""
    extra_server = ("--client-bwlimit", str(limit)) if side == "server" and limit else ()
    home = work / f"server-{side}-{limit}"
    server = start_server(home / "home", home / "root", workers=2, extra=extra_server)
    rows = []
    try:
        client = make_client(home, server, "laptop")
        flags = (["--bwlimit", str(limit)] if side == "client" and limit else []) + streams
        for direction in ("send", "get"):
            results = []
            for run in range(runs):
                if direction == "send":
                    # New bytes every run: a copy of what the server holds would be linked, not sent.
                    # (this server's first run sends src itself, which the gets then bring back)
                    fresh = src if run == 0 else make_file(work / f"send-{run}" / src.name, size, seed=run + 100)
                    results.append(one_send(client, server, fresh, f"run-{run}", flags))
                    if run:
                        shutil.rmtree(fresh.parent)
                else:
                    out = work / f"get-{side}-{limit}-{run}" / src.name
                    out.parent.mkdir()
                    results.append(one_get(client, server, src, f"run-0/{src.name}", out, flags))
            rows.append(summarize(direction, side, limit, size, results))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return rows


def summarize(direction: str, side: str, limit: int, size: int, results: list[dict]) -> dict:
    seconds = statistics.median(r["seconds"] for r in results)
    ideal = (size - burst_for(limit)) / limit if limit else None
    rate = size / seconds
    return {"direction": direction if side == "client" or not limit else f"server-{direction}",
            "limit": limit, "size": size, "runs": len(results), "median_s": seconds,
            "median_wall_s": statistics.median(r["wall_s"] for r in results),
            "all_s": [r["seconds"] for r in results], "rate_mib_s": rate / MiB,
            "rate_over_limit": rate / limit if limit else None, "ideal_s": ideal,
            "time_over_ideal": seconds / ideal if ideal else None,
            "streams": max(r["streams"] for r in results), "verified": all(r["verified"] for r in results)}


def show(rows: list[dict]) -> None:
    print("| direction | limit | median s (wall) | MiB/s | achieved / limit | time / ideal | streams | SHA-256 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        limit = f"{r['limit'] / MiB:g} MiB/s" if r["limit"] else "none"
        ratio = f"{r['rate_over_limit']:.3f}" if r["limit"] else "—"
        ideal = f"{r['time_over_ideal']:.3f}" if r["limit"] else "—"
        print(f"| {r['direction']} | {limit} | {r['median_s']:.2f} ({r['median_wall_s']:.2f}) | "
              f"{r['rate_mib_s']:.1f} | {ratio} | {ideal} | {r['streams']} | "
              f"{'ok' if r['verified'] else 'MISMATCH'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=64 * MiB)
    ap.add_argument("--limits", default="4M,16M,64M", help="comma-separated rates, as --bwlimit takes them")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", default=None, help="--streams for every command (default: automatic)")
    ap.add_argument("--sides", default="client,server", help="where the limit is: client (--bwlimit), "
                                                             "server (serve --client-bwlimit)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks
    limits = [parse_rate(x) for x in args.limits.split(",") if x]
    streams = ["--streams", args.streams] if args.streams else []
    work = Path(tempfile.mkdtemp(prefix="fx-bwlimit-", dir="/dev/shm"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    rows: list[dict] = []
    try:
        src = make_file(work / "src" / "payload.bin", args.size, seed=5)
        rows += measure(work, src, args.size, 0, "client", args.runs, streams)
        for side in args.sides.split(","):
            for limit in limits:
                rows += measure(work, src, args.size, limit, side, args.runs, streams)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    show(rows)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"bwlimit-{stamp}.jsonl", "a") as out:
        for r in rows:
            out.write(json.dumps({"stamp": stamp, **r}) + "\n")
    if not all(r["verified"] for r in rows):
        raise SystemExit("a copy did not match its source")


if __name__ == "__main__":
    main()
