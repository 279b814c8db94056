#!/usr/bin/env python3
"""Throughput benchmark: fastxfer and its peers on the same workloads, on 127.0.0.1.

One run of this script times, on 127.0.0.1 only, on one filesystem (default
/dev/shm when it is a tmpfs, `--where DIR` otherwise):

* big: one large random file (default 1 GiB) sent by `scp -c aes128-gcm@openssh.com`
  and `rsync -a` over a private sshd, `tar -c | nc` into `nc -l | tar -x` (the
  unencrypted reference), `dd bs=16M conv=fdatasync` of the file on the same
  machine (the physical reference: what the disk takes to make it durable), and
  fastxfer with its automatic stream count and with `--streams` 1, 2, 4 and 8;
* tree: 10,000 random files of 16 KiB in 100 folders sent by the same fastxfer
  set, `rsync -a`, `tar -c | ssh "tar -x"` and `tar | nc`;
* byte: one file of 1 byte sent by scp, rsync and fastxfer (automatic);
* restore: the tree brought back: `rsync -a` and `ssh "tar -c" | tar -x` pulling
  it through the private sshd, and `fastxfer get` (automatic) of the tree a
  fastxfer server holds (sent once, untimed, before the runs);
* clients: 16 fastxfer clients (16 identities, each trusted by one server)
  sending their own 128 MiB file at once, against one client sending 128 MiB
  alone: aggregate MiB/s and its ratio to the lone client's (target >= 90 %).

Within a workload the tools alternate run by run (the order rotates each round),
after `--warmup` untimed rounds; every run starts from an empty destination (the
fastxfer server restarts on an empty root) and is timed from the client's start
to the exit of the last client (and of the `nc -l | tar -x` receiver). After the
clock stops, every destination file's SHA-256 is compared with its source's and
no file may be missing or extra. CPU seconds and peak RSS of the client and
server process trees are sampled with psutil (perf/harness.py).

Prints markdown tables (medians over `--runs`), the big-file automatic row as a
share of the CPU ceiling (perf/ceiling.py, or `--ceiling MiB/s`), whether the
automatic stream count is within 15 % of the best fixed count; writes JSON lines
to perf/results/throughput-STAMP.jsonl and a chart, throughput-STAMP.svg, next
to it. A peer that is not installed (scp, rsync, sshd, nc) is skipped with a
one-line reason. Everything started is stopped and the work folder removed, also
on Ctrl-C or SIGTERM.

Only the standard library and psutil are used. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Callable

import psutil

import harness as h
from harness import GiB, MiB, REPO, RESULTS, ClientRun, SetupError

KiB = 1 << 10
WORKLOADS = ("big", "tree", "byte", "restore", "clients")
TOOLS = ("scp", "rsync", "tar-ssh", "tar-nc", "dd", "fastxfer")
BASELINE = {"big": "scp", "tree": "rsync -a", "byte": "scp", "restore": "rsync -a (pull)",
            "clients": "fastxfer, 1 client"}
WORKLOAD_TOOLS = {"big": ("scp", "rsync", "tar-nc", "dd", "fastxfer"),
                  "tree": ("rsync", "tar-ssh", "tar-nc", "fastxfer"),
                  "byte": ("scp", "rsync", "fastxfer"), "restore": ("rsync", "tar-ssh", "fastxfer"),
                  "clients": ("fastxfer",)}
AUTO_WITHIN = 0.15  # the automatic stream count should be within 15 % of the best fixed one


# --------------------------------------------------------------------------
# Contenders: one tool on one workload
# --------------------------------------------------------------------------

@dataclass
class Prepared:
    """One run, ready to start: everything untimed (fresh destination, receiver) is done."""
    clients: list[ClientRun]
    server_pid: int
    receiver: subprocess.Popen | None  # a per-run server that must finish too (nc | tar)
    checks: list[tuple[Path, dict[str, str]]]  # (landing folder, expected files) to verify


@dataclass
class Contender:
    name: str
    tool: str  # scp, rsync, tar-ssh, tar-nc, fastxfer
    streams: str = ""  # fastxfer: auto or a number
    prepare: Callable[[Path], Prepared] = None  # log folder -> a run ready to start
    cmds: list[list[str]] = field(default_factory=list)  # for the record (first run's)
    nbytes: int = 0  # bytes one run moves (all clients together)
    nfiles: int = 0


@dataclass
class Source:
    """What a workload sends: `path` (a file or a folder), its parent, the expected
    files as they land below a destination folder."""
    path: Path
    expected: dict[str, str]
    nbytes: int

    @property
    def nfiles(self) -> int:
        return len(self.expected)


class Peers:
    """The long-lived servers (private sshd, fastxfer) and the nc helper; each is None
    when it cannot run here, with the one-line reason in `skipped`."""

    def __init__(self, args, work: Path, stack: contextlib.ExitStack) -> None:
        self.args, self.work = args, work
        self.skipped: dict[str, str] = {}
        self.ssh: h.ScpPeer | None = None
        self.fx: h.FastxferPeer | None = None
        self.nc: h.Netcat | None = None
        self.fx_clients: dict[str, dict[str, str]] = {}  # client name -> its environment
        used = {t for w in args.workloads for t in WORKLOAD_TOOLS[w]}
        wanted = self.wanted = set(args.tools) & used  # start only the servers some workload needs
        if wanted & {"scp", "rsync", "tar-ssh"}:
            peer = h.ScpPeer(work, work / "none")
            stack.callback(peer.stop)  # registered first: a half-started sshd is stopped too
            try:
                peer.start_sshd()
                self.ssh = peer
            except SetupError as e:
                for t in ("scp", "rsync", "tar-ssh"):
                    self.skip(t, f"private sshd: {e}")
            if self.ssh:
                if not shutil.which("scp"):
                    self.skip("scp", "scp not installed")
                if not shutil.which("rsync"):
                    self.skip("rsync", "rsync not installed")
                if not shutil.which("tar"):
                    self.skip("tar-ssh", "tar not installed")
        if "tar-nc" in wanted:
            try:
                self.nc = h.Netcat()
            except SetupError as e:
                self.skip("tar-nc", str(e))
        self.idle: subprocess.Popen | None = None
        if "dd" in wanted:
            if shutil.which("dd"):
                # dd has no server; this idle process stands in for one in the accounting.
                self.idle = subprocess.Popen(["sleep", "infinity"], start_new_session=True)
                stack.callback(h.stop_tree, self.idle)
            else:
                self.skip("dd", "dd not installed")
        self.fx_compare: dict[str, h.FastxferPeer] = {}  # label -> a server running other code (--compare)
        if "fastxfer" in wanted:
            peer = h.FastxferPeer(work, work / "none", args.python, [], args.code)
            stack.callback(peer.stop)
            try:
                peer.start()
                if "clients" in args.workloads:
                    for i in range(args.clients):
                        self.fx_clients[client_name(i)] = peer.add_client(client_name(i))
                self.fx = peer
            except SetupError as e:
                self.skip("fastxfer", str(e))
            for label, code in args.compare:
                other = h.FastxferPeer(work, work / "none", args.python, [], code)
                stack.callback(other.stop)
                other.start()  # a comparison that cannot run is an error, not a skipped row
                self.fx_compare[label] = other

    def skip(self, tool: str, reason: str) -> None:
        if tool in self.wanted and tool not in self.skipped:
            self.skipped[tool] = reason
            print(f"skipping {tool}: {reason}", file=sys.stderr)

    def can(self, tool: str) -> bool:
        return tool in self.args.tools and tool not in self.skipped

    # --- contenders ---

    def _over_ssh(self, cmd: list[str], dest: Path, landing: Path, src: Source) -> Callable[[Path], Prepared]:
        """prepare() of a client command that talks to the private sshd: empty `dest`, then
        run `cmd`; src's files are expected below `landing`."""
        def prepare(logs: Path) -> Prepared:
            h.empty_folder(dest)
            return Prepared([ClientRun(cmd, dict(os.environ), REPO, logs)], self.ssh.proc.pid,
                            None, [(landing, src.expected)])
        return prepare

    def scp(self, src: Source, dest: Path) -> Contender:
        cmd = self.ssh.scp_cmd(src.path, dest)
        return Contender("scp", "scp", prepare=self._over_ssh(cmd, dest, dest, src), cmds=[cmd])

    def rsync(self, src: Source, dest: Path) -> Contender:
        # A folder as SRC/ lands its contents directly in DEST; a file lands as DEST/name.
        what = f"{src.path}/" if src.path.is_dir() else str(src.path)
        cmd = ["rsync", "-a", "-e", shlex.join(["ssh", *self.ssh.ssh_options()]), what,
               f"root@127.0.0.1:{dest}/"]
        return Contender("rsync -a", "rsync", prepare=self._over_ssh(cmd, dest, dest, src), cmds=[cmd])

    def tar_ssh(self, src: Source, dest: Path) -> Contender:
        remote = f"tar -C {shlex.quote(str(dest))} -xf -"
        pipeline = (f"tar -C {shlex.quote(str(src.path.parent))} -cf - {shlex.quote(src.path.name)} | "
                    f"{shlex.join(['ssh', *self.ssh.ssh_options()])} root@127.0.0.1 {shlex.quote(remote)}")
        cmd = ["sh", "-c", pipeline]
        landing = dest / src.path.name if src.path.is_dir() else dest
        return Contender("tar | ssh", "tar-ssh", prepare=self._over_ssh(cmd, dest, landing, src), cmds=[cmd])

    def tar_nc(self, src: Source, dest: Path) -> Contender:
        landing = dest / src.path.name if src.path.is_dir() else dest
        c = Contender("tar | nc", "tar-nc")

        def prepare(logs: Path) -> Prepared:
            h.empty_folder(dest)
            receiver, port = self.nc.receiver(dest, logs.with_suffix(".receiver.log"))
            cmd = self.nc.sender(src.path.parent, src.path.name, port)
            c.cmds = c.cmds or [cmd, ["sh", "-c", " ".join(self.nc.listen(port)) + " | tar -x"]]
            return Prepared([ClientRun(cmd, dict(os.environ), REPO, logs)], receiver.pid, receiver,
                            [(landing, src.expected)])
        c.prepare = prepare
        return c

    def dd(self, src: Source, dest: Path) -> Contender:
        """The physical reference for one file: a local copy that is durable when dd ends."""
        cmd = ["dd", f"if={src.path}", f"of={dest / src.path.name}", "bs=16M", "conv=fdatasync",
               "status=none"]

        def prepare(logs: Path) -> Prepared:
            h.empty_folder(dest)
            return Prepared([ClientRun(cmd, dict(os.environ), REPO, logs)], self.idle.pid, None,
                            [(dest, src.expected)])
        return Contender("dd conv=fdatasync (local)", "dd", prepare=prepare, cmds=[cmd])

    def fastxfer(self, src: Source, streams: str, label: str = "") -> Contender:
        fx = self.fx_compare[label] if label else self.fx
        cmd = fx.send_cmd(src.path, streams)
        # A file lands as ROOT/<client>/name, a folder (no slash) as ROOT/<client>/<folder name>.
        landing = h.CLIENT_NAME if src.path.is_file() else f"{h.CLIENT_NAME}/{src.path.name}"
        name = "fastxfer (auto)" if streams == "auto" else f"fastxfer -s{streams}"
        if label:
            name += f" [{label}]"

        def prepare(logs: Path) -> Prepared:
            fx.restart()  # an empty root: no files, no manifest, as a first backup finds it
            return Prepared([ClientRun(cmd, fx.client_env(), fx.code, logs)],
                            fx.proc.pid, None, [(fx.root / landing, src.expected)])
        return Contender(name, "fastxfer", streams, prepare, [cmd])

    def rsync_pull(self, src: Source, dest: Path) -> Contender:
        cmd = ["rsync", "-a", "-e", shlex.join(["ssh", *self.ssh.ssh_options()]), f"root@127.0.0.1:{src.path}/",
               f"{dest}/"]
        return Contender("rsync -a (pull)", "rsync", prepare=self._over_ssh(cmd, dest, dest, src), cmds=[cmd])

    def tar_ssh_pull(self, src: Source, dest: Path) -> Contender:
        remote = f"tar -C {shlex.quote(str(src.path.parent))} -cf - {shlex.quote(src.path.name)}"
        pipeline = (f"{shlex.join(['ssh', *self.ssh.ssh_options()])} root@127.0.0.1 {shlex.quote(remote)} | "
                    f"tar -C {shlex.quote(str(dest))} -xf -")
        cmd = ["sh", "-c", pipeline]
        return Contender("ssh tar | tar (pull)", "tar-ssh",
                         prepare=self._over_ssh(cmd, dest, dest / src.path.name, src), cmds=[cmd])

    def fastxfer_get(self, src: Source, dest: Path, label: str = "") -> Contender:
        """get of the folder the server holds (sent once, untimed, on the first run)."""
        fx = self.fx_compare[label] if label else self.fx
        remote = src.path.name  # a folder sent without a slash is stored under its name
        # -o names a folder that does not exist yet: every release makes it the copy of the tree.
        cmd = fx.get_cmd(remote, dest / remote)
        stored = []

        def prepare(logs: Path) -> Prepared:
            if not stored:
                fx.restart()
                fx.store(src.path)
                stored.append(True)
            h.empty_folder(dest)
            return Prepared([ClientRun(cmd, fx.client_env(), fx.code, logs)], fx.proc.pid,
                            None, [(dest / remote, src.expected)])
        return Contender("fastxfer get (auto)" + (f" [{label}]" if label else ""), "fastxfer", "auto", prepare, [cmd])

    def fastxfer_clients(self, sources: list[Source], name: str) -> Contender:
        """len(sources) clients at once, client i (its own identity) sending sources[i]."""
        names = [client_name(i) for i in range(len(sources))]
        cmds = [self.fx.send_cmd(s.path) for s in sources]

        def prepare(logs: Path) -> Prepared:
            self.fx.restart()
            runs = [ClientRun(cmd, self.fx_clients[n], self.fx.code, logs.with_suffix(f".{n}.log"))
                    for cmd, n in zip(cmds, names)]
            return Prepared(runs, self.fx.proc.pid, None,
                            [(self.fx.root / n, s.expected) for n, s in zip(names, sources)])
        return Contender(name, "fastxfer", "auto", prepare, cmds)


