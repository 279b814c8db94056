#!/usr/bin/env python3
"""Shared pieces of the perf/ benchmarks (throughput.py, throughput_core.py,
throughput_small.py; soak_resume.py and rss_bigfile.py use the small helpers).

* small helpers: sizes, filesystem of a folder, SHA-256, code state, ports;
* the work folder (tmpfs by default) and SIGTERM/SIGHUP handling so every
  cleanup runs;
* peers: a private sshd on 127.0.0.1 (keys in a temp folder, stopped
  afterwards), a fastxfer server with any number of trusted client identities,
  a `nc -l | tar -x` receiver started per run;
* measurement: the client and server process trees sampled with psutil
  (CPU seconds, peak RSS), timed runs of one or many concurrent clients;
* verification of a landing folder against the expected SHA-256 of each file;
* JSON lines logs.

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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NoReturn

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


def stop_process(proc: subprocess.Popen | None, kill=None) -> None:
    """SIGTERM by pid, then *kill* (default: SIGKILL of the pid) after STOP_GRACE;
    only ever processes we started."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        print(f"pid {proc.pid} ({proc.args[0]}) ignored SIGTERM for {STOP_GRACE:.0f} s: SIGKILL",
              file=sys.stderr)
        if kill is not None:
            kill(proc)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_tree(proc: subprocess.Popen) -> None:
    """stop_process, then SIGKILL any descendant it left behind (sshd's session processes
    leave its process group; psutil checks that each pid is still the process we saw)."""
    kids: list[psutil.Process] = []
    if proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(proc.pid).children(recursive=True)
    stop_process(proc)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()


def tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])
    return ""


def serve_port(proc: subprocess.Popen, log: Path, addr: str | None = None, timeout: float = 30.0) -> int:
    """The port a just-started `fastxfer serve` (stdout a pipe, stderr appended to `log`)
    reports on its 'listening on ADDR:PORT' line; `addr` None accepts any address.
    Its stdout is drained into log.with_suffix(".out") for its whole life, so it never
    blocks on a full pipe."""
    lines: queue.Queue[str] = queue.Queue()  # this server's lines only

    def drain(stream, path: Path) -> None:
        with open(path, "a") as out:
            for line in stream:
                out.write(line)
                out.flush()
                lines.put(line)
    threading.Thread(target=drain, args=(proc.stdout, log.with_suffix(".out")), daemon=True).start()
    pattern = r"listening on " + (re.escape(addr) if addr else r"[\d.]+") + r":(\d+)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                raise SetupError(f"fastxfer serve exited {proc.returncode}: {tail(log, 1)}")
            continue
        m = re.search(pattern, line)
        if m:
            return int(m.group(1))
    raise SetupError(f"fastxfer serve printed no 'listening on {addr or 'ADDR'}:PORT' within {timeout:.0f} s")


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


def fastxfer_env(home: Path, code: Path) -> dict[str, str]:
    """The environment of a fastxfer command with its identity in *home*,
    running the package found in *code*."""
    env = {**os.environ, "FASTXFER_HOME": str(home)}
    if code != REPO:
        env["PYTHONPATH"] = str(code)
    return env


def fastxfer_cli(python: str, code: Path, home: Path, *args: str) -> str:
    """A short fastxfer command (id, trust, pin); its stdout, or a one-line SetupError."""
    return run_checked([python, "-m", "fastxfer", *args], fastxfer_env(home, code), f"fastxfer {args[0]}", cwd=code)


