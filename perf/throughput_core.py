#!/usr/bin/env python3
"""Core throughput benchmark: one large file, fastxfer against scp, on 127.0.0.1.

One run of this script:

* makes a work folder (tmpfs by default, so the disk does not set the pace),
  writes a random file into it;
* starts a private sshd and a fastxfer server on 127.0.0.1, each on a free port;
* sends the file with every tool, alternating tools run by run so that drift
  of a shared machine hits all tools alike;
* measures wall time, CPU of the client and server process trees and peak RSS,
  verifies every copy with SHA-256 after the clock has stopped;
* prints a markdown table and appends JSON lines to perf/results/.

Superseded by throughput.py (which runs this workload as `big` next to rsync and
tar | nc); kept for its results' sake. The shared pieces live in harness.py;
the names other scripts import from here are re-exported.

Only the standard library and psutil are used. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness import (  # noqa: F401  (re-exported: soak_resume, rss_bigfile, throughput_small)
    CLIENT_NAME, GiB, MiB, REPO, RESULTS, SCP_CIPHER, FastxferPeer, JsonLog, Monitor, ScpPeer,
    SetupError, Timed, Tool, TreeGroup, clear_dest, code_state, default_python, filesystem_of,
    make_random_file, parse_size, raise_on_sigterm, run_main, sha256_file, stop_process, tail,
    timed_client, wait_quiet, work_folder)


# --------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------

@dataclass
class RunResult:
    tool: str
    round: int
    ok: bool
    verified: bool
    wall_s: float
    mib_s: float
    client_cpu_s: float
    server_cpu_s: float
    client_peak_rss_mib: float
    server_peak_rss_mib: float
    error: str = ""
    other_cpu_s: float = 0.0  # busy CPU of everything else on the machine meanwhile (not this script): noise
    steal_s: float = 0.0  # CPU the hypervisor gave to other guests
    client_output: str = ""  # last lines the client printed (e.g. how many streams it chose)
    processes: dict = field(default_factory=dict)



def run_once(tool: Tool, src: Path, size: int, src_sha: str, rnd: int, timeout: float) -> RunResult:
    clear_dest(tool.dest)
    slug = re.sub(r"\W+", "_", tool.name)
    log = tool.log_dir / f"client-{rnd}-{slug}.log"
    t = timed_client(tool.client_cmd, tool.env, tool.cwd, log, tool.server.pid, timeout)
    client_tree, server, wall = t.client, t.server, t.wall_s
    ok = t.returncode == 0
    # Hash after the clock stopped: verification is ours, not part of the timing.
    verified = ok and tool.dest.exists() and sha256_file(tool.dest) == src_sha
    error = "" if ok else f"exit {t.returncode}: {tail(log)}"
    if ok and not verified:
        error = "destination missing or SHA-256 differs from source"
    client_cpu, server_cpu = client_tree.cpu_seconds(), server.cpu_seconds()
    return RunResult(
        tool.name, rnd, ok, verified, round(wall, 3), round(size / MiB / wall, 1),
        round(client_cpu, 3), round(server_cpu, 3),
        round(client_tree.peak_rss() / MiB, 1), round(server.peak_rss() / MiB, 1), error,
        round(t.other_cpu_s, 3), round(t.steal_s, 3), tail(log),
        {"client": client_tree.processes(), "server": server.processes()})



def summarize(results: list[RunResult], size: int) -> list[dict]:
    """One row per tool, in first-seen order; medians over verified runs."""
    gib = size / GiB
    names = list(dict.fromkeys(r.tool for r in results))
    rows = []
    for name in names:
        runs = [r for r in results if r.tool == name]
        good = [r for r in runs if r.verified]
        row = {"tool": name, "runs": len(runs), "verified": len(good)}
        if good:
            row.update(
                median_mib_s=statistics.median(r.mib_s for r in good),
                client_cpu_s_per_gib=statistics.median(r.client_cpu_s / gib for r in good),
                server_cpu_s_per_gib=statistics.median(r.server_cpu_s / gib for r in good),
                client_peak_rss_mib=max(r.client_peak_rss_mib for r in good),
                server_peak_rss_mib=max(r.server_peak_rss_mib for r in good))
        rows.append(row)
    scp = next((r.get("median_mib_s") for r in rows if r["tool"] == "scp"), None)
    for row in rows:
        if scp and "median_mib_s" in row:
            row["ratio_to_scp"] = row["median_mib_s"] / scp
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| tool | median MiB/s | ratio to scp | CPU s/GiB client + server | "
             "peak RSS MiB client / server | verified |",
             "| --- | ---: | ---: | ---: | ---: | :---: |"]
    for r in rows:
        if "median_mib_s" not in r:
            lines.append(f"| {r['tool']} | — | — | — | — | 0/{r['runs']} |")
            continue
        ratio = f"{r['ratio_to_scp']:.2f}" if "ratio_to_scp" in r else "—"
        c, s = r["client_cpu_s_per_gib"], r["server_cpu_s_per_gib"]
        lines.append(f"| {r['tool']} | {r['median_mib_s']:.0f} | {ratio} | "
                     f"{c:.2f} + {s:.2f} = {c + s:.2f} | "
                     f"{r['client_peak_rss_mib']:.0f} / {r['server_peak_rss_mib']:.0f} | "
                     f"{r['verified']}/{r['runs']} |")
    return "\n".join(lines)



# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=parse_size, default=GiB, help="file size, e.g. 256M, 1G (default 1G)")
    p.add_argument("--runs", type=int, default=3, help="rounds over all tools (default 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (default 1): in a VM, memory the guest never "
                        "touched costs the first writer seconds of system time")
    p.add_argument("--where", type=Path, help="parent of the work folder (default /dev/shm)")
    p.add_argument("--tools", default="scp,fastxfer", help="comma list of scp, fastxfer")
    p.add_argument("--streams", default="auto,1,2,4,8", help="fastxfer --streams values; auto = none")
    p.add_argument("--python", default=default_python(), help="python that runs fastxfer")
    p.add_argument("--code", type=Path, default=REPO,
                   help="folder holding the fastxfer package to run (default: this working tree)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per run (default: from size)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    args.code = args.code.resolve()
    return args



def start_peers(args, work: Path, src: Path, stack: contextlib.ExitStack) -> list[Tool]:
    """Start every requested server; a tool that can't run here is skipped with a reason."""
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    tools: list[Tool] = []
    for name in wanted:
        if name == "scp":
            peer = ScpPeer(work, src)
        elif name == "fastxfer":
            peer = FastxferPeer(work, src, args.python, [s.strip() for s in args.streams.split(",")],
                                args.code)
        else:
            sys.exit(f"unknown tool {name!r}")
        stack.callback(peer.stop)  # registered first: a half-started server is stopped too
        try:
            tools += peer.start()
        except SetupError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
    return tools


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jlog = JsonLog(RESULTS / f"core-{stamp}.jsonl")
    timeout = args.timeout or max(300.0, args.size / (5 * MiB))  # generous: 5 MiB/s floor
    with work_folder(args.where, args.keep) as work, contextlib.ExitStack() as stack:
        fs = filesystem_of(work)
        print(f"work folder {work} ({fs}); file {args.size / MiB:.0f} MiB; {args.runs} rounds",
              file=sys.stderr)
        src = work / "source.bin"
        src_sha = make_random_file(src, args.size)
        tools = start_peers(args, work, src, stack)
        jlog.write("meta", stamp=stamp, size=args.size, runs=args.runs, filesystem=fs,
                   cpus=psutil.cpu_count(), python=args.python, tools=[t.name for t in tools],
                   cmds={t.name: t.client_cmd for t in tools})
        if not tools:
            print("no tool could run", file=sys.stderr)
            return 1
        results = []
        for rnd in range(-args.warmup, args.runs):
            # Rotate the order each round so no tool always runs right after the same one.
            order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
            for tool in order:
                r = run_once(tool, src, args.size, src_sha, rnd, timeout)
                jlog.write("run", warmup=rnd < 0, **r.__dict__)
                if rnd >= 0:
                    results.append(r)
                label = "warm-up" if rnd < 0 else f"round {rnd + 1}"
                status = "ok" if r.verified else f"FAILED {r.error}"
                print(f"{label:8} {tool.name:16} {r.wall_s:7.2f} s {r.mib_s:7.1f} MiB/s "
                      f"cpu {r.client_cpu_s:.2f}+{r.server_cpu_s:.2f} s "
                      f"(others {r.other_cpu_s:.2f}, steal {r.steal_s:.2f})  {status}", file=sys.stderr)
        rows = summarize(results, args.size)
        for row in rows:
            jlog.write("summary", **row)
        print(f"\nfile {args.size / MiB:.0f} MiB on {fs}, {args.runs} rounds, "
              f"{psutil.cpu_count()} CPUs, results {jlog.path.relative_to(REPO)}\n")
        print(markdown_table(rows))
        others = [r.other_cpu_s for r in results]
        print(f"\nother processes' CPU during a run: median {statistics.median(others):.2f} s, "
              f"max {max(others):.2f} s; steal max {max(r.steal_s for r in results):.2f} s "
              f"(large values: a busy machine, compare wall figures with care)")
        return 0 if all(r.verified for r in results) else 1


if __name__ == "__main__":
    run_main(main)