def client_name(i: int) -> str:
    return f"client{i:02d}"


def contenders_for(workload: str, peers: Peers, src, dest: Path, streams: list[str]) -> list[Contender]:
    """The tools of one workload, in the order of the tables (baseline first)."""
    out: list[Contender] = []
    dest.mkdir(parents=True, exist_ok=True)
    if workload == "clients":
        if peers.can("fastxfer"):
            for group, name in ((src[:1], BASELINE["clients"]), (src, f"fastxfer, {len(src)} clients")):
                c = peers.fastxfer_clients(group, name)
                c.nbytes, c.nfiles = sum(s.nbytes for s in group), sum(s.nfiles for s in group)
                out.append(c)
        return out
    for tool in WORKLOAD_TOOLS[workload]:
        if tool == "fastxfer":
            continue
        if not peers.can(tool):
            continue
        d = dest / tool
        if workload == "restore":
            out.append({"rsync": peers.rsync_pull, "tar-ssh": peers.tar_ssh_pull}[tool](src, d))
            continue
        out.append({"scp": peers.scp, "rsync": peers.rsync, "tar-ssh": peers.tar_ssh,
                    "tar-nc": peers.tar_nc, "dd": peers.dd}[tool](src, d))
    if peers.can("fastxfer") and workload == "restore":
        out.append(peers.fastxfer_get(src, dest / "fastxfer"))
        for label in peers.fx_compare:  # the same restore on other code, alternating with this one
            out.append(peers.fastxfer_get(src, dest / f"fastxfer-{label}", label))
    elif peers.can("fastxfer"):
        for s in (["auto"] if workload == "byte" else streams):
            out.append(peers.fastxfer(src, s))
            for label in peers.fx_compare:  # the same row on other code, alternating with this one
                out.append(peers.fastxfer(src, s, label))
    for c in out:
        c.nbytes, c.nfiles = src.nbytes, src.nfiles
    return out


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