def compile_package(python: str, code: Path) -> None:
    """As pip does on install: without bytecode every command compiles the
    package again (~15 ms of each run) wherever PYTHONDONTWRITEBYTECODE is set."""
    run_checked([python, "-m", "compileall", "-q", str(code / "fastxfer")], dict(os.environ), "compileall")


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

    def start_thread(self) -> None:
        """Start sampling in the background (the first sample was taken already)."""
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
        if self._thread.is_alive():
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
        """Start the sshd; return the scp tool that sends `src` through it."""
        if not shutil.which("scp"):
            raise SetupError("scp not installed")
        self.start_sshd()
        dest_dir = self.work / "scp-dest"
        dest_dir.mkdir()
        cmd = self.scp_cmd(self.src, dest_dir)
        return [Tool("scp", cmd, dict(os.environ), dest_dir / self.src.name, self.proc, self.conf_dir)]

    def scp_cmd(self, src: Path, dest_dir: Path) -> list[str]:
        """scp of `src` into `dest_dir`/ through this sshd (after start_sshd)."""
        return ["scp", "-q", "-F", "/dev/null", "-c", SCP_CIPHER, "-P", str(self.port),
                "-i", str(self.user_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                str(src), f"root@127.0.0.1:{dest_dir}/"]

    def start_sshd(self) -> None:
        """Generate host and user keys in a temp folder below the work folder and start
        sshd on 127.0.0.1 (free port); SetupError with a one-line reason if it can't."""
        sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
        missing = [n for n, p in (("sshd", sshd), ("ssh", shutil.which("ssh")),
                                  ("ssh-keygen", shutil.which("ssh-keygen"))) if not p]
        if missing:
            raise SetupError(f"{', '.join(missing)} not installed")
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
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)  # Ctrl-C is ours to handle
        try:
            wait_for_port(port, self.proc, 15)
        except SetupError as e:
            raise SetupError(f"sshd: {e}: {tail(log, 1)}") from None

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
            stop_tree(self.proc)


class FastxferPeer:
    """A fastxfer server and client, each with its own FASTXFER_HOME."""

    def __init__(self, work: Path, src: Path, python: str, streams: list[str],
                 code: Path = REPO) -> None:
        self.work, self.src, self.python, self.streams = work, src, python, streams
        self.code = code  # folder holding the fastxfer package that runs
        self.proc: subprocess.Popen | None = None
        self.port = 0  # 0 until the first start; restarts keep the port (the pin names it)

    def _env(self, home: Path) -> dict[str, str]:
        return fastxfer_env(home, self.code)

    def _cli(self, home: Path, *args: str) -> str:
        return fastxfer_cli(self.python, self.code, home, *args)

    def start(self) -> list[Tool]:
        if not (self.code / "fastxfer" / "cli.py").exists() and not (self.code / "fastxfer" / "__main__.py").exists():
            raise SetupError(f"no fastxfer CLI in {self.code} yet")
        compile_package(self.python, self.code)
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
        self.server_fp = server_fp
        return [self._tool(s, client_home, port, root, base) for s in self.streams]

    def add_client(self, name: str) -> dict[str, str]:
        """One more client identity (its own FASTXFER_HOME), trusted by the server under
        `name` (its folder below the root) and pinned to it; returns its environment."""
        home = self.base / f"client-{name}"
        home.mkdir()
        self._cli(self.server_home, "trust", "add", self._fingerprint(home), "--name", name)
        self._cli(home, "pin", f"127.0.0.1:{self.port}", self.server_fp)
        return self._env(home)

    def restart(self) -> subprocess.Popen:
        """Stop the server, give it an empty root (files and manifest), start it again on
        the same port: a fresh destination, as a first backup finds it."""
        self.stop()
        discard(self.root)
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
        return serve_port(self.proc, log, "127.0.0.1")

    def send_cmd(self, path: Path, streams: str = "auto") -> list[str]:
        """The client command that sends `path` (file or folder) to this server."""
        cmd = [self.python, "-m", "fastxfer", "send", str(path), "--to", f"127.0.0.1:{self.port}"]
        if streams != "auto":
            cmd += ["--streams", streams]
        return cmd + ["--quiet"]

    def get_cmd(self, remote: str, dest: Path) -> list[str]:
        """The client command that restores the stored `remote` as the folder `dest` (its copy)."""
        return [self.python, "-m", "fastxfer", "get", remote, "--from", f"127.0.0.1:{self.port}",
                "-o", str(dest), "--quiet"]

    def store(self, path: Path) -> None:
        """Send `path` (untimed), so that it can be restored."""
        run_checked(self.send_cmd(path), self.client_env(), "fastxfer send", cwd=self.code)

    def client_env(self) -> dict[str, str]:
        return self._env(self.client_home)

    def _tool(self, streams: str, home: Path, port: int, root: Path, base: Path) -> Tool:
        cmd = self.send_cmd(self.src, streams)
        name = "fastxfer (auto)" if streams == "auto" else f"fastxfer -s{streams}"
        return Tool(name, cmd, self._env(home), root / CLIENT_NAME / self.src.name, self.proc, base,
                    cwd=self.code)

    def stop(self) -> None:
        if self.proc:
            stop_tree(self.proc)


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


