#!/usr/bin/env python3
"""Wide-area links: fastxfer against scp and rsync over an emulated long, lossy or capped path.

Uses the link emulator in /work/shared/wan (network namespaces wan-c / wan-r / wan-s, a delay
line, loss and htb shaping; see its README.md). For each scenario this script:

* brings the link up with `wan-up.sh` and the scenario's variables, starts the emulator's
  private sshd in wan-s (`wan-sshd.sh`), pings the path (idle RTT) and runs iperf3 -P1/-P4
  (`bench-iperf.sh`) as a reference;
* starts a fastxfer server in wan-s bound to 198.18.2.1 (fresh temporary root and homes,
  client trusted and server pinned), and restarts it with an empty root before each
  fastxfer run, as a first backup finds it;
* sends one random file from wan-c with each tool (fastxfer --streams 1/4/8/16 and automatic,
  scp -c aes128-gcm@openssh.com, rsync over ssh with the same cipher), alternating the order
  run by run; every run has a time limit (killed and recorded as a timeout) and the copy's
  SHA-256 is checked after the clock stops; a ping runs beside each transfer (loaded RTT);
* prints one markdown table per scenario (median seconds, Mbit/s, ratio to scp, verified)
  and appends JSON lines to perf/results/wan-STAMP.jsonl.

Everything stays on this machine: the 198.18.x.x addresses exist only inside the namespaces.
Teardown (our clients, servers and pings by pid, then wan-down.sh, which stops the sshd and
the delay line) runs in a finally block, also on Ctrl-C and SIGTERM. Standard library and
psutil only. Without the emulator, or when not root, it says why in one line and exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "perf" / "results"
SERVER_ADDR = "198.18.2.1"
CLIENT_NAME = "wan"
SCP_CIPHER = "aes128-gcm@openssh.com"
EMU_VARS = ("DELAY_MS", "RATE", "LOSS", "LOSS_DIRS", "FLOW_RATE", "FLOW_POLICE", "POLICE_BURST",
            "BUF", "CC", "TCP_WMEM_MAX", "MTU")


@dataclass
class Scenario:
    name: str
    env: dict[str, str]
    size: int
    what: str
    extra: str = ""  # tools added to --tools here (unless --no-extra)


SCENARIOS = {
    "lossy": Scenario("lossy", {"DELAY_MS": "50", "RATE": "100mbit", "LOSS": "0.5", "CC": "cubic"},
                      16 * MiB, "100 ms RTT, 100 Mbit/s, 0.5 % loss each way, cubic",
                      # 16 MiB is 4 chunks of the default 4 MiB, and a send opens at most one
                      # stream per chunk: -s8/-s16 run 4 streams unless the chunks are smaller.
                      "fastxfer:8:1M,fastxfer:16:1M"),
    "capped": Scenario("capped", {"RATE": "1gbit", "FLOW_RATE": "50mbit"},
                       512 * MiB, "1 Gbit/s link, each TCP connection <= 50 Mbit/s, 100 ms RTT (default DELAY_MS=50)"),
    "clean": Scenario("clean", {"DELAY_MS": "10", "RATE": "500mbit"},
                      256 * MiB, "20 ms RTT, 500 Mbit/s, no loss"),
}
DEFAULT_TOOLS = "fastxfer:1,fastxfer:4,fastxfer:8,fastxfer:16,fastxfer:auto,scp,rsync"


from harness import (SetupError, code_state, compile_package, fastxfer_cli, fastxfer_env,  # noqa: E402
                     make_random_file, parse_size, serve_port, sha256_file, tail)
from harness import stop_process as h_stop_process  # noqa: E402


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a process we started and its descendants, each by pid (psutil checks reuse)."""
    with contextlib.suppress(psutil.Error):
        kids = psutil.Process(proc.pid).children(recursive=True)
        for k in kids:
            with contextlib.suppress(psutil.Error):
                k.send_signal(sig)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def stop_process(proc: subprocess.Popen | None) -> None:
    """harness.stop_process, killing the descendants too (`ip netns exec` runs the real process)."""
    h_stop_process(proc, kill=kill_tree)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a long-lived process tree: own + reaped children of the root, own of
    every live descendant."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for p in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                total += c.user + c.system
    return total


