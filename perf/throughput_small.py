#!/usr/bin/env python3
"""Small-files benchmark: a tree of many small files, and one 1-byte file, on 127.0.0.1.

Two workloads, built on harness.py (the private sshd, the fastxfer server,
the process-tree measurement). throughput.py runs both next to the big-file
and many-clients workloads; this script stays for its results' sake:

* tree: 10,000 files of 16 KiB in 100 folders (random bytes, written once),
  sent by `rsync -a` over the private sshd, by `tar -cf - | ssh "tar -xf -"`,
  and by `fastxfer send DIR` (automatic streams; small files travel in bundles);
* byte: one file of 1 byte, sent by scp, rsync and fastxfer: what is left is
  process start-up, the handshake and one round of the protocol.

Every run starts from a fresh destination (the copy is deleted, for fastxfer
the server restarts on an empty root: no files, no manifest), tools alternate
run by run, each run is timed from process start to exit and then verified:
every destination file's SHA-256 against the source's, and no file missing or
extra. Prints markdown tables (medians) and appends JSON lines to
perf/results/small-STAMP.jsonl.

Only the standard library and psutil are used. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

import harness as core
from harness import MiB, REPO, RESULTS, SetupError, code_state

KiB = 1 << 10


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------

@dataclass
class Contender:
    """One tool sending one workload: a client command against a running server."""
    name: str
    cmd: list[str]
    env: dict[str, str]
    landing: Path  # the folder where the sent files appear (paths relative to it)
    fresh: Callable[[], None]  # empty the destination before a run (untimed)
    server_pid: Callable[[], int]  # root of the server's process tree, now
    log_dir: Path
    cwd: Path = REPO


@dataclass
class Peers:
    """The servers, started once; every contender runs against one of them."""
    work: Path
    ssh: core.ScpPeer | None = None
    fx: core.FastxferPeer | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def ssh_cmd(self) -> list[str]:
        return ["ssh", *self.ssh.ssh_options()]

    def sshd_pid(self) -> int:
        return self.ssh.proc.pid

    def fx_pid(self) -> int:
        return self.fx.proc.pid

    def fx_fresh(self) -> None:
        self.fx.restart()

    def fx_contender(self, name: str, src: Path, landing: Path) -> Contender:
        return Contender(name, self.fx.send_cmd(src), self.fx.client_env(), landing,
                         self.fx_fresh, self.fx_pid, self.fx.base, cwd=self.fx.code)

    def rsync(self, name: str, src: str, dest: Path, create: bool) -> Contender:
        ssh = shlex.join(self.ssh_cmd())
        cmd = ["rsync", "-a", "-e", ssh, src, f"root@127.0.0.1:{dest}/"]
        return Contender(name, cmd, dict(os.environ), dest,
                         lambda: core.empty_folder(dest, create), self.sshd_pid, self.ssh.conf_dir)


def start_peers(args, work: Path, byte_src: Path, stack: contextlib.ExitStack) -> tuple[Peers, list[core.Tool]]:
    """Start the private sshd and the fastxfer server (each only if a tool needs it)."""
    peers = Peers(work)
    wanted = set(args.tree_tools.split(",")) | set(args.byte_tools.split(","))
    scp_tools: list[core.Tool] = []
    if wanted & {"scp", "rsync", "tar"}:
        peer = core.ScpPeer(work, byte_src)
        stack.callback(peer.stop)  # registered first: a half-started server is stopped too
        try:
            scp_tools = peer.start()  # the scp command sends byte_src
            peers.ssh = peer
        except SetupError as e:
            peers.skipped["ssh"] = str(e)
            print(f"skipping scp, rsync and tar: {e}", file=sys.stderr)
        if peers.ssh and not shutil.which("rsync"):
            peers.skipped["rsync"] = "rsync not installed"
    if "fastxfer" in wanted:
        peer = core.FastxferPeer(work, byte_src, args.python, ["auto"], args.code)
        stack.callback(peer.stop)
        try:
            peer.start()
            peers.fx = peer
        except SetupError as e:
            peers.skipped["fastxfer"] = str(e)
            print(f"skipping fastxfer: {e}", file=sys.stderr)
    return peers, scp_tools


def tree_contenders(peers: Peers, names: list[str], tree: Path) -> list[Contender]:
    dest = peers.work / "dest"
    dest.mkdir(exist_ok=True)
    out = []
    for name in names:
        if name in ("rsync", "tar") and (not peers.ssh or name in peers.skipped):
            continue
        if name == "rsync":  # SRC/ DEST/: the tree's files land directly in DEST
            out.append(peers.rsync("rsync -a", f"{tree}/", dest / "rsync-tree", create=False))
        elif name == "tar":  # the tree lands as DEST/<tree name>
            d = dest / "tar-tree"
            remote = f"tar -C {shlex.quote(str(d))} -xf -"
            pipeline = (f"tar -C {shlex.quote(str(tree.parent))} -cf - {shlex.quote(tree.name)} | "
                        f"{shlex.join(peers.ssh_cmd())} root@127.0.0.1 {shlex.quote(remote)}")
            out.append(Contender("tar over ssh", ["sh", "-c", pipeline], dict(os.environ), d / tree.name,
                                 lambda d=d: core.empty_folder(d), peers.sshd_pid, peers.ssh.conf_dir))
        elif name == "fastxfer" and peers.fx:  # DIR (no slash): lands as <root>/<client>/<tree name>
            out.append(peers.fx_contender("fastxfer (auto)", tree,
                                          peers.fx.root / core.CLIENT_NAME / tree.name))
        elif name not in ("rsync", "tar", "fastxfer"):
            sys.exit(f"unknown tree tool {name!r} (rsync, tar, fastxfer)")
    return out


def byte_contenders(peers: Peers, names: list[str], src: Path, scp_tools: list[core.Tool]) -> list[Contender]:
    dest = peers.work / "dest"
    dest.mkdir(exist_ok=True)
    out = []
    for name in names:
        if name in ("scp", "rsync") and (not peers.ssh or name in peers.skipped):
            continue
        if name == "scp":  # throughput_core's scp command (aes128-gcm, BatchMode), into DEST/
            tool = scp_tools[0]
            d = tool.dest.parent
            out.append(Contender("scp", tool.client_cmd, tool.env, d, lambda d=d: core.empty_folder(d),
                                 peers.sshd_pid, tool.log_dir))
        elif name == "rsync":
            out.append(peers.rsync("rsync -a", str(src), dest / "rsync-byte", create=True))
        elif name == "fastxfer" and peers.fx:  # a fresh root holds only this file
            out.append(peers.fx_contender("fastxfer (auto)", src, peers.fx.root / core.CLIENT_NAME))
        elif name not in ("scp", "rsync", "fastxfer"):
            sys.exit(f"unknown 1-byte tool {name!r} (scp, rsync, fastxfer)")
    return out


# --------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------

def run_once(c: Contender, workload: str, expected: dict[str, str], rnd: int, timeout: float) -> dict:
    c.fresh()
    os.sync()  # the deletions' writeback must not land in the timing (disk runs)
    slug = re.sub(r"\W+", "_", c.name).strip("_")
    log = c.log_dir / f"{workload}-{rnd}-{slug}.log"
    t = core.timed_client(c.cmd, c.env, c.cwd, log, c.server_pid(), timeout)
    # Verify after the clock stopped: hashing is ours, not part of the timing.
    error = core.verify(c.landing, expected) if t.returncode == 0 else f"exit {t.returncode}: {core.tail(log)}"
    return {
        "workload": workload, "tool": c.name, "round": rnd, "ok": t.returncode == 0,
        "verified": not error, "error": error, "wall_s": round(t.wall_s, 4),
        "files_per_s": round(len(expected) / t.wall_s, 1),
        "client_cpu_s": round(t.client.cpu_seconds(), 3), "server_cpu_s": round(t.server.cpu_seconds(), 3),
        "client_peak_rss_mib": round(t.client.peak_rss() / MiB, 1),
        "server_peak_rss_mib": round(t.server.peak_rss() / MiB, 1),
        "other_cpu_s": round(t.other_cpu_s, 3), "steal_s": round(t.steal_s, 3),
        "bench_cpu_s": round(t.bench_cpu_s, 3), "client_output": core.tail(log),
        "processes": {"client": t.client.processes(), "server": t.server.processes()},
    }


def run_workload(workload: str, contenders: list[Contender], expected: dict[str, str],
                 runs: int, warmup: int, timeout: float, jlog: core.JsonLog) -> list[dict]:
    results = []
    for rnd in range(-warmup, runs):
        # Rotate the order each round so no tool always runs right after the same one.
        k = rnd % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            r = run_once(c, workload, expected, rnd, timeout)
            jlog.write("run", warmup=rnd < 0, **r)
            if rnd >= 0:
                results.append(r)
            label = "warm-up" if rnd < 0 else f"round {rnd + 1}"
            status = "ok" if r["verified"] else f"FAILED {r['error']}"
            rate = f"{r['files_per_s']:7.0f} files/s " if workload == "tree" else ""
            print(f"{workload:5} {label:8} {c.name:16} {r['wall_s']:7.3f} s {rate}"
                  f"cpu {r['client_cpu_s']:.2f}+{r['server_cpu_s']:.2f} s "
                  f"(others {r['other_cpu_s']:.2f}, steal {r['steal_s']:.2f})  {status}", file=sys.stderr)
    return results


def summarize(results: list[dict], baseline: str) -> list[dict]:
    """One row per tool, in first-seen order; medians over verified runs; ratio =
    the baseline's median wall time ÷ this tool's (> 1: faster than the baseline)."""
    rows = []
    for name in dict.fromkeys(r["tool"] for r in results):
        runs = [r for r in results if r["tool"] == name]
        good = [r for r in runs if r["verified"]]
        row = {"workload": runs[0]["workload"], "tool": name, "runs": len(runs), "verified": len(good)}
        if good:
            walls = [r["wall_s"] for r in good]

            def med(key: str) -> float:
                return statistics.median(r[key] for r in good)
            row.update(median_wall_s=statistics.median(walls), min_wall_s=min(walls), max_wall_s=max(walls),
                       median_files_per_s=med("files_per_s"), client_cpu_s=med("client_cpu_s"),
                       server_cpu_s=med("server_cpu_s"),
                       client_peak_rss_mib=max(r["client_peak_rss_mib"] for r in good),
                       server_peak_rss_mib=max(r["server_peak_rss_mib"] for r in good),
                       median_other_cpu_s=med("other_cpu_s"), max_other_cpu_s=max(r["other_cpu_s"] for r in good))
        rows.append(row)
    base = next((r.get("median_wall_s") for r in rows if r["tool"].startswith(baseline)), None)
    for row in rows:
        if base and "median_wall_s" in row:
            row[f"speed_vs_{baseline}"] = base / row["median_wall_s"]
    return rows


def markdown_table(rows: list[dict], baseline: str, per_second: bool) -> str:
    head = ["tool", "median wall s (min–max)"] + (["files/s"] if per_second else []) + [
        f"speed vs {baseline} (× faster)", "CPU s client + server", "peak RSS MiB client / server", "verified"]
    lines = ["| " + " | ".join(head) + " |",
             "| --- |" + " ---: |" * (len(head) - 2) + " :---: |"]
    for r in rows:
        if "median_wall_s" not in r:
            cells = [r["tool"]] + ["—"] * (len(head) - 2) + [f"0/{r['runs']}"]
        else:
            d = 2 if r["median_wall_s"] >= 1 else 3
            ratio = r.get(f"speed_vs_{baseline}")
            c, s = r["client_cpu_s"], r["server_cpu_s"]
            cells = [r["tool"], f"{r['median_wall_s']:.{d}f} ({r['min_wall_s']:.{d}f}–{r['max_wall_s']:.{d}f})"]
            cells += [f"{r['median_files_per_s']:,.0f}"] if per_second else []
            cells += [f"{ratio:.2f}" if ratio else "—", f"{c:.2f} + {s:.2f} = {c + s:.2f}",
                      f"{r['client_peak_rss_mib']:.0f} / {r['server_peak_rss_mib']:.0f}",
                      f"{r['verified']}/{r['runs']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed rounds of the tree workload (default 5)")
    p.add_argument("--byte-runs", type=int, default=5, help="timed rounds of the 1-byte workload (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before each workload (default 1)")
    p.add_argument("--files", type=int, default=10_000, help="files in the tree (default 10000)")
    p.add_argument("--dirs", type=int, default=100, help="folders they are spread over (default 100)")
    p.add_argument("--file-size", type=core.parse_size, default=16 * KiB, help="size of each (default 16K)")
    p.add_argument("--tree-tools", default="rsync,tar,fastxfer", help="comma list of rsync, tar, fastxfer")
    p.add_argument("--byte-tools", default="scp,rsync,fastxfer", help="comma list of scp, rsync, fastxfer")
    p.add_argument("--workloads", default="tree,byte", help="comma list of tree, byte")
    p.add_argument("--where", type=Path, help="parent of the work folder (default /dev/shm)")
    p.add_argument("--python", default=core.default_python(), help="python that runs fastxfer")
    p.add_argument("--code", type=Path, default=REPO,
                   help="folder holding the fastxfer package to run (default: this working tree; "
                        "e.g. a `git archive` of one commit, so edits during the run don't mix in)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run before it is killed (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    args.code = args.code.resolve()
    if min(args.runs, args.byte_runs) < 1 or args.warmup < 0 or not 1 <= args.dirs <= args.files:
        p.error("need --runs, --byte-runs >= 1, --warmup >= 0 and 1 <= --dirs <= --files")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    core.raise_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jlog = core.JsonLog(RESULTS / f"small-{stamp}.jsonl")
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    with core.work_folder(args.where, args.keep) as work, contextlib.ExitStack() as stack:
        fs = core.filesystem_of(work)
        src = work / "src"
        tree, byte_src = src / "tree", src / "byte.bin"
        t0 = time.monotonic()
        expected_tree = core.make_tree(tree, args.files, args.dirs, args.file_size) if "tree" in workloads else {}
        byte_src.write_bytes(os.urandom(1))
        expected_byte = {byte_src.name: core.sha256_file(byte_src)}
        print(f"work folder {work} ({fs}); tree of {args.files} files × {args.file_size} B in {args.dirs} "
              f"folders written in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        peers, scp_tools = start_peers(args, work, byte_src, stack)
        plan = {}
        if "tree" in workloads:
            plan["tree"] = (tree_contenders(peers, args.tree_tools.split(","), tree), expected_tree, args.runs, "rsync")
        if "byte" in workloads:
            plan["byte"] = (byte_contenders(peers, args.byte_tools.split(","), byte_src, scp_tools),
                            expected_byte, args.byte_runs, "scp")
        code = code_state(args.code)
        jlog.write("meta", stamp=stamp, filesystem=fs, cpus=psutil.cpu_count(), python=args.python,
                   files=args.files, dirs=args.dirs, file_size=args.file_size, runs=args.runs,
                   byte_runs=args.byte_runs, warmup=args.warmup, loadavg=os.getloadavg(),
                   versions=core.tool_versions(), code=code, skipped=peers.skipped,
                   cmds={w: {c.name: c.cmd for c in p[0]} for w, p in plan.items()})
        all_ok, tables = True, []
        for workload, (contenders, expected, runs, baseline) in plan.items():
            if not contenders:
                print(f"{workload}: no tool could run", file=sys.stderr)
                all_ok = False
                continue
            results = run_workload(workload, contenders, expected, runs, args.warmup, args.timeout, jlog)
            rows = summarize(results, baseline)
            for row in rows:
                jlog.write("summary", **row)
            all_ok &= all(r["verified"] for r in results)
            others = [r["other_cpu_s"] for r in results]
            what = (f"{args.files} files × {args.file_size // KiB} KiB in {args.dirs} folders"
                    if workload == "tree" else "1 file of 1 byte")
            tables.append(f"### {workload}: {what}, median of {runs} rounds ({args.warmup} warm-up)\n\n"
                          + markdown_table(rows, baseline, per_second=workload == "tree")
                          + f"\n\nother processes' CPU during a run: median {statistics.median(others):.2f} s, "
                            f"max {max(others):.2f} s; steal max {max(r['steal_s'] for r in results):.2f} s")
        code_after = code_state(args.code)
        changed = code_after["fastxfer_sha256"] != code["fastxfer_sha256"]
        jlog.write("end", code=code_after, code_changed_during_run=changed)
        print(f"\n{fs}, {psutil.cpu_count()} CPUs, results {jlog.path.relative_to(REPO)}; fastxfer from "
              f"{args.code} (content {code['fastxfer_sha256']}, HEAD {code['repo_head']}"
              f"{', fastxfer/ with uncommitted changes' if code['repo_fastxfer_dirty'] else ''})"
              + ("; FASTXFER CODE CHANGED DURING THE RUN" if changed else "") + "\n")
        print("\n\n".join(tables))
        return 0 if all_ok else 1


if __name__ == "__main__":
    core.run_main(main)