def run_once(c: Contender, workload: str, rnd: int, log_dir: Path, timeout: float, settle: float = 0.0) -> dict:
    slug = re.sub(r"\W+", "_", c.name).strip("_")
    log = log_dir / f"{workload}-{rnd}-{slug}.log"
    nbytes, nfiles = c.nbytes, c.nfiles
    try:
        p = c.prepare(log)  # untimed: empty destination, restarted server, listening receiver
    except SetupError as e:  # e.g. a receiver that did not listen, a server that did not restart
        return {"workload": workload, "tool": c.name, "round": rnd, "ok": False, "verified": False,
                "error": f"setup: {e}", "wall_s": 0.0, "mib_s": 0.0, "files_per_s": 0.0,
                "bytes": nbytes, "files": nfiles, "clients": 0, "client_cpu_s": 0.0,
                "server_cpu_s": 0.0, "other_cpu_s": 0.0, "steal_s": 0.0, "streams_chosen": []}
    try:
        os.sync()  # the deletions' writeback must not land in the timing (disk runs)
        time.sleep(settle)  # and the disk's own queue drains before the clock starts
        t = h.timed_group(p.clients, p.server_pid, timeout, p.receiver)
    finally:
        if p.receiver:
            h.stop_tree(p.receiver)  # already gone after a normal run
    durable_s = t.wall_s
    if t.ok():
        # Until the copy is on stable storage: scp, rsync and tar leave it in the
        # page cache, fastxfer syncs before it ends. `sync -f` on the landing
        # folder's filesystem, timed right after the tool, makes that fair.
        started = time.monotonic()
        for landing, _ in p.checks:
            subprocess.run(["sync", "-f", str(landing)], check=False)
        durable_s += time.monotonic() - started
        # Verify after the clock stopped: hashing is ours, not part of the timing.
        error = "; ".join(e for e in (h.verify(landing, exp) for landing, exp in p.checks) if e)
    else:
        bad = [f"client {i} exit {rc}: {h.tail(cr.log, 2)}"
               for i, (rc, cr) in enumerate(zip(t.returncodes, p.clients)) if rc != 0]
        if t.receiver_rc not in (None, 0):
            bad.append(f"receiver exit {t.receiver_rc}: {h.tail(log.with_suffix('.receiver.log'), 2)}")
        error = "; ".join(bad[:3])
    for landing, _ in p.checks:  # keep /dev/shm small: copies of earlier runs are not needed
        h.discard(landing)
    outputs = [h.tail(cr.log, 1) for cr in p.clients]
    chosen = [int(m.group(1)) for o in outputs for m in [re.search(r"over (\d+) streams?", o)] if m]
    return {
        "workload": workload, "tool": c.name, "round": rnd, "ok": t.ok(), "verified": not error,
        "error": error, "wall_s": round(t.wall_s, 4), "durable_s": round(durable_s, 4),
        "mib_s": round(nbytes / MiB / t.wall_s, 1), "files_per_s": round(nfiles / t.wall_s, 1),
        "bytes": nbytes, "files": nfiles, "clients": len(p.clients),
        "client_walls_s": [None if w is None else round(w, 3) for w in t.walls],
        "client_cpu_s": round(t.client_cpu_seconds(), 3), "server_cpu_s": round(t.server.cpu_seconds(), 3),
        "client_peak_rss_mib": round(t.client_peak_rss() / MiB, 1),
        "server_peak_rss_mib": round(t.server.peak_rss() / MiB, 1),
        "other_cpu_s": round(t.other_cpu_s, 3), "steal_s": round(t.steal_s, 3),
        "bench_cpu_s": round(t.bench_cpu_s, 3), "streams_chosen": chosen,
        "client_output": outputs[0] if len(outputs) == 1 else outputs,
        "processes": {"client": [p for tr in t.clients for p in tr.processes()],
                      "server": t.server.processes()},
    }