def machine_busy(start, end) -> float:
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")
    return sum(getattr(end, f) - getattr(start, f) for f in end._fields if f not in idle)


def other_cpu_top(limit: int = 3) -> str:
    """The busiest processes on the machine right now (over 1 s) that we did not start."""
    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    procs = []
    for p in psutil.process_iter(["name"]):
        if p.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
            procs.append(p)
    time.sleep(1.0)
    use = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            use.append((p.cpu_percent(None), p.info["name"], p.pid))
    use.sort(reverse=True)
    return ", ".join(f"{n}({pid}) {c:.0f}%" for c, n, pid in use[:limit] if c >= 1) or "none >= 1%"


def parse_ping(text: str) -> dict:
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", text)
    loss = re.search(r"([\d.]+)% packet loss", text)
    out = {}
    if m:
        out = {"rtt_min_ms": float(m.group(1)), "rtt_avg_ms": float(m.group(2)),
               "rtt_max_ms": float(m.group(3))}
    if loss:
        out["ping_loss_pct"] = float(loss.group(1))
    return out


# --------------------------------------------------------------------------- the link

class Link:
    """The emulator's scripts, run as they document; wan-down.sh undoes all of it."""

    def __init__(self, wan_dir: Path) -> None:
        self.dir = wan_dir
        self.run = Path(os.environ.get("WAN_RUN", "/run/wan-emu"))
        self.up_done = False

    def _script(self, name: str, env: dict[str, str] | None = None, timeout: float = 180,
                args: tuple[str, ...] = ()) -> str:
        base = {k: v for k, v in os.environ.items() if k not in EMU_VARS}
        done = subprocess.run([str(self.dir / name), *args], env={**base, **(env or {})},
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            err = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SetupError(f"{name}: exit {done.returncode}: {err[0]}")
        return done.stdout

    def up(self, env: dict[str, str]) -> str:
        self.up_done = True
        out = self._script("wan-up.sh", env)
        self._script("wan-sshd.sh")
        return (self.run / "config").read_text().strip() if (self.run / "config").exists() else out.strip()

    def down(self) -> None:
        if self.up_done:
            with contextlib.suppress(Exception):
                out = subprocess.run([str(self.dir / "wan-down.sh")], capture_output=True, text=True,
                                     timeout=120, stdin=subprocess.DEVNULL)
                if out.stderr.strip():
                    print(out.stderr.strip(), file=sys.stderr)
            self.up_done = False

    def ping(self, count: int = 10) -> dict:
        done = subprocess.run(["ip", "netns", "exec", "wan-c", "ping", "-q", "-c", str(count), "-i", "0.2",
                               SERVER_ADDR], capture_output=True, text=True, timeout=60)
        return parse_ping(done.stdout)

    def iperf(self, seconds: int, counts: list[int]) -> list[dict]:
        out = self._script("bench-iperf.sh", timeout=seconds * len(counts) + 120,
                           args=(str(seconds), *map(str, counts)))
        rows = []
        for line in out.splitlines():
            m = re.match(r"P=(\d+) .*?: ([\d.]+) Mbit/s received, retrans (\S+), per-stream ([\d. ]+);"
                         r".*ping avg (\S+) ms; machine busy (\d+)%", line)
            if m:
                rows.append({"P": int(m.group(1)), "mbit_s": float(m.group(2)), "retrans": m.group(3),
                             "per_stream": [float(x) for x in m.group(4).split()],
                             "ping_avg_ms": m.group(5), "machine_busy_pct": int(m.group(6)),
                             "line": line})
            elif line.startswith("P="):
                rows.append({"line": line})
        return rows


# --------------------------------------------------------------------------- tools

@dataclass
class Tool:
    name: str
    kind: str  # fastxfer | scp | rsync
    streams: str = "auto"
    chunk: str | None = None


def parse_tools(text: str) -> list[Tool]:
    tools = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item in ("scp", "rsync"):
            tools.append(Tool(item, item))
            continue
        m = re.fullmatch(r"fastxfer:(auto|\d+)(?::(\w+))?", item)
        if not m:
            raise argparse.ArgumentTypeError(f"bad tool {item!r} (scp, rsync, fastxfer:N, fastxfer:auto, "
                                             "fastxfer:N:CHUNK)")
        s, chunk = m.group(1), m.group(2)
        name = ("fastxfer (auto)" if s == "auto" else f"fastxfer -s{s}") + (f" chunk {chunk}" if chunk else "")
        tools.append(Tool(name, "fastxfer", s, chunk))
    return tools


class FastxferServer:
    """fastxfer serve inside wan-s on 198.18.2.1; homes and root in a temp folder."""

    def __init__(self, work: Path, python: str, code: Path) -> None:
        self.work, self.python, self.code = work, python, code
        self.base = Path(tempfile.mkdtemp(prefix="fastxfer-", dir=work))
        self.server_home, self.client_home = self.base / "server-home", self.base / "client-home"
        self.root = self.base / "root"
        for d in (self.server_home, self.client_home, self.root):
            d.mkdir()
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = self.base / "serve.log"

    def env(self, home: Path) -> dict[str, str]:
        return fastxfer_env(home, self.code)

    def cli(self, home: Path, *args: str) -> str:
        return fastxfer_cli(self.python, self.code, home, *args)

    def setup(self) -> None:
        if not (self.code / "fastxfer" / "__main__.py").exists():
            raise SetupError(f"no fastxfer package in {self.code}")
        compile_package(self.python, self.code)
        server_fp = self.cli(self.server_home, "id").split()[0]
        client_fp = self.cli(self.client_home, "id").split()[0]
        self.cli(self.server_home, "trust", "add", client_fp, "--name", CLIENT_NAME)
        self.start()
        self.cli(self.client_home, "pin", f"{SERVER_ADDR}:{self.port}", server_fp)

    def start(self) -> None:
        cmd = ["ip", "netns", "exec", "wan-s", self.python, "-m", "fastxfer", "serve", "--root", str(self.root),
               "--bind", SERVER_ADDR, "--port", str(self.port)]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd, env=self.env(self.server_home), cwd=self.code,
                                         stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True, stdin=subprocess.DEVNULL)
        self.port = serve_port(self.proc, self.log)
        self._quiet()

    def _quiet(self, limit: float = 10.0) -> None:
        """Let the workers finish starting before a timed run."""
        deadline = time.monotonic() + limit
        before = tree_cpu(self.proc.pid)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = tree_cpu(self.proc.pid)
            if now - before < 0.005:
                return
            before = now

    def restart_empty(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.root)
        self.root.mkdir()
        self.start()

    def stop(self) -> None:
        stop_process(self.proc)

    def send_cmd(self, src: Path, tool: Tool) -> list[str]:
        cmd = ["ip", "netns", "exec", "wan-c", self.python, "-m", "fastxfer", "send", str(src),
               "--to", f"{SERVER_ADDR}:{self.port}"]
        if tool.streams != "auto":
            cmd += ["--streams", tool.streams]
        if tool.chunk:
            cmd += ["--chunk-size", tool.chunk]
        return cmd + ["--quiet"]


