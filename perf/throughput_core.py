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

Only the standard library and psutil are used. Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "perf" / "results"
SAMPLE_INTERVAL = 0.1  # seconds between CPU/RSS samples of the process trees
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for servers we started
CLIENT_NAME = "bench"  # name the fastxfer server gives our client
SCP_CIPHER = "aes128-gcm@openssh.com"


class SetupError(Exception):
    """A tool cannot be benchmarked here; the message is the one-line reason."""


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'256M', '1G', '1GiB', '4096' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 256M, 1G)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * (1024 ** power))


def filesystem_of(path: Path) -> str:
    """'tmpfs on /dev/shm': benchmarks must say which filesystem they ran on."""
    best = ("?", "/")
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _dev, mnt, fstype, *_ = line.split()
            mnt = mnt.replace("\\040", " ")
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[1]):
                best = (fstype, mnt)
    return f"{best[0]} on {best[1]}"


def make_random_file(path: Path, size: int) -> str:
    """Write `size` random bytes; return their SHA-256 (hashed while writing)."""
    digest = hashlib.sha256()
    block = 16 * MiB
    with open(path, "wb") as out:
        left = size
        while left:
            data = os.urandom(min(block, left))
            digest.update(data)
            out.write(data)
            left -= len(data)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def code_state(code: Path) -> dict:
    """Which fastxfer ran: a hash of the package's files in `code`, and the repository's HEAD
    and dirtiness (which describe the code that ran only when `code` is the repository)."""
    def git(*a: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        return ""
    h = hashlib.sha256()
    for f in sorted((code / "fastxfer").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return {"dir": str(code), "repo_head": git("rev-parse", "--short", "HEAD"),
            "repo_fastxfer_dirty": bool(git("status", "--porcelain", "--", "fastxfer")),
            "fastxfer_sha256": h.hexdigest()[:16]}


def free_port() -> int:
    """A port that was free a moment ago (tiny race accepted: loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise SetupError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM by pid, SIGKILL after STOP_GRACE; only ever processes we started."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        print(f"pid {proc.pid} ({proc.args[0]}) ignored SIGTERM for {STOP_GRACE:.0f} s: SIGKILL",
              file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])
    return ""


def run_checked(cmd: list[str], env: dict[str, str], what: str, cwd: Path = REPO) -> str:
    """Run a short setup command; a failure becomes a one-line SetupError."""
    try:
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{what}: timed out") from None
    if done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SetupError(f"{what}: exit {done.returncode}: {err[0]}")
    return done.stdout


# --------------------------------------------------------------------------
# Measuring process trees
# --------------------------------------------------------------------------

@dataclass
class Cpu:
    """CPU seconds of one process: its own, split, and its reaped children's."""
    user: float = 0.0
    system: float = 0.0
    children: float = 0.0

    @property
    def own(self) -> float:
        return self.user + self.system

    @property
    def cum(self) -> float:
        return self.own + self.children


@dataclass
class ProcStat:
    """What we keep of one process seen in a tree."""
    proc: psutil.Process
    name: str
    base: Cpu  # when first seen; zero for processes born during the run
    last: Cpu
    peak_rss: int = 0
    alive: bool = True
    born_in_run: bool = True  # then the kernel's high-water mark (VmHWM) is this run's peak


class TreeGroup:
    """One process tree (client or server) followed through one run.

    CPU is taken two ways, both lower bounds, and the larger is kept:
    A = sum over every pid seen of its own last user+system (misses the final
        < SAMPLE_INTERVAL of a process that exits between samples);
    B = sum over pids alive at the end of own + reaped-children CPU (misses
        children not yet reaped, or reparented away from the tree).
    For the client, whose root we reap with wait4, B is the kernel's exact
    total of the root and every descendant it waited for.
    """

    def __init__(self, root_pid: int, born_now: bool) -> None:
        self.root_pid = root_pid
        self.born_now = born_now  # client: everything in it belongs to this run
        self.stats: dict[int, ProcStat] = {}
        self.initial_pids: set[int] = set()
        self.root_rusage_cpu: float | None = None  # set from wait4 for the client

    def sample(self, ppid_map: dict[int, int], first: bool = False) -> None:
        for pid in self._members(ppid_map):
            self._sample_pid(pid, first)
        if first:
            self.initial_pids = set(self.stats)

    def _members(self, ppid_map: dict[int, int]) -> set[int]:
        # Roots are the root pid plus every pid ever seen still alive, so a
        # grandchild orphaned by its parent's exit is still followed.
        members = {self.root_pid} | {p for p, s in self.stats.items() if s.alive}
        children: dict[int, list[int]] = {}
        for pid, ppid in ppid_map.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(members)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in members:
                    members.add(child)
                    todo.append(child)
        return members

    def _sample_pid(self, pid: int, first: bool) -> None:
        stat = self.stats.get(pid)
        try:
            proc = stat.proc if stat else psutil.Process(pid)
            with proc.oneshot():
                t = proc.cpu_times()
                rss = proc.memory_info().rss
                name = proc.name()  # every time: a shell may exec the real program
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            if stat:
                stat.alive = False
            return
        now = Cpu(t.user, t.system, t.children_user + t.children_system)
        if stat is None:
            existed_before = first and not self.born_now
            stat = ProcStat(proc, name, now if existed_before else Cpu(), now,
                            born_in_run=not existed_before)
            self.stats[pid] = stat
        stat.name, stat.last = name, now
        # A sample every SAMPLE_INTERVAL misses short peaks; a process born in this run
        # has its peak so far in VmHWM (a long-lived server's VmHWM spans earlier runs).
        stat.peak_rss = max(stat.peak_rss, rss, vm_hwm(pid) if stat.born_in_run else 0)

    def new_pids_alive(self) -> bool:
        return any(s.alive for p, s in self.stats.items() if p not in self.initial_pids)

    def cpu_seconds(self) -> float:
        a = sum(s.last.own - s.base.own for s in self.stats.values())
        b = sum(s.last.cum - s.base.cum for p, s in self.stats.items()
                if s.alive and p != self.root_pid)
        if self.root_rusage_cpu is not None:
            b += self.root_rusage_cpu
        elif self.root_pid in self.stats:
            root = self.stats[self.root_pid]
            b += root.last.cum - root.base.cum
        return max(a, b)

    def peak_rss(self) -> int:
        """Largest RSS of one process of the tree (not their sum)."""
        # Not wait4's ru_maxrss: after exec it still holds the forking parent's (our) size.
        return max((s.peak_rss for s in self.stats.values()), default=0)

    def processes(self) -> list[dict]:
        return [{"pid": p, "name": s.name, "user_s": round(s.last.user - s.base.user, 3),
                 "sys_s": round(s.last.system - s.base.system, 3),
                 "peak_rss_mib": round(s.peak_rss / MiB, 1)} for p, s in self.stats.items()]


def vm_hwm(pid: int) -> int:
    """The kernel's high-water mark of a process's RSS, in bytes (0 if unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return 0


def wait_quiet(pid: int, limit: float = 10.0, step: float = 0.1, still: float = 0.005) -> None:
    """Wait (at most `limit` s) until the process tree at `pid` uses less than `still` CPU s
    in `step` s: a server that printed its port may still be starting its workers, and
    that work must not land in a timed run."""
    def cpu() -> float:
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total
    deadline = time.monotonic() + limit
    before = cpu()
    while time.monotonic() < deadline:
        time.sleep(step)
        now = cpu()
        if now - before < still:
            return
        before = now


def ppid_map() -> dict[int, int]:
    """pid -> ppid for every process, one pass over /proc per sample."""
    out = {}
    for p in psutil.process_iter(["ppid"]):
        out[p.pid] = p.info["ppid"]
    return out


class Monitor:
    """Samples several TreeGroups every SAMPLE_INTERVAL in a background thread."""

    def __init__(self, groups: list[TreeGroup]) -> None:
        self.groups = groups
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.sample(first=True)
        self._thread.start()

    def sample(self, first: bool = False) -> None:
        with self._lock:
            pmap = ppid_map()
            for g in self.groups:
                g.sample(pmap, first)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------

@dataclass
class Tool:
    """One way of sending the file: a client command against a running server."""
    name: str
    client_cmd: list[str]
    env: dict[str, str]
    dest: Path  # where the copy lands; deleted before every run
    server: subprocess.Popen
    log_dir: Path
    cwd: Path = REPO  # where the client runs (for fastxfer: the folder holding the package)


class ScpPeer:
    """A private sshd on 127.0.0.1 (keys generated here) and scp against it."""

    def __init__(self, work: Path, src: Path) -> None:
        self.work, self.src = work, src
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.user_key: Path | None = None  # key that logs in as root (set by start)
        self.conf_dir: Path | None = None  # keys, config and log of this sshd

    def ssh_options(self) -> list[str]:
        """ssh options that reach this sshd (after start), for ssh, rsync -e, tar | ssh."""
        return ["-p", str(self.port), "-i", str(self.user_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]

    def start(self) -> list[Tool]:
        sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
        if not sshd or not shutil.which("scp") or not shutil.which("ssh-keygen"):
            raise SetupError("sshd, scp or ssh-keygen not installed")
        if os.geteuid() != 0:
            raise SetupError("the private sshd needs root")
        conf_dir = Path(tempfile.mkdtemp(prefix="sshd-", dir=self.work))
        host_key, user_key = conf_dir / "host_key", conf_dir / "user_key"
        for key in (host_key, user_key):
            run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                        dict(os.environ), "ssh-keygen")
        authorized = conf_dir / "authorized_keys"
        shutil.copy(f"{user_key}.pub", authorized)
        port = self.port = free_port()
        self.user_key, self.conf_dir = user_key, conf_dir
        config = conf_dir / "sshd_config"
        config.write_text(self._config(port, host_key, authorized))
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir sshd insists on
        log = conf_dir / "sshd.log"
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
                                     start_new_session=True)  # Ctrl-C is ours to handle
        try:
            wait_for_port(port, self.proc, 15)
        except SetupError as e:
            raise SetupError(f"sshd: {e}: {tail(log, 1)}") from None
        dest_dir = self.work / "scp-dest"
        dest_dir.mkdir()
        cmd = ["scp", "-q", "-F", "/dev/null", "-c", SCP_CIPHER, "-P", str(port), "-i", str(user_key),
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
               str(self.src), f"root@127.0.0.1:{dest_dir}/"]
        return [Tool("scp", cmd, dict(os.environ), dest_dir / self.src.name, self.proc, conf_dir)]

    @staticmethod
    def _config(port: int, host_key: Path, authorized: Path) -> str:
        # OpenSSH >= 9 scp speaks SFTP, so the sftp subsystem is required.
        sftp = "/usr/lib/openssh/sftp-server"
        return "\n".join([
            "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PidFile none", "UseDNS no",
            f"Subsystem sftp {sftp if os.path.exists(sftp) else 'internal-sftp'}", "",
        ])

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


class FastxferPeer:
    """A fastxfer server and client, each with its own FASTXFER_HOME."""

    def __init__(self, work: Path, src: Path, python: str, streams: list[str],
                 code: Path = REPO) -> None:
        self.work, self.src, self.python, self.streams = work, src, python, streams
        self.code = code  # folder holding the fastxfer package that runs
        self.proc: subprocess.Popen | None = None
        self.port = 0  # 0 until the first start; restarts keep the port (the pin names it)

    def _env(self, home: Path) -> dict[str, str]:
        env = {**os.environ, "FASTXFER_HOME": str(home)}
        if self.code != REPO:
            env["PYTHONPATH"] = str(self.code)
        return env

    def _cli(self, home: Path, *args: str) -> str:
        return run_checked([self.python, "-m", "fastxfer", *args], self._env(home),
                           f"fastxfer {args[0]}", cwd=self.code)

    def start(self) -> list[Tool]:
        if not (self.code / "fastxfer" / "cli.py").exists() and not (self.code / "fastxfer" / "__main__.py").exists():
            raise SetupError(f"no fastxfer CLI in {self.code} yet")
        base = self.base = Path(tempfile.mkdtemp(prefix="fastxfer-", dir=self.work))
        server_home, client_home, root = base / "server-home", base / "client-home", base / "root"
        for d in (server_home, client_home, root):
            d.mkdir()
        self.server_home, self.client_home, self.root = server_home, client_home, root
        server_fp = self._fingerprint(server_home)
        client_fp = self._fingerprint(client_home)
        self._cli(server_home, "trust", "add", client_fp, "--name", CLIENT_NAME)
        port = self.port = self._serve(server_home, root, base / "serve.log")
        self._cli(client_home, "pin", f"127.0.0.1:{port}", server_fp)
        return [self._tool(s, client_home, port, root, base) for s in self.streams]

    def restart(self) -> subprocess.Popen:
        """Stop the server, give it an empty root (files and manifest), start it again on
        the same port: a fresh destination, as a first backup finds it."""
        self.stop()
        shutil.rmtree(self.root)
        self.root.mkdir()
        self._serve(self.server_home, self.root, self.base / "serve.log")
        wait_quiet(self.proc.pid)
        return self.proc

    def _fingerprint(self, home: Path) -> str:
        out = self._cli(home, "id").split()
        if len(out) != 1:
            raise SetupError(f"fastxfer id: expected one token, got {len(out)}")
        return out[0]

    def _serve(self, home: Path, root: Path, log: Path) -> int:
        cmd = [self.python, "-m", "fastxfer", "serve", "--root", str(root),
               "--bind", "127.0.0.1", "--port", str(self.port)]
        with open(log, "ab") as err:  # append: a restarted server keeps the earlier log
            self.proc = subprocess.Popen(cmd, env=self._env(home), cwd=self.code,
                                         stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True)
        # Keep draining stdout for the server's whole life so it never blocks on a full pipe.
        lines: queue.Queue[str] = queue.Queue()  # this server's lines only
        threading.Thread(target=self._drain, args=(self.proc.stdout, log.with_suffix(".out"), lines),
                         daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise SetupError(f"fastxfer serve exited {self.proc.returncode}: {tail(log, 1)}")
                continue
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                return int(m.group(1))
        raise SetupError("fastxfer serve printed no 'listening on 127.0.0.1:PORT' within 30 s")

    @staticmethod
    def _drain(stream, path: Path, lines: queue.Queue) -> None:
        with open(path, "a") as out:
            for line in stream:
                out.write(line)
                out.flush()
                lines.put(line)

    def send_cmd(self, path: Path, streams: str = "auto") -> list[str]:
        """The client command that sends `path` (file or folder) to this server."""
        cmd = [self.python, "-m", "fastxfer", "send", str(path), "--to", f"127.0.0.1:{self.port}"]
        if streams != "auto":
            cmd += ["--streams", streams]
        return cmd + ["--quiet"]

    def client_env(self) -> dict[str, str]:
        return self._env(self.client_home)

    def _tool(self, streams: str, home: Path, port: int, root: Path, base: Path) -> Tool:
        cmd = self.send_cmd(self.src, streams)
        name = "fastxfer (auto)" if streams == "auto" else f"fastxfer -s{streams}"
        return Tool(name, cmd, self._env(home), root / CLIENT_NAME / self.src.name, self.proc, base,
                    cwd=self.code)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


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


def clear_dest(dest: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    os.sync()  # don't let the previous copy's writeback land in the next timing (disk runs)


@dataclass
class Timed:
    """What timed_client measured of one client run against a running server."""
    wall_s: float
    returncode: int | None
    client: TreeGroup
    server: TreeGroup
    other_cpu_s: float  # busy CPU of the rest of the machine meanwhile (not this script)
    steal_s: float
    bench_cpu_s: float  # this script's own CPU meanwhile (mostly sampling the trees)


def timed_client(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, server_pid: int,
                 timeout: float) -> Timed:
    """Run one client to its end (killed after `timeout` s), output to `log`; measure wall
    time and the CPU and peak RSS of its process tree and of the server's."""
    server = TreeGroup(server_pid, born_now=False)
    machine0, self0 = psutil.cpu_times(), os.times()
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        client = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        client_tree = TreeGroup(client.pid, born_now=True)
        monitor = Monitor([client_tree, server])
        monitor.start()
        # A hung run must not hang the bench. Not client.kill(): its poll() could
        # reap the child under our wait4. The unreaped zombie keeps the pid ours.
        killer = threading.Timer(timeout, _kill_tree, (client.pid, client_tree))
        killer.start()
        try:
            # wait4 instead of wait(): the kernel's CPU total for the client and
            # every descendant it reaped, exact where sampling misses the tail.
            _, status, usage = os.wait4(client.pid, 0)
            wall = time.perf_counter() - t0
            client.returncode = os.waitstatus_to_exitcode(status)
            client_tree.root_rusage_cpu = usage.ru_utime + usage.ru_stime
        finally:
            killer.cancel()
            if client.returncode is None:  # interrupted: don't leave it running
                _kill_tree(client.pid, client_tree)
                client.wait()
            _settle(monitor, server)
            monitor.stop()
    busy, steal = machine_busy_since(machine0)
    self1 = os.times()  # this process: the sampling thread's CPU is ours, not noise
    bench = (self1.user - self0.user) + (self1.system - self0.system)
    own = client_tree.cpu_seconds() + server.cpu_seconds()
    return Timed(wall, client.returncode, client_tree, server, max(0.0, busy - own - bench),
                 steal, bench)


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


def machine_busy_since(start) -> tuple[float, float]:
    """(busy CPU s of the whole machine, steal s) since `start` (psutil.cpu_times()).
    Wall time on a shared 2-core machine is only comparable when this stays small."""
    now = psutil.cpu_times()
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest time is inside user
    busy = sum(getattr(now, f) - getattr(start, f) for f in now._fields if f not in idle)
    return busy, now.steal - start.steal


def _kill_tree(root_pid: int, tree: TreeGroup) -> None:
    """SIGKILL a client we started and the descendants we saw it start."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(root_pid, signal.SIGKILL)  # plain pid: until we reap it, it stays ours
    for pid, stat in list(tree.stats.items()):
        if pid != root_pid:
            with contextlib.suppress(psutil.Error):
                stat.proc.kill()  # psutil checks the pid was not reused


def _settle(monitor: Monitor, server: TreeGroup, limit: float = 3.0) -> None:
    """Server-side helpers of this run (sshd session processes) may outlive the
    client by a moment; keep sampling until they are gone so their CPU counts."""
    deadline = time.monotonic() + limit
    monitor.sample()
    while server.new_pids_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
        monitor.sample()


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


class JsonLog:
    """Appends one JSON object per line, flushed at once so a Ctrl-C keeps what ran."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a")

    def write(self, kind: str, **data) -> None:
        self.file.write(json.dumps({"type": kind, **data}) + "\n")
        self.file.flush()


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def default_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


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
    p.add_argument("--timeout", type=float, default=0, help="seconds per run (default: from size)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p.parse_args(argv)


@contextlib.contextmanager
def work_folder(where: Path | None, keep: bool) -> Iterator[Path]:
    parent = where or (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix="fastxfer-bench-", dir=parent))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally (server stops, cleanup) runs."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # Set SIGINT explicitly: a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start_peers(args, work: Path, src: Path, stack: contextlib.ExitStack) -> list[Tool]:
    """Start every requested server; a tool that can't run here is skipped with a reason."""
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    tools: list[Tool] = []
    for name in wanted:
        if name == "scp":
            peer = ScpPeer(work, src)
        elif name == "fastxfer":
            peer = FastxferPeer(work, src, args.python, [s.strip() for s in args.streams.split(",")])
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
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted; servers stopped, work folder removed", file=sys.stderr)
        sys.exit(130)