def run_workload(workload: str, contenders: list[Contender], args, log_dir: Path,
                 jlog: h.JsonLog) -> list[dict]:
    results = []
    nbytes = max(c.nbytes for c in contenders)
    timeout = args.timeout or max(300.0, nbytes / (5 * MiB))  # generous: a 5 MiB/s floor
    for rnd in range(-args.warmup, args.runs):
        # Rotate the order each round so no tool always runs right after the same one.
        k = rnd % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            r = run_once(c, workload, rnd, log_dir, timeout, args.settle)
            jlog.write("run", warmup=rnd < 0, **r)
            if rnd >= 0:
                results.append(r)
            label = "warm-up" if rnd < 0 else f"round {rnd + 1}"
            status = "ok" if r["verified"] else f"FAILED {r['error']}"
            rate = {"tree": f"{r['files_per_s']:8.0f} files/s", "restore": f"{r['files_per_s']:8.0f} files/s",
                    "byte": " " * 14}.get(
                workload, f"{r['mib_s']:8.1f} MiB/s")
            print(f"{workload:7} {label:8} {c.name:20} {r['wall_s']:8.3f} s {rate} "
                  f"cpu {r['client_cpu_s']:.2f}+{r['server_cpu_s']:.2f} s "
                  f"(others {r['other_cpu_s']:.2f}, steal {r['steal_s']:.2f})  {status}",
                  file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------
# Summaries, tables, chart
# --------------------------------------------------------------------------

def summarize(workload: str, results: list[dict]) -> list[dict]:
    """One row per tool, in first-seen order; medians over verified runs; `ratio` to the
    workload's baseline (higher = faster: rates for big, tree and clients, wall-time
    speed-up for byte)."""
    rows = []
    for name in dict.fromkeys(r["tool"] for r in results):
        runs = [r for r in results if r["tool"] == name]
        good = [r for r in runs if r["verified"]]
        row = {"workload": workload, "tool": name, "runs": len(runs), "verified": len(good)}
        if good:
            def med(key: str) -> float:
                return statistics.median(r[key] for r in good)
            walls = [r["wall_s"] for r in good]
            gib = good[0]["bytes"] / GiB
            row.update(
                median_wall_s=statistics.median(walls), min_wall_s=min(walls), max_wall_s=max(walls),
                median_durable_s=med("durable_s"),
                median_mib_s=med("mib_s"), min_mib_s=min(r["mib_s"] for r in good),
                max_mib_s=max(r["mib_s"] for r in good),
                median_files_per_s=med("files_per_s"), min_files_per_s=min(r["files_per_s"] for r in good),
                max_files_per_s=max(r["files_per_s"] for r in good),
                client_cpu_s=med("client_cpu_s"), server_cpu_s=med("server_cpu_s"),
                client_cpu_s_per_gib=med("client_cpu_s") / gib, server_cpu_s_per_gib=med("server_cpu_s") / gib,
                client_peak_rss_mib=max(r["client_peak_rss_mib"] for r in good),
                server_peak_rss_mib=max(r["server_peak_rss_mib"] for r in good),
                median_other_cpu_s=med("other_cpu_s"),
                streams_chosen=sorted({s for r in good for s in r["streams_chosen"]}))
        rows.append(row)
    base = next((r for r in rows if r["tool"] == BASELINE[workload] and "median_wall_s" in r), None)
    for row in rows:
        if base and "median_wall_s" in row:
            row["ratio"] = (base["median_wall_s"] / row["median_wall_s"] if workload == "byte"
                            else row["median_mib_s"] / base["median_mib_s"])
    return rows


def _f(x: float) -> str:
    """Wall seconds with 3 significant-ish digits."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def compare_lines(rows: list[dict]) -> list[str]:
    """Each --compare row against the same row on --code: the ratio of median wall times."""
    by_name = {r["tool"]: r for r in rows if "median_wall_s" in r}
    out = []
    for name, r in by_name.items():
        m = re.fullmatch(r"(.*) \[(.+)\]", name)
        if m and m.group(1) in by_name:
            ours = by_name[m.group(1)]
            out.append(f"{m.group(1)}: median wall {_f(ours['median_wall_s'])} s here, "
                       f"{_f(r['median_wall_s'])} s on [{m.group(2)}]: this code takes "
                       f"{ours['median_wall_s'] / r['median_wall_s']:.3f} × the time of [{m.group(2)}]")
    return out


def reference_lines(rows: list[dict]) -> list[str]:
    """fastxfer's durable time against the physical reference (dd) and the baseline's wall."""
    by_name = {r["tool"]: r for r in rows if "median_wall_s" in r}
    dd, ours = by_name.get("dd conv=fdatasync (local)"), by_name.get("fastxfer (auto)")
    if not dd or not ours:
        return []
    line = (f"fastxfer (auto) durable {_f(ours['median_durable_s'])} s = "
            f"{ours['median_durable_s'] / dd['median_wall_s']:.2f} × dd conv=fdatasync ({_f(dd['median_wall_s'])} s)")
    base = by_name.get(BASELINE["big"])
    if base:
        line += (f" and {ours['median_durable_s'] / base['median_wall_s']:.2f} × {BASELINE['big']}'s wall "
                 f"({_f(base['median_wall_s'])} s, not durable)")
    return [line]


def markdown_table(workload: str, rows: list[dict]) -> str:
    ratio_head = {"big": "ratio to scp (MiB/s)", "tree": "ratio to rsync (files/s)",
                  "restore": "ratio to rsync pull (files/s)",
                  "byte": "speed vs scp (× faster)", "clients": "ratio to one client"}[workload]
    rate_head = {"big": ["MiB/s"], "tree": ["files/s", "MiB/s"], "restore": ["files/s", "MiB/s"], "byte": [],
                 "clients": ["aggregate MiB/s"]}[workload]
    cpu_head = "CPU s client + server" if workload == "byte" else "CPU s/GiB client + server"
    head = ["tool", "median wall s (min–max)", "durable s", *rate_head, ratio_head, cpu_head,
            "peak RSS MiB client / server", "verified"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 2) + " :---: |"]
    for r in rows:
        if "median_wall_s" not in r:
            lines.append("| " + " | ".join([r["tool"].replace("|", "\\|")] + ["—"] * (len(head) - 2) + [f"0/{r['runs']}"]) + " |")
            continue
        rates = {"big": [f"{r['median_mib_s']:,.0f}"],
                 "tree": [f"{r['median_files_per_s']:,.0f}", f"{r['median_mib_s']:,.0f}"],
                 "restore": [f"{r['median_files_per_s']:,.0f}", f"{r['median_mib_s']:,.0f}"],
                 "byte": [], "clients": [f"{r['median_mib_s']:,.0f}"]}[workload]
        if workload == "byte":
            c, s = r["client_cpu_s"], r["server_cpu_s"]
        else:
            c, s = r["client_cpu_s_per_gib"], r["server_cpu_s_per_gib"]
        chosen = r.get("streams_chosen") or []
        name = r["tool"] + (f" → {'/'.join(map(str, chosen))} stream{'s' if chosen != [1] else ''}"
                            if r["tool"] == "fastxfer (auto)" and chosen else "")
        cells = [name.replace("|", "\\|"), f"{_f(r['median_wall_s'])} ({_f(r['min_wall_s'])}–{_f(r['max_wall_s'])})",
                 _f(r["median_durable_s"]), *rates,
                 f"{r['ratio']:.2f}" if "ratio" in r else "—", f"{c:.2f} + {s:.2f} = {c + s:.2f}",
                 f"{r['client_peak_rss_mib']:.0f} / {r['server_peak_rss_mib']:.0f}",
                 f"{r['verified']}/{r['runs']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def auto_tuning(workload: str, rows: list[dict]) -> dict:
    """Is fastxfer's automatic stream count within AUTO_WITHIN of the best fixed count?"""
    key = "median_files_per_s" if workload == "tree" else "median_mib_s"
    unit = "files/s" if workload == "tree" else "MiB/s"
    auto = next((r for r in rows if r["tool"] == "fastxfer (auto)" and key in r), None)
    fixed = [r for r in rows if re.fullmatch(r"fastxfer -s\d+", r["tool"]) and key in r]
    if not auto or not fixed:
        why = ("no fixed-stream runs in this workload: fastxfer ran with its automatic choice only"
               if not fixed else "no verified automatic run")
        return {"workload": workload, "within": None,
                "text": f"{workload}: auto-tuning not checked ({why})"}
    best = max(fixed, key=lambda r: r[key])
    share = auto[key] / best[key]
    within = share >= 1 - AUTO_WITHIN
    chose = "/".join(map(str, auto.get("streams_chosen") or [])) or "?"
    return {"workload": workload, "within": within, "auto": auto[key], "best_fixed": best["tool"],
            "best": best[key], "share": share, "auto_streams": auto.get("streams_chosen"),
            "text": f"{workload}: fastxfer auto ({chose} streams) {auto[key]:,.0f} {unit} = "
                    f"{share:.0%} of the best fixed count ({best['tool']}, {best[key]:,.0f} {unit}): "
                    f"{'within' if within else 'NOT within'} {AUTO_WITHIN:.0%}"}


def svg_chart(panels: list[tuple[str, str, list[dict], str]], title: str) -> str:
    """Horizontal bars (median) with min–max whiskers, one panel per workload.
    panels: (heading, unit, summary rows, key prefix: 'mib_s' or 'files_per_s')."""
    width, label_w, bar_h, gap, right = 860, 230, 18, 6, 90
    plot_w = width - label_w - right
    y = 44
    parts = []
    for heading, unit, rows, key in panels:
        rows = [r for r in rows if f"median_{key}" in r]
        if not rows:
            continue
        top = max(r[f"max_{key}"] for r in rows) or 1
        parts.append(f'<text x="10" y="{y}" font-size="15" font-weight="bold">{escape(heading)}</text>')
        y += 12
        y0 = y
        for r in rows:
            med, lo, hi = r[f"median_{key}"], r[f"min_{key}"], r[f"max_{key}"]
            fx = r["tool"].startswith("fastxfer")
            color = "#2b6cb0" if fx else ("#a0aec0" if r["tool"] == "tar | nc" else "#718096")
            w = plot_w * med / top
            cy = y + bar_h / 2
            parts += [
                f'<text x="{label_w - 8}" y="{cy + 4:.1f}" text-anchor="end" font-size="12">{escape(r["tool"])}</text>',
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                f'<title>{escape(r["tool"])}: median {med:,.1f} {unit} (min {lo:,.1f}, max {hi:,.1f})</title></rect>',
                f'<line x1="{label_w + plot_w * lo / top:.1f}" x2="{label_w + plot_w * hi / top:.1f}" '
                f'y1="{cy:.1f}" y2="{cy:.1f}" stroke="#1a202c" stroke-width="1.5"/>',
                f'<text x="{label_w + w + 6 if w < plot_w - 60 else label_w + w - 6:.1f}" y="{cy + 4:.1f}" '
                f'font-size="12" text-anchor="{"start" if w < plot_w - 60 else "end"}" '
                f'fill="{"#1a202c" if w < plot_w - 60 else "#ffffff"}">{med:,.0f}</text>',
            ]
            y += bar_h + gap
        parts.append(f'<line x1="{label_w}" x2="{label_w}" y1="{y0 - 2}" y2="{y}" stroke="#1a202c"/>')
        parts.append(f'<text x="{label_w + plot_w}" y="{y + 12}" text-anchor="end" font-size="11" '
                     f'fill="#4a5568">{escape(unit)}, median of the runs; line: min–max</text>')
        y += 40
    height = y
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="13" fill="#2d3748">{escape(title)}</text>',
        *parts, "</svg>", ""])