@dataclass
class RunResult:
    scenario: str
    tool: str
    round: int
    ok: bool
    timeout: bool
    verified: bool
    wall_s: float
    mbit_s: float
    streams_used: int | None = None
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_busy_pct: float = 0.0
    other_cpu_s: float = 0.0  # machine busy CPU minus client and server trees: the emulator + other jobs
    ping: dict = field(default_factory=dict)
    error: str = ""
    client_output: str = ""
    server_warnings: dict = field(default_factory=dict)  # fastxfer server log warnings this run: count


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.client: subprocess.Popen | None = None
        self.ping: subprocess.Popen | None = None
        self.server: FastxferServer | None = None

    def stop_all(self) -> None:
        for p in (self.client, self.ping):
            if p is not None and p.poll() is None:
                kill_tree(p)
                with contextlib.suppress(Exception):
                    p.wait(5)
        if self.server:
            self.server.stop()
            self.server = None
        # sshd sessions of a client we killed (children of the sshd that wan-sshd.sh started for
        # us) may still be winding down; wan-down.sh stops the listener but not its sessions.
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            sshd = psutil.Process(int(Path("/run/wan-emu/sshd.pid").read_text().strip()))
            sessions = sshd.children(recursive=True)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for s in sessions:
                    with contextlib.suppress(psutil.Error):
                        s.send_signal(sig)
                _gone, sessions = psutil.wait_procs(sessions, timeout=3)
                if not sessions:
                    break

    def run_tool(self, sc: Scenario, tool: Tool, rnd: int, src: Path, src_sha: str) -> RunResult:
        srv = self.server
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        ssh_cfg = "/run/wan-emu/ssh/config"
        if tool.kind == "fastxfer":
            srv.restart_empty()
            dest = srv.root / CLIENT_NAME / src.name
            log_offset = srv.log.stat().st_size
            cmd, env, cwd, server_pid = srv.send_cmd(src, tool), srv.env(srv.client_home), srv.code, srv.proc.pid
        else:
            dest_dir = self.work / f"{tool.kind}-dest"
            shutil.rmtree(dest_dir, ignore_errors=True)
            dest_dir.mkdir()
            dest = dest_dir / src.name
            if tool.kind == "scp":
                cmd = ["scp", "-q", "-F", ssh_cfg, "-c", SCP_CIPHER, "-o", "BatchMode=yes",
                       str(src), f"wan-s:{dest_dir}/"]
            else:
                cmd = ["rsync", "-e", f"ssh -F {ssh_cfg} -c {SCP_CIPHER} -o BatchMode=yes",
                       str(src), f"wan-s:{dest_dir}/"]
            cmd = ["ip", "netns", "exec", "wan-c", *cmd]
            env, cwd = dict(os.environ), self.work
            server_pid = int(Path("/run/wan-emu/sshd.pid").read_text().strip())
        slug = re.sub(r"\W+", "_", tool.name)
        log = logs / f"{sc.name}-{rnd}-{slug}.log"
        ping_log = log.with_suffix(".ping")
        with open(ping_log, "w") as pl:
            self.ping = subprocess.Popen(["ip", "netns", "exec", "wan-c", "ping", "-q", "-i", "0.2", SERVER_ADDR],
                                         stdout=pl, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        srv_cpu0 = tree_cpu(server_pid)
        m0 = psutil.cpu_times()
        timed_out = False
        c0 = psutil.Process().cpu_times()  # children_*: what we reaped so far (servers stay unreaped)
        with open(log, "wb") as out:
            t0 = time.perf_counter()
            self.client = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self.client.wait(self.args.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_tree(self.client)
                self.client.wait()
            wall = time.perf_counter() - t0
        c1 = psutil.Process().cpu_times()  # now also the reaped client (and the kids it reaped)
        m1 = psutil.cpu_times()
        time.sleep(0.3)  # the sshd session ends a moment after the client
        srv_cpu = tree_cpu(server_pid) - srv_cpu0
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.ping.pid, signal.SIGINT)  # ping prints its summary on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ping.wait(5)
        if self.ping.poll() is None:
            kill_tree(self.ping)
            self.ping.wait()
        ping = parse_ping(ping_log.read_text())
        client_cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
        busy = machine_busy(m0, m1)
        rc = self.client.returncode
        ok = rc == 0 and not timed_out
        verified = ok and dest.exists() and sha256_file(dest) == src_sha
        output = tail(log, 4)
        error = ""
        if timed_out:
            error = f"timeout after {self.args.timeout:.0f} s"
        elif rc != 0:
            error = f"exit {rc}: {output}"
        elif not verified:
            error = "destination missing or SHA-256 differs"
        used = re.search(r"over (\d+) streams?", output)
        server_warnings: dict[str, int] = {}
        if tool.kind == "fastxfer":
            # This run's part of the server log: warnings such as "dropped ...: client wan has too
            # many connections open" (the per-client connection cap), counted by message.
            with open(srv.log, "rb") as f:
                f.seek(log_offset)
                for ln in f.read().decode(errors="replace").splitlines():
                    if re.search(r"WARNING|ERROR|Traceback|too many|busy", ln):
                        msg = re.sub(r"^\S+ \S+ \S+ ", "", ln)
                        msg = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", msg)
                        server_warnings[msg] = server_warnings.get(msg, 0) + 1
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        return RunResult(sc.name, tool.name, rnd, ok, timed_out, verified, round(wall, 3),
                         round(sc.size * 8 / 1e6 / wall, 2), int(used.group(1)) if used else None,
                         round(client_cpu, 2), round(srv_cpu, 2),
                         round(100 * busy / max(1e-9, wall * psutil.cpu_count()), 1),
                         round(max(0.0, busy - client_cpu - srv_cpu), 2), ping, error, output,
                         server_warnings)

    def scenario(self, sc: Scenario, link: Link, tools: list[Tool], jout) -> list[dict]:
        size = f"{sc.size / MiB:g} MiB" if sc.size >= MiB else f"{sc.size / 1024:g} KiB"
        print(f"\n### {sc.name}: {sc.what}, {size} file", flush=True)
        config = link.up(sc.env)
        idle = link.ping(10)
        load = os.getloadavg()
        print(f"link: {config}")
        print(f"idle RTT (ping): {idle.get('rtt_avg_ms', '?')} ms avg, {idle.get('rtt_min_ms', '?')} min; "
              f"load average {load[0]:.2f}; busiest other processes: {other_cpu_top()}", flush=True)
        jout.write(json.dumps({"type": "scenario", "scenario": sc.name, "env": sc.env, "link_config": config,
                               "size": sc.size, "idle_ping": idle, "loadavg": load,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        iperf = []
        if self.args.iperf_seconds > 0:
            try:
                iperf = link.iperf(self.args.iperf_seconds, self.args.iperf_streams)
            except (SetupError, subprocess.TimeoutExpired) as e:
                iperf = [{"line": f"iperf3 failed: {e}"}]
            for row in iperf:
                print(f"iperf3 ({self.args.iperf_seconds} s): {row['line']}", flush=True)
                jout.write(json.dumps({"type": "iperf", "scenario": sc.name, **row}) + "\n")
        jout.flush()
        src_dir = self.work / "src"
        src_dir.mkdir(exist_ok=True)
        src = src_dir / f"{sc.name}.bin"
        src_sha = make_random_file(src, sc.size)
        self.server = FastxferServer(self.work, self.args.python, Path(self.args.code).resolve())
        self.server.setup()
        results: list[RunResult] = []
        for rnd in range(self.args.runs):
            k = rnd % len(tools)
            for tool in tools[k:] + tools[:k]:  # alternate the order run by run
                r = self.run_tool(sc, tool, rnd, src, src_sha)
                results.append(r)
                jout.write(json.dumps({"type": "run", **r.__dict__}) + "\n")
                jout.flush()
                status = "ok" if r.verified else ("TIMEOUT" if r.timeout else "FAILED")
                print(f"  run {rnd} {r.tool:<22} {r.wall_s:8.2f} s {r.mbit_s:8.1f} Mbit/s {status}"
                      f"{'' if r.streams_used is None else f' streams={r.streams_used}'}"
                      f" rtt~{r.ping.get('rtt_avg_ms', 0):.0f} ms busy {r.machine_busy_pct:.0f}%"
                      f"{' ' + r.error if r.error else ''}", flush=True)
                for msg, n in r.server_warnings.items():
                    print(f"      server log ({n}x): {msg[:200]}", flush=True)
        self.server.stop()
        self.server = None
        src.unlink()
        rows = summarize(results, tools, sc)
        for row in rows:
            jout.write(json.dumps({"type": "summary", "scenario": sc.name, **row}) + "\n")
        jout.flush()
        print()
        print(markdown_table(rows, sc, iperf))
        link.down()
        return rows


def summarize(results: list[RunResult], tools: list[Tool], sc: Scenario) -> list[dict]:
    rows = []
    for tool in tools:
        runs = [r for r in results if r.tool == tool.name]
        good = [r for r in runs if r.verified]
        row = {"tool": tool.name, "runs": len(runs), "verified": len(good),
               "timeouts": sum(r.timeout for r in runs)}
        if good and len(good) * 2 > len(runs):
            # A timeout counts as "at least the limit": it enters the median as the limit.
            walls = [r.wall_s for r in good] + [r.wall_s for r in runs if r.timeout]
            med = statistics.median(walls)
            row.update(median_s=med, mbit_s=sc.size * 8 / 1e6 / med,
                       streams_used=sorted({r.streams_used for r in good if r.streams_used is not None}),
                       rtt_avg_ms=statistics.median(r.ping["rtt_avg_ms"] for r in good if "rtt_avg_ms" in r.ping)
                       if any("rtt_avg_ms" in r.ping for r in good) else None,
                       busy_pct=statistics.median(r.machine_busy_pct for r in good),
                       client_cpu_s=statistics.median(r.client_cpu_s for r in good),
                       server_cpu_s=statistics.median(r.server_cpu_s for r in good))
        elif runs and all(r.timeout for r in runs):
            row.update(median_s=None, lower_bound_s=min(r.wall_s for r in runs))
        rows.append(row)
    scp = next((r for r in rows if r["tool"] == "scp"), None)
    for row in rows:
        if scp and scp.get("median_s") and row.get("median_s"):
            row["ratio_to_scp"] = scp["median_s"] / row["median_s"]
        elif scp and scp.get("lower_bound_s") and row.get("median_s"):
            row["ratio_to_scp_at_least"] = scp["lower_bound_s"] / row["median_s"]
    return rows


def markdown_table(rows: list[dict], sc: Scenario, iperf: list[dict]) -> str:
    out = ["| tool | streams used | median s | Mbit/s | ratio to scp | RTT under load ms | machine busy | verified |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r.get("median_s"):
            med, mbit = f"{r['median_s']:.2f}", f"{r['mbit_s']:.1f}"
        elif r.get("lower_bound_s"):
            med, mbit = f">{r['lower_bound_s']:.0f} (timeout)", f"<{sc.size * 8 / 1e6 / r['lower_bound_s']:.1f}"
        else:
            med, mbit = "failed", "-"
        ratio = (f"{r['ratio_to_scp']:.2f}×" if "ratio_to_scp" in r else
                 f">{r['ratio_to_scp_at_least']:.2f}×" if "ratio_to_scp_at_least" in r else "-")
        streams = ",".join(map(str, r.get("streams_used") or [])) or "-"
        rtt = f"{r['rtt_avg_ms']:.0f}" if r.get("rtt_avg_ms") else "-"
        busy = f"{r['busy_pct']:.0f}%" if "busy_pct" in r else "-"
        ver = f"{r['verified']}/{r['runs']}" + (f" ({r['timeouts']} timeout)" if r["timeouts"] else "")
        out.append(f"| {r['tool']} | {streams} | {med} | {mbit} | {ratio} | {rtt} | {busy} | {ver} |")
    for row in iperf:
        if "mbit_s" in row:
            with contextlib.suppress(ValueError):
                row = {**row, "ping_avg_ms": f"{float(row['ping_avg_ms']):.0f}"}
            out.append(f"| iperf3 -P{row['P']} (reference) | {row['P']} | - | {row['mbit_s']:.1f} | - | "
                       f"{row['ping_avg_ms']} | {row['machine_busy_pct']}% | - |")
    return "\n".join(out)


def preflight(args: argparse.Namespace) -> str | None:
    wan = Path(args.wan_dir)
    if not (wan / "wan-up.sh").exists() or not (wan / "wan-down.sh").exists():
        return f"no WAN emulator at {wan} (wan-up.sh / wan-down.sh missing)"
    if os.geteuid() != 0:
        return "not root: the WAN emulator needs root (network namespaces, tc, iptables)"
    missing = [t for t in ("ip", "iptables", "nft", "ethtool", "tc", "iperf3", "ping", "scp", "rsync", "gcc")
               if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        return (f"missing {', '.join(missing)} (apt-get install -y iptables nftables ethtool libmnl-dev "
                "libnetfilter-queue-dev iperf3)")
    if not os.path.exists("/usr/include/libnetfilter_queue/libnetfilter_queue.h"):
        return "missing libnetfilter-queue-dev (needed to build wan-delayd)"
    if not os.path.exists("/usr/sbin/sshd"):
        return "no /usr/sbin/sshd"
    return None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default="lossy,capped,clean", help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--tools", type=parse_tools, default=parse_tools(DEFAULT_TOOLS),
                   help=f"comma list (default {DEFAULT_TOOLS}); fastxfer:N:CHUNK also sets --chunk-size")
    p.add_argument("--no-extra", action="store_true",
                   help="don't add a scenario's extra tools (lossy: fastxfer:8:1M,fastxfer:16:1M)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool (median), default 3")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run before it is killed (300)")
    p.add_argument("--size", type=parse_size, default=None, help="override every scenario's file size")
    p.add_argument("--iperf-seconds", type=int, default=10, help="iperf3 seconds per -P (0 = skip), default 10")
    p.add_argument("--iperf-streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4],
                   help="iperf3 -P values, default 1,4")
    p.add_argument("--code", default=str(REPO),
                   help="folder holding the fastxfer package to run (default: this working tree; "
                        "e.g. a `git archive` of one commit)")
    p.add_argument("--where", default="/dev/shm", help="parent of the work folder (default /dev/shm)")
    p.add_argument("--wan-dir", default="/work/shared/wan", help="the emulator's scripts")
    venv = REPO / ".venv" / "bin" / "python"
    p.add_argument("--python", default=str(venv) if venv.exists() else sys.executable)
    args = p.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    reason = preflight(args)
    if reason:
        print(f"wan.py: skipped: {reason}")
        return 0

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGINT, handler)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    jpath = RESULTS / f"wan-{stamp}.jsonl"
    link = Link(Path(args.wan_dir))
    work = Path(tempfile.mkdtemp(prefix="wan-", dir=args.where))
    bench = Bench(args, work)
    code = Path(args.code).resolve()
    try:
        with open(jpath, "a") as jout:
            meta = {"type": "meta", "stamp": stamp, "argv": argv, "code": code_state(code),
                    "tools": [t.name for t in args.tools], "runs": args.runs, "timeout_s": args.timeout,
                    "cpus": psutil.cpu_count(), "loadavg": os.getloadavg(), "work": str(work),
                    "python": args.python}
            jout.write(json.dumps(meta) + "\n")
            print(f"wan.py: code {meta['code']}, results -> {jpath}")
            for name in names:
                sc = SCENARIOS[name]
                if args.size:
                    sc = Scenario(sc.name, sc.env, args.size, sc.what, sc.extra)
                tools = args.tools + ([] if args.no_extra or not sc.extra else parse_tools(sc.extra))
                try:
                    bench.scenario(sc, link, tools, jout)
                finally:
                    bench.stop_all()
                    link.down()
            after = code_state(code)
            jout.write(json.dumps({"type": "end", "code_after": after,
                                   "code_changed_during_run": after["fastxfer_sha256"] != meta["code"]["fastxfer_sha256"],
                                   "loadavg": os.getloadavg()}) + "\n")
        print(f"\nresults: {jpath}")
        return 0
    except SetupError as e:
        print(f"wan.py: setup failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"wan.py: interrupted ({e}); stopping what we started", file=sys.stderr)
        return 130
    finally:
        bench.stop_all()
        link.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