@dataclass
class ClientRun:
    """One client process of a timed run."""
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path  # its stdout and stderr


@dataclass
class TimedGroup:
    """What timed_group measured of one run of one or more concurrent clients."""
    wall_s: float  # first client's start to the last exit (clients and the receiver, if any)
    walls: list[float | None]  # each client's own wall time (None: never ended)
    returncodes: list[int | None]
    clients: list[TreeGroup]
    server: TreeGroup
    receiver_rc: int | None  # exit code of the per-run receiver (tar | nc), if any
    other_cpu_s: float  # busy CPU of the rest of the machine meanwhile (not this script)
    steal_s: float
    bench_cpu_s: float  # this script's own CPU meanwhile (mostly sampling the trees)

    def client_cpu_seconds(self) -> float:
        return sum(t.cpu_seconds() for t in self.clients)

    def client_peak_rss(self) -> int:
        """Largest RSS of one client process (not their sum)."""
        return max((t.peak_rss() for t in self.clients), default=0)

    def ok(self) -> bool:
        return all(rc == 0 for rc in self.returncodes) and self.receiver_rc in (None, 0)


class _Reaper(threading.Thread):
    """wait4 on one child we started, in a thread, so several children each get their own
    exit time and the kernel's CPU total for them and every descendant they reaped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.end: float | None = None
        self.returncode: int | None = None
        self.cpu: float | None = None

    def run(self) -> None:
        with contextlib.suppress(ChildProcessError):
            _, status, usage = os.wait4(self.pid, 0)
            self.end = time.perf_counter()
            self.returncode = os.waitstatus_to_exitcode(status)
            self.cpu = usage.ru_utime + usage.ru_stime


def timed_group(clients: list[ClientRun], server_pid: int, timeout: float,
                receiver: subprocess.Popen | None = None) -> TimedGroup:
    """Start every client at once against a running server (killed after `timeout` s);
    measure wall time until all of them (and `receiver`, a per-run server process that
    must also finish, e.g. `nc -l | tar -x`) have exited, and the CPU and peak RSS of
    each client's process tree and of the server's (the receiver's when given)."""
    server = TreeGroup(receiver.pid if receiver else server_pid, born_now=False)
    machine0, self0 = psutil.cpu_times(), os.times()
    procs: list[subprocess.Popen] = []
    trees: list[TreeGroup] = []
    reapers: list[_Reaper] = []
    rx_reaper = _Reaper(receiver.pid) if receiver else None
    monitor = Monitor([server])
    outs = [open(c.log, "wb") for c in clients]

    def kill_all() -> None:
        # A hung run must not hang the bench. Plain pids: until a reaper has reaped
        # a process it stays a zombie, so the pid cannot have been reused.
        for reaper, tree in zip(reapers, trees):
            if reaper.end is None:
                _kill_tree(reaper.pid, tree)
        if rx_reaper and rx_reaper.end is None:
            _kill_tree(rx_reaper.pid, server)
    killer = threading.Timer(timeout, kill_all)
    try:
        monitor.sample(first=True)  # the server's baseline before any client starts
        if rx_reaper:
            rx_reaper.start()
        t0 = time.perf_counter()
        for c, out in zip(clients, outs):
            proc = subprocess.Popen(c.cmd, env=c.env, cwd=c.cwd, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            trees.append(TreeGroup(proc.pid, born_now=True))
            reapers.append(_Reaper(proc.pid))
            reapers[-1].start()
        monitor.groups = trees + [server]
        monitor.start_thread()
        killer.start()
        for r in reapers:
            while r.is_alive():
                r.join(0.5)  # a timed join: Ctrl-C / SIGTERM reach us at once
        if rx_reaper:
            # A receiver whose client failed may wait forever for a connection.
            give_up = time.monotonic() + (5 if any(r.returncode for r in reapers) else timeout)
            while rx_reaper.is_alive() and time.monotonic() < give_up:
                rx_reaper.join(0.5)
    finally:
        killer.cancel()
        kill_all()  # only processes still running: after an interrupt or a timeout
        for r in reapers + ([rx_reaper] if rx_reaper else []):
            if r.is_alive() or r.ident is not None:
                r.join(5)
        for out in outs:
            out.close()
        _settle(monitor, server)
        monitor.stop()
    for proc, reaper, tree in zip(procs, reapers, trees):
        proc.returncode = reaper.returncode  # reaped by us: Popen must not wait again
        tree.root_rusage_cpu = reaper.cpu
    if receiver:
        receiver.returncode = rx_reaper.returncode
        server.root_rusage_cpu = rx_reaper.cpu
    ends = [r.end for r in reapers + ([rx_reaper] if rx_reaper else [])]
    wall = (max(e for e in ends if e is not None) - t0) if all(e is not None for e in ends) \
        else time.perf_counter() - t0
    busy, steal = machine_busy_since(machine0)
    self1 = os.times()  # this process: the sampling thread's CPU is ours, not noise
    bench = (self1.user - self0.user) + (self1.system - self0.system)
    own = sum(t.cpu_seconds() for t in trees) + server.cpu_seconds()
    return TimedGroup(wall, [None if r.end is None else r.end - t0 for r in reapers],
                      [r.returncode for r in reapers], trees, server,
                      rx_reaper.returncode if rx_reaper else None,
                      max(0.0, busy - own - bench), steal, bench)


def timed_client(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, server_pid: int,
                 timeout: float) -> Timed:
    """Run one client to its end (killed after `timeout` s), output to `log`; measure wall
    time and the CPU and peak RSS of its process tree and of the server's."""
    t = timed_group([ClientRun(cmd, env, cwd, log)], server_pid, timeout)
    return Timed(t.wall_s, t.returncodes[0], t.clients[0], t.server, t.other_cpu_s, t.steal_s,
                 t.bench_cpu_s)


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


def default_where() -> Path:
    """/dev/shm when it is a tmpfs (the disk must not set the pace), else the temp folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and filesystem_of(shm).startswith("tmpfs "):
        return shm
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def work_folder(where: Path | None, keep: bool) -> Iterator[Path]:
    global _trash
    parent = where or default_where()
    work = Path(tempfile.mkdtemp(prefix="fastxfer-bench-", dir=parent))
    kind = filesystem_of(work)
    on_disk = not kind.startswith("tmpfs ")
    slow_after_deletions = kind.startswith("ext4 ")  # ext4's inode allocator only (below)
    if on_disk:
        _trash = work / "trash"
        _trash.mkdir()
    if slow_after_deletions:
        wait_after_deletions(parent / DELETED_MARK)
        wait_for_fast_creates(_trash)
    try:
        yield work
    finally:
        _trash = None
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
            if slow_after_deletions:  # the next run here waits until these deletions weigh no more
                (parent / DELETED_MARK).write_text(f"{time.time():.0f}\n")


# A folder of many files is not deleted between runs on a disk, only moved here and
# deleted with the work folder: ext4 without a journal (this machine's disk) skips every
# inode freed in the last 60 s when it allocates one, scanning past each, so a tree
# deleted just before a run cost whichever tool ran next ~2.4 s of kernel time per
# 10,000 files it created (measured: 0.13 s to create 10,000 files, 2.4 s right after
# 10,000 were deleted, still 2.4 s 32 s later).
_trash: Path | None = None
TRASH_FROM_FILES = 100


CREATE_PROBE_FILES = 10_000  # in 100 folders: new folders spread over the filesystem
CREATE_FAST_US = 40  # µs per empty file: ~14 normally here, 70-700 while deletions weigh
CREATE_WAIT_S = 420  # RECENTCY_MIN + RECENTCY_DIRTY in ext4's ialloc.c, and a minute more


DELETED_MARK = ".fastxfer-bench-deleted"  # in the --where folder: when a run last deleted its copies


def wait_after_deletions(mark: Path) -> None:
    """Wait until CREATE_WAIT_S have passed since an earlier run deleted its copies
    here (the probe alone is not enough: its 10,000 creates may all land in
    folders away from the freed inodes, the next 100,000 do not)."""
    try:
        deleted = float(mark.read_text().strip())
    except (OSError, ValueError):
        return
    left = deleted + CREATE_WAIT_S - time.time()
    if left > 0:
        print(f"an earlier run deleted its copies here {time.time() - deleted:.0f} s ago: waiting "
              f"{left:.0f} s more before any run (ext4 without a journal)", file=sys.stderr)
        time.sleep(left)


def wait_for_fast_creates(trash: Path) -> float:
    """Wait (at most CREATE_WAIT_S) until creating files costs what it normally does
    here: many files deleted in the last minutes (by an earlier benchmark, say) slow
    every tool's creates alike on ext4 without a journal.  The probe's own files go to
    the trash, so probing adds no deletions.  Returns the last µs per file."""
    deadline = time.monotonic() + CREATE_WAIT_S
    n = 0
    while True:
        started = time.perf_counter()
        for i in range(CREATE_PROBE_FILES):
            if i % 100 == 0:
                folder = trash / f"probe-{n}-{i // 100}"
                folder.mkdir()
            os.close(os.open(folder / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        per_file = (time.perf_counter() - started) / CREATE_PROBE_FILES * 1e6
        if per_file <= CREATE_FAST_US or time.monotonic() > deadline:
            if per_file > CREATE_FAST_US:
                print(f"warning: creating a file still takes {per_file:.0f} µs here (normally "
                      f"under {CREATE_FAST_US}): every tool's runs are slowed", file=sys.stderr)
            return per_file
        if n == 0:
            print(f"creating a file takes {per_file:.0f} µs here, not under {CREATE_FAST_US}: "
                  f"files deleted in the last minutes weigh on it (ext4 without a journal); "
                  f"waiting up to {CREATE_WAIT_S} s", file=sys.stderr)
        n += 1
        time.sleep(15)


def discard(path: Path) -> None:
    """Remove `path` (a file or folder) now, or set it aside in the trash (see above)."""
    if _trash is not None and path.is_dir() and _holds_at_least(path, TRASH_FROM_FILES):
        try:
            path.rename(_trash / f"{len(os.listdir(_trash))}-{path.name}")
            return
        except OSError:  # another filesystem: delete after all
            pass
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _holds_at_least(path: Path, n: int) -> bool:
    seen = 0
    for _dirpath, _dirs, names in os.walk(path):
        seen += len(names)
        if seen >= n:
            return True
    return False


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally (server stops, cleanup) runs."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # Set SIGINT explicitly: a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_main(main: Callable[[list[str]], int], stopped: str = "servers") -> NoReturn:
    """sys.exit(main(argv)); an interrupt (Ctrl-C, or SIGTERM/SIGHUP after raise_on_sigterm)
    exits 130 once main's cleanups have run."""
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print(f"interrupted; {stopped} stopped, work folder removed", file=sys.stderr)
        sys.exit(130)


# --------------------------------------------------------------------------
# Sources, verification, tar | nc
# --------------------------------------------------------------------------

def make_tree(top: Path, files: int, dirs: int, size: int) -> dict[str, str]:
    """`files` random files of `size` bytes spread evenly over `dirs` folders below
    `top`; returns {relative path: SHA-256}."""
    expected = {}
    for i in range(files):
        rel = f"d{i * dirs // files:03d}/f{i:05d}.bin"
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        expected[rel] = hashlib.sha256(data).hexdigest()
    return expected


def verify(landing: Path, expected: dict[str, str]) -> str:
    """'' when `landing` holds exactly the expected files with the expected SHA-256,
    else a one-line reason."""
    found = {}
    for dirpath, _dirs, names in os.walk(landing):
        for name in names:
            path = Path(dirpath, name)
            found[path.relative_to(landing).as_posix()] = path
    missing = expected.keys() - found.keys()
    extra = found.keys() - expected.keys()
    wrong = sorted(rel for rel in expected.keys() & found.keys()
                   if sha256_file(found[rel]) != expected[rel])
    problems = [f"{len(s)} {what} (e.g. {sorted(s)[0]})"
                for s, what in ((missing, "missing"), (extra, "extra"), (wrong, "SHA-256 differs"))
                if s]
    return "; ".join(problems)


def empty_folder(path: Path, create: bool = True) -> None:
    discard(path)
    if create:
        path.mkdir(parents=True)


def tool_versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        return "?"
    return {"rsync": first_line(["rsync", "--version"]), "ssh": first_line(["ssh", "-V"]),
            "tar": first_line(["tar", "--version"]), "nc": first_line(["nc", "-h"])}


class Netcat:
    """`tar -c | nc` into `nc -l | tar -x` on 127.0.0.1: the unencrypted reference.

    The variants differ in how a sender says it is done: OpenBSD's nc (Debian's
    netcat-openbsd) needs -N to shut the socket down at the end of its input, the
    traditional one -q 0, ncat --send-only."""

    def __init__(self) -> None:
        nc = shutil.which("nc") or shutil.which("netcat") or shutil.which("ncat")
        if not nc:
            raise SetupError("nc not installed")
        text = ""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([nc, "-h"], capture_output=True, text=True, timeout=10)
            text = done.stdout + done.stderr
        if "OpenBSD netcat" in text:
            self.variant = "openbsd"
            self.listen = lambda port: [nc, "-l", "127.0.0.1", str(port)]
            self.send = lambda port: [nc, "-N", "127.0.0.1", str(port)]
        elif "Ncat" in text:
            self.variant = "ncat"
            self.listen = lambda port: [nc, "-l", "--recv-only", "127.0.0.1", str(port)]
            self.send = lambda port: [nc, "--send-only", "127.0.0.1", str(port)]
        elif "[v1.10" in text:
            self.variant = "traditional"
            self.listen = lambda port: [nc, "-l", "-s", "127.0.0.1", "-p", str(port)]
            self.send = lambda port: [nc, "-q", "0", "127.0.0.1", str(port)]
        else:
            first = text.strip().splitlines()[:1] or ["no output"]
            raise SetupError(f"unknown nc variant ({nc}: {first[0]})")
        self.nc = nc
        if not shutil.which("tar"):
            raise SetupError("tar not installed")

    def receiver(self, dest: Path, log: Path) -> tuple[subprocess.Popen, int]:
        """Start `nc -l 127.0.0.1 PORT | tar -x` into `dest` (a fresh port each run: the
        last run's may be in TIME_WAIT); return it once it listens, and the port."""
        port = free_port()
        pipeline = f"{shlex.join(self.listen(port))} | tar -C {shlex.quote(str(dest))} -xf -"
        with open(log, "ab") as err:
            proc = subprocess.Popen(["sh", "-c", pipeline], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 10
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_tree(proc)
                raise SetupError(f"nc -l on port {port} did not listen: {tail(log, 1)}")
            time.sleep(0.02)
        return proc, port

    def sender(self, parent: Path, name: str, port: int) -> list[str]:
        return ["sh", "-c", f"tar -C {shlex.quote(str(parent))} -cf - {shlex.quote(name)} | "
                            f"{shlex.join(self.send(port))}"]


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (from /proc, without connecting:
    a connection would use up nc's only accept)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
    return False