# --------------------------------------------------------------------------
# Ceiling
# --------------------------------------------------------------------------

def measure_ceiling(python: str, mib: int) -> dict:
    """Run perf/ceiling.py (CPU cost per byte of each unavoidable step) as a subprocess and
    return its JSON record; stopped with its children if we are interrupted."""
    cmd = [python, str(REPO / "perf" / "ceiling.py"), "--json", "--mib", str(mib)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        h.stop_tree(proc)
    if proc.returncode != 0:
        raise SetupError(f"ceiling.py exit {proc.returncode}: {(err.strip().splitlines() or [''])[-1]}")
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of " + ", ".join(WORKLOADS))
    p.add_argument("--runs", type=int, default=5, help="timed rounds per workload; medians over them")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (in this VM, memory never touched before costs the "
                        "first writer seconds of system time)")
    p.add_argument("--size", type=h.parse_size, default="1G", help="big: file size, e.g. 256M, 1G")
    p.add_argument("--files", type=int, default=10_000, help="tree: number of files")
    p.add_argument("--dirs", type=int, default=100, help="tree: folders they are spread over")
    p.add_argument("--file-size", type=h.parse_size, default="16K", help="tree: size of each file")
    p.add_argument("--clients", type=int, default=16, help="clients: concurrent fastxfer clients")
    p.add_argument("--client-size", type=h.parse_size, default="128M", help="clients: file size of each")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma list of " + ", ".join(TOOLS))
    p.add_argument("--streams", default="auto,1,2,4,8",
                   help="fastxfer --streams values for big and tree; auto = fastxfer's own choice")
    p.add_argument("--ceiling", type=float, default=None, metavar="MiB/s",
                   help="CPU ceiling to compare the big-file automatic row with (default: measure "
                        "it with perf/ceiling.py after the runs)")
    p.add_argument("--ceiling-mib", type=int, default=1024, help="MiB per step when measuring the ceiling")
    p.add_argument("--where", type=Path, default=None,
                   help="parent of the work folder (default: /dev/shm when it is a tmpfs, else the temp folder)")
    p.add_argument("--code", type=Path, default=REPO,
                   help="folder holding the fastxfer package to run, e.g. a `git archive` of one "
                        "commit, so edits made during the run don't mix in (default: this working tree)")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR",
                   help="also run every fastxfer row with the package in DIR (e.g. a `git archive` of the "
                        "commit before a change), rows labelled [LABEL], alternating with --code in the same "
                        "rounds; give the same DIR twice under two labels to see the spread of one code "
                        "against itself (may repeat)")
    p.add_argument("--python", default=h.default_python(), help="python that runs fastxfer")
    p.add_argument("--settle", type=float, default=1.0, metavar="S",
                   help="seconds to wait after the sync that precedes each run (default: 1; 0 on tmpfs is fine)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per run before it is killed (0: from the size)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    args.code = args.code.resolve()
    compare = []
    for item in args.compare:
        label, sep, folder = item.partition("=")
        if not sep or not label or not Path(folder).is_dir():
            p.error(f"--compare {item}: expected LABEL=DIR with an existing DIR")
        compare.append((label, Path(folder).resolve()))
    args.compare = compare  # (label, Path) pairs
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.streams = [s.strip() for s in args.streams.split(",") if s.strip()]
    for what, got, allowed in (("workload", args.workloads, WORKLOADS), ("tool", args.tools, TOOLS)):
        bad = [x for x in got if x not in allowed]
        if bad:
            p.error(f"unknown {what} {', '.join(bad)} (choose from {', '.join(allowed)})")
    if any(s != "auto" and not s.isdigit() for s in args.streams):
        p.error("--streams: auto or numbers")
    if args.runs < 1 or args.warmup < 0 or args.clients < 1 or not 1 <= args.dirs <= args.files:
        p.error("need --runs >= 1, --warmup >= 0, --clients >= 1 and 1 <= --dirs <= --files")
    if args.where and not args.where.is_dir():
        p.error(f"--where {args.where}: not a folder")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    h.raise_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jlog = h.JsonLog(RESULTS / f"throughput-{stamp}.jsonl")
    svg_path = jlog.path.with_suffix(".svg")
    with h.work_folder(args.where, args.keep) as work, contextlib.ExitStack() as stack:
        fs = h.filesystem_of(work)
        src_dir, dest, logs = work / "src", work / "dest", work / "logs"
        for d in (src_dir, dest, logs):
            d.mkdir()
        t0 = time.monotonic()
        sources: dict[str, object] = {}
        if "big" in args.workloads:
            (src_dir / "big").mkdir()
            f = src_dir / "big" / "big.bin"
            sources["big"] = Source(f, {f.name: h.make_random_file(f, args.size)}, args.size)
        if "tree" in args.workloads or "restore" in args.workloads:
            top = src_dir / "tree"
            exp = h.make_tree(top, args.files, args.dirs, args.file_size)
            sources["tree"] = sources["restore"] = Source(top, exp, args.files * args.file_size)
        if "byte" in args.workloads:
            (src_dir / "byte").mkdir()
            f = src_dir / "byte" / "byte.bin"
            f.write_bytes(os.urandom(1))
            sources["byte"] = Source(f, {f.name: h.sha256_file(f)}, 1)
        if "clients" in args.workloads:
            (src_dir / "clients").mkdir()
            files = [src_dir / "clients" / f"{client_name(i)}.bin" for i in range(args.clients)]
            sources["clients"] = [Source(f, {f.name: h.make_random_file(f, args.client_size)},
                                         args.client_size) for f in files]
        print(f"work folder {work} ({fs}); sources written in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        peers = Peers(args, work, stack)
        plan = {w: contenders_for(w, peers, sources[w], dest / w, args.streams) for w in args.workloads}
        code = h.code_state(args.code)
        versions = h.tool_versions()
        jlog.write("meta", stamp=stamp, filesystem=fs, work=str(work), cpus=psutil.cpu_count(),
                   python=args.python, argv=argv, loadavg=os.getloadavg(), versions=versions,
                   nc_variant=peers.nc.variant if peers.nc else None, code=code, skipped=peers.skipped,
                   args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "compare"},
                   compare={label: h.code_state(code) for label, code in args.compare},
                   cmds={w: {c.name: c.cmds for c in cs} for w, cs in plan.items()})
        all_ok, sections, summaries, notes = True, [], {}, []
        for workload, contenders in plan.items():
            if not contenders:
                print(f"{workload}: no tool could run", file=sys.stderr)
                sections.append(f"### {workload}: no tool could run")
                all_ok = False
                continue
            results = run_workload(workload, contenders, args, logs, jlog)
            rows = summarize(workload, results)
            summaries[workload] = rows
            for row in rows:
                jlog.write("summary", **row)
            all_ok &= all(r["verified"] for r in results)
            others = [r["other_cpu_s"] for r in results]
            what = {"big": f"one file of {args.size / MiB:,.0f} MiB",
                    "tree": f"{args.files:,} files × {args.file_size / KiB:g} KiB in {args.dirs} folders "
                            f"({args.files * args.file_size / MiB:,.0f} MiB)",
                    "byte": "one file of 1 byte",
                    "restore": f"the tree ({args.files:,} files × {args.file_size / KiB:g} KiB in {args.dirs} "
                               f"folders) brought back from the server's side",
                    "clients": f"{args.clients} fastxfer clients at once, each its own identity and "
                               f"{args.client_size / MiB:,.0f} MiB file, against one client alone"}[workload]
            text = (f"### {workload}: {what}; median of {args.runs} (after {args.warmup} warm-up)\n\n"
                    + markdown_table(workload, rows)
                    + f"\n\nother processes' CPU during a run: median {statistics.median(others):.2f} s, "
                      f"max {max(others):.2f} s; steal max {max(r['steal_s'] for r in results):.2f} s")
            for line in compare_lines(rows):
                text += f"\n\n{line}"
                jlog.write("compare", workload=workload, text=line)
            for line in reference_lines(rows):
                text += f"\n\n{line}"
                jlog.write("reference", workload=workload, text=line)
            if workload == "clients":
                many = next((r for r in rows if r["tool"] != BASELINE["clients"] and "ratio" in r), None)
                if many:
                    met = many["ratio"] >= 0.9
                    text += (f"\n\naggregate of {args.clients} clients = {many['ratio']:.0%} of one client's "
                             f"MiB/s: target ≥ 90 % {'met' if met else 'NOT met'}")
                    jlog.write("clients_target", ratio=many["ratio"], met=met)
            sections.append(text)
        tuning = [auto_tuning(w, summaries[w]) for w in args.workloads if w in summaries and w != "restore"]
        for t in tuning:
            jlog.write("auto_tuning", **{k: v for k, v in t.items()})
        # Ceiling: after the runs, so its CPU load does not disturb them.
        auto_big = next((r for r in summaries.get("big", []) if r["tool"] == "fastxfer (auto)"
                         and "median_mib_s" in r), None)
        if auto_big:
            ceiling, how = args.ceiling, "--ceiling"
            if ceiling is None:
                print(f"measuring the CPU ceiling (perf/ceiling.py --mib {args.ceiling_mib}) ...",
                      file=sys.stderr)
                try:
                    rec = measure_ceiling(args.python, args.ceiling_mib)
                    ceiling, how = rec["ceiling_mib_s"], f"perf/ceiling.py, {rec['cpu_s_per_gib']} CPU s/GiB"
                    jlog.write("ceiling_measured", record=rec)
                    alloc = rec.get("ceiling_with_new_pages_mib_s")
                    if alloc:
                        notes.append(f"big: fastxfer (auto) = {auto_big['median_mib_s'] / alloc:.0%} of the ceiling "
                                     f"{alloc:,.0f} MiB/s that counts the server's writes into new tmpfs pages")
                except (SetupError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                    notes.append(f"ceiling not measured: {e}")
            if ceiling:
                share = auto_big["median_mib_s"] / ceiling
                notes.append(f"big: fastxfer (auto) {auto_big['median_mib_s']:,.0f} MiB/s = {share:.0%} of "
                             f"the CPU ceiling {ceiling:,.0f} MiB/s ({how})")
                jlog.write("ceiling", ceiling_mib_s=ceiling, source=how, auto_mib_s=auto_big["median_mib_s"],
                           share=share)
        panels = [(f"big: one {args.size / MiB:,.0f} MiB file", "MiB/s", summaries.get("big", []), "mib_s"),
                  (f"tree: {args.files:,} files × {args.file_size / KiB:g} KiB", "files/s",
                   summaries.get("tree", []), "files_per_s"),
                  (f"restore: the tree back, {args.files:,} files", "files/s", summaries.get("restore", []),
                   "files_per_s"),
                  (f"clients: {args.clients} × {args.client_size / MiB:,.0f} MiB at once vs one alone",
                   "aggregate MiB/s", summaries.get("clients", []), "mib_s")]
        title = (f"fastxfer and peers on 127.0.0.1, {fs}, {psutil.cpu_count()} CPUs, "
                 f"{time.strftime('%Y-%m-%d %H:%M')}, median of {args.runs}")
        if any(summaries.get(w) for w in ("big", "tree", "restore", "clients")):
            svg_path.write_text(svg_chart(panels, title))
        code_after = h.code_state(args.code)
        changed = code_after["fastxfer_sha256"] != code["fastxfer_sha256"]
        jlog.write("end", code=code_after, code_changed_during_run=changed, all_verified=all_ok)
        print(f"\n## fastxfer throughput, {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        print(f"filesystem: {fs} (work folder {work}); 127.0.0.1 only; {psutil.cpu_count()} CPUs; "
              f"fastxfer from {args.code} (content {code['fastxfer_sha256']}, repository HEAD "
              f"{code['repo_head']})" + ("; FASTXFER CODE CHANGED DURING THE RUN" if changed else ""))
        print(f"results: {jlog.path.relative_to(REPO)}"
              + (f", chart: {svg_path.relative_to(REPO)}" if svg_path.exists() else ""))
        print("peers: " + "; ".join(" ".join(v.split()) for v in versions.values() if v != "?")
              + (f"; nc variant {peers.nc.variant}" if peers.nc else ""))
        for tool, reason in peers.skipped.items():
            print(f"skipped {tool}: {reason}")
        print()
        print("\n\n".join(sections))
        print("\n### automatic stream count\n")
        for t in tuning:
            print(f"- {t['text']}")
        for n in notes:
            print(f"\n{n}")
        return 0 if all_ok else 1


if __name__ == "__main__":
    h.run_main(main)
