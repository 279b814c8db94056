#!/usr/bin/env python3
"""Soak: kill a send at a random moment, send again, check that only what was missing moved.

Set-up (once): a work folder on /dev/shm (tmpfs), a server identity and a
client identity, ``fastxfer serve`` on 127.0.0.1, and a small TCP relay on
127.0.0.1 between client and server that counts the bytes each connection
carries.  The client pins the relay's address with the server's fingerprint,
so every send goes through the relay.  Two full sends calibrate the
expected transfer time T.

Each round (``--rounds``, default 100, all within ``--deadline`` seconds):

1. the source file gets a new name, a new mtime and a round number stamped
   into its first bytes, so the round is a fresh transfer;
2. ``fastxfer send`` starts; after a random delay in [0, T) it is killed with
   SIGKILL, or, every ``--server-kill-every``-th round, the server's whole
   process group (master and workers) is killed with SIGKILL instead and the
   server is restarted on the same port;
3. right after the kill, the chunk record ROOT/.fastxfer/staging/<client>/<fid>.rec
   of this file is read with fastxfer.layout.parse_record;
4. the same send runs again to completion; checked: exit 0, the stored copy's
   SHA-256 equals the source's, and the client-to-server bytes of the
   connections the second send opened (counted by the relay) are at most
   missing × 1.05 + 64 KiB, where missing = size − recorded chunks × chunk
   size (the exact spans of the unrecorded chunks, which is the same number
   unless the short last chunk is recorded);
5. the stored copy is deleted, so tmpfs does not fill.

Prints a summary (rounds, failures, max overshoot, median resume time) and
appends one JSON line per round and a summary line to perf/results/soak-*.jsonl.
Everything it started is stopped and its folder removed, also on Ctrl-C.

Only the standard library and psutil.  Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
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
from pathlib import Path

import psutil

from throughput_core import (  # shared with the other perf scripts
    code_state, filesystem_of, parse_size, raise_on_sigterm, run_main, sha256_file, tail)

MiB = 1 << 20
KiB = 1 << 10
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "perf" / "results"
CLIENT_NAME = "soak"
SLACK = 64 * KiB
FACTOR = 1.05
STOP_GRACE = 10.0
SEND_TIMEOUT = 120.0  # a send of the default 128 MiB takes about a second
CLIENT_EXIT_WAIT = 60.0  # after the server dies, the client should give up on its own












# --------------------------------------------------------------------------
# Relay: counts what each connection carries, tagged with the phase it began in
# --------------------------------------------------------------------------

class Relay:
    """127.0.0.1:port -> 127.0.0.1:target.  Bytes are counted per phase label,
    the label being the one current when the connection was accepted, so a
    connection of a killed send that drains late never counts for the next."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.phase = "idle"
        self.up: dict[str, int] = {}
        self.down: dict[str, int] = {}
        self.conns: dict[str, int] = {}
        self.refused = 0
        self.closed = False
        self.open_sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase

    def counts(self, phase: str) -> tuple[int, int, int]:
        with self.lock:
            return self.up.get(phase, 0), self.down.get(phase, 0), self.conns.get(phase, 0)

    def _accept(self) -> None:
        while not self.closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                b.settimeout(None)
            except OSError:
                with self.lock:
                    self.refused += 1  # server down (being restarted): the client sees a closed connection
                a.close()
                continue
            with self.lock:
                phase = self.phase
                self.conns[phase] = self.conns.get(phase, 0) + 1
                self.open_sockets.update((a, b))
            left = [2]  # the second pump to finish closes both sockets
            for src, dst, counter in ((a, b, self.up), (b, a, self.down)):
                threading.Thread(target=self._pump, args=(src, dst, counter, phase, left),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counter: dict, phase: str, left: list) -> None:
        try:
            while data := src.recv(256 * KiB):
                dst.sendall(data)
                with self.lock:
                    counter[phase] = counter.get(phase, 0) + len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self.lock:
                left[0] -= 1
                last = left[0] == 0
                if last:
                    self.open_sockets.difference_update((src, dst))
            if last:
                src.close()
                dst.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            socks = list(self.open_sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------
# Server and client processes
# --------------------------------------------------------------------------

class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.code = Path(args.code).resolve()
        self.python = args.python
        self.shome, self.chome, self.root = work / "server-home", work / "client-home", work / "root"
        self.server: subprocess.Popen | None = None
        self.server_pids: set[int] = set()  # master and workers seen, for the final clean-up
        self.port = 0
        self.client: subprocess.Popen | None = None
        self.relay: Relay | None = None
        self.serve_log = work / "serve.log"
        self.staging = self.root / ".fastxfer" / "staging" / CLIENT_NAME
        self.deadline = time.monotonic() + args.deadline
        sys.path.insert(0, str(self.code))  # fastxfer.layout of the code under test
        try:
            from fastxfer.protocol import layout
        except ImportError:  # code from before the protocol package
            from fastxfer import layout  # type: ignore[no-redef]
        self.layout = layout

    def env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "FASTXFER_HOME": str(home), "PYTHONPATH": str(self.code)}

    def cli(self, home: Path, *a: str) -> str:
        done = subprocess.run([self.python, "-m", "fastxfer", *a], cwd=self.code, capture_output=True,
                              text=True, timeout=60, env=self.env(home))
        if done.returncode:
            raise RuntimeError(f"fastxfer {a[0]}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip()

    def setup(self) -> None:
        for d in (self.shome, self.chome, self.root):
            d.mkdir()
        self.server_fp, client_fp = self.cli(self.shome, "id"), self.cli(self.chome, "id")
        self.cli(self.shome, "trust", "add", client_fp, "--name", CLIENT_NAME)
        self.start_server(0)
        self.relay = Relay(self.port)
        self.cli(self.chome, "pin", f"127.0.0.1:{self.relay.port}", self.server_fp)

    def start_server(self, port: int) -> float:
        """Start (or restart on the same port); return seconds until it listened."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.cap(30)
        while True:
            out = self.work / f"serve-{int(time.time() * 1000)}.out"
            with open(self.serve_log, "ab") as err, open(out, "wb") as so:
                self.server = subprocess.Popen(
                    [self.python, "-m", "fastxfer", "serve", "--root", str(self.root),
                     "--bind", "127.0.0.1", "--port", str(port)],
                    cwd=self.code, env=self.env(self.shome), stdin=subprocess.DEVNULL,
                    stdout=so, stderr=err, start_new_session=True)  # own process group
            while time.monotonic() < deadline:
                if self.server.poll() is not None:
                    break
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", out.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    out.unlink()
                    self.note_server_pids()
                    return time.perf_counter() - t0
                time.sleep(0.02)
            out.unlink(missing_ok=True)
            if self.server.poll() is None:
                self.stop_server()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"server did not listen within 30 s: {tail(self.serve_log)}")
            time.sleep(0.2)  # port still held (e.g. by an unreaped old worker): try again

    def note_server_pids(self) -> None:
        if self.server is None:
            return
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(self.server.pid)
            self.server_pids.add(master.pid)
            self.server_pids.update(c.pid for c in master.children(recursive=True))

    def kill_server_group(self) -> None:
        """SIGKILL master and workers at once: the group we created with the server."""
        assert self.server is not None
        self.note_server_pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()
        # Workers are reparented when the master dies; wait until they are gone too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._alive_group(self.server.pid):
            time.sleep(0.02)

    @staticmethod
    def _alive_group(pgid: int) -> bool:
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                    return True
        return False

    def stop_server(self) -> None:
        if self.server is None:
            return
        if self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    def cleanup(self) -> None:
        if self.client is not None and self.client.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.client.pid, signal.SIGKILL)
            self.client.wait()
        self.stop_server()
        for pid in self.server_pids:  # any worker of ours that outlived its master
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if str(self.root) in " ".join(p.cmdline()):
                    p.kill()
        if self.relay is not None:
            self.relay.close()

    def start_send(self, src: Path, log: Path) -> subprocess.Popen:
        cmd = [self.python, "-m", "fastxfer", "send", str(src), "--to", f"127.0.0.1:{self.relay.port}", "--quiet"]
        if self.args.streams:
            cmd += ["--streams", str(self.args.streams)]
        if self.args.chunk_size:
            cmd += ["--chunk-size", str(self.args.chunk_size)]
        with open(log, "wb") as out:
            self.client = subprocess.Popen(cmd, cwd=self.code, env=self.env(self.chome), stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.client

    def send(self, src: Path, log: Path, timeout: float) -> tuple[int | None, float]:
        """A whole send; (exit code or None on timeout, wall seconds)."""
        t0 = time.perf_counter()
        proc = self.start_send(src, log)
        try:
            code = proc.wait(self.cap(timeout))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        return code, time.perf_counter() - t0

    def missing_bytes(self, name: str, mtime_ns: int, size: int) -> tuple[int, int, int, bool]:
        """(missing bytes, recorded chunks, chunk size, staging found) for this file, from
        its chunk record.  Missing = the exact spans of the chunks not recorded, which is
        size - recorded * chunk unless the short last chunk is among the recorded ones."""
        for meta_path in self.staging.glob("*.meta"):
            try:
                meta = json.loads(meta_path.read_bytes())
            except (OSError, ValueError):
                continue
            if meta.get("path") != name or meta.get("mtime_ns") != mtime_ns:
                continue
            chunk = meta["chunk"]
            count = self.layout.chunk_count(meta["size"], chunk)
            try:
                data = meta_path.with_suffix(".rec").read_bytes()
            except FileNotFoundError:
                data = b""
            have = self.layout.parse_record(data, count)
            have_bytes = sum(self.layout.chunk_span(size, chunk, i)[1] for i in have)
            return size - have_bytes, len(have), chunk, True
        return size, 0, 0, False

    def cap(self, seconds: float) -> float:
        """A wait, shortened so the soak ends near its deadline (at least 1 s)."""
        return max(1.0, min(seconds, self.deadline - time.monotonic()))


# --------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------

def make_source(path: Path, size: int) -> None:
    """Random 8 MiB block repeated, a counter in every MiB so chunks differ."""
    block = os.urandom(8 * MiB)
    buf = bytearray(MiB)
    with open(path, "wb") as f:
        for i in range(0, size, MiB):
            n = min(MiB, size - i)
            start = i % len(block)
            buf[:n] = block[start:start + n]
            buf[:8] = (i // MiB).to_bytes(8, "big")
            f.write(memoryview(buf)[:n])


def prepare_round(src_dir: Path, current: Path, rnd: int) -> tuple[Path, int, str]:
    """Rename the source for this round, stamp the round into it, new mtime; (path, mtime_ns, sha256)."""
    new = src_dir / f"round-{rnd:04d}.bin"
    os.rename(current, new)
    with open(new, "r+b") as f:
        f.seek(8)
        f.write(b"ROUND%07d" % rnd)  # bytes 8..19: past the per-MiB counter
    now = time.time_ns()
    os.utime(new, ns=(now, now))
    return new, os.stat(new).st_mtime_ns, sha256_file(new)


def run_round(soak: Soak, rnd: int, src: Path, mtime_ns: int, src_sha: str, expected: float,
              rng: random.Random, server_kill: bool, logs: Path, jlog) -> dict:
    args = soak.args
    name = src.name
    relay = soak.relay
    r: dict = {"type": "round", "round": rnd, "file": name, "kill": "server" if server_kill else "client"}

    # --- first send, killed at a random moment
    delay = rng.uniform(0, expected)
    r["kill_delay_s"] = round(delay, 3)
    phase1, phase2 = f"r{rnd}-a", f"r{rnd}-b"
    relay.set_phase(phase1)
    log1 = logs / f"{name}.first.log"
    t0 = time.perf_counter()
    proc = soak.start_send(src, log1)
    try:
        proc.wait(delay)
        r["first_finished_before_kill"] = True
        r["first_exit"] = proc.returncode
    except subprocess.TimeoutExpired:
        r["first_finished_before_kill"] = False
    if server_kill:
        soak.kill_server_group()
    elif proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    r["killed_at_s"] = round(time.perf_counter() - t0, 3)
    # --- what the server holds durably for this file, read right after the kill
    missing, recorded, chunk, found = soak.missing_bytes(name, mtime_ns, args.size)
    r.update(staging_found=found, recorded_chunks=recorded, chunk=chunk, missing_bytes=missing)
    if server_kill:
        # The client should notice and give up on its own (exit 4, "run the same send again").
        t1 = time.perf_counter()
        r["restart_s"] = round(soak.start_server(soak.port), 3)
        try:
            proc.wait(soak.cap(CLIENT_EXIT_WAIT))
            r["first_exit"] = proc.returncode
            r["client_gave_up_s"] = round(time.perf_counter() - t1, 3)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            r["first_exit"] = None
            r["anomaly"] = (f"client still running {time.perf_counter() - t1:.0f} s after the server "
                            f"died and was restarted; killed")
    else:
        r.setdefault("first_exit", -9)
    r["first_up_bytes"], _, _ = relay.counts(phase1)

    # --- second send, to completion
    relay.set_phase(phase2)
    log2 = logs / f"{name}.second.log"
    code, wall = soak.send(src, log2, SEND_TIMEOUT)
    up, down, conns = relay.counts(phase2)
    relay.set_phase("idle")
    bound = missing * FACTOR + SLACK
    dest = soak.root / CLIENT_NAME / name
    stored_sha = sha256_file(dest) if dest.exists() else None
    r.update(second_exit=code, resume_s=round(wall, 3), second_up_bytes=up, second_down_bytes=down,
             second_connections=conns, bound_bytes=int(bound),
             overshoot=round(up / missing, 4) if missing else None,
             bound_use=round(up / bound, 4), verified=stored_sha == src_sha,
             client_said=tail(log2, 1))
    problems = []
    if code != 0:
        problems.append(f"second send exit {code}: {tail(log2)}")
    if stored_sha is None:
        problems.append("no stored copy")
    elif stored_sha != src_sha:
        problems.append("stored SHA-256 differs from the source")
    if up > bound:
        problems.append(f"second send moved {up} bytes upstream, bound {int(bound)} "
                        f"(missing {missing}, {recorded} chunks recorded)")
    if server_kill and r.get("first_exit") not in (None, 0, 4):
        problems.append(f"first send exit {r['first_exit']} after the server died (expected 4): {tail(log1)}")
    r["problems"] = problems
    r["ok"] = not problems
    # --- tidy: stored copy and any staging left for it
    dest.unlink(missing_ok=True)
    left = [p.name for p in soak.staging.glob("*")] if soak.staging.exists() else []
    if left:
        r["staging_left"] = left
        problems.append(f"staging files left after a completed send: {left}")
        r["ok"] = False
    if r["ok"]:
        log1.unlink(missing_ok=True)
        log2.unlink(missing_ok=True)
    else:
        r["first_log"] = tail(log1, 5)
        r["server_log"] = tail(soak.serve_log, 5)
    jlog.write(json.dumps(r) + "\n")
    jlog.flush()
    return r


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=100, help="rounds (default 100)")
    p.add_argument("--size", type=parse_size, default=128 * MiB, help="file size (default 128M)")
    p.add_argument("--server-kill-every", type=int, default=5,
                   help="every Nth round kills the server instead of the client (default 5; 0 never)")
    p.add_argument("--deadline", type=float, default=1200.0, help="seconds for the whole soak (default 1200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--streams", type=int, default=None, help="fastxfer send --streams (default automatic)")
    p.add_argument("--chunk-size", default=None, help="fastxfer send --chunk-size (default automatic)")
    p.add_argument("--where", default="/dev/shm", help="parent of the work folder (default /dev/shm)")
    p.add_argument("--code", default=str(REPO),
                   help="folder holding the fastxfer package to run (default: this repository's "
                        "working tree; e.g. a `git archive` of one commit, for a run that code edits "
                        "cannot disturb)")
    venv = REPO / ".venv" / "bin" / "python"
    p.add_argument("--python", default=str(venv) if venv.exists() else sys.executable)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.deadline <= 0:
        p.error("--rounds and --deadline must be positive")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)

    raise_on_sigterm()

    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / f"soak-{stamp}.jsonl"
    work = Path(tempfile.mkdtemp(prefix="fastxfer-soak-", dir=args.where))
    soak = Soak(args, work)  # its deadline starts now
    rounds: list[dict] = []
    stop_reason = "all rounds done"
    try:
        with open(jpath, "a") as jlog:
            fs = filesystem_of(work)
            code0 = code_state(soak.code)
            jlog.write(json.dumps({"type": "meta", "stamp": stamp, "seed": seed, "size": args.size,
                                   "rounds": args.rounds, "server_kill_every": args.server_kill_every,
                                   "deadline_s": args.deadline, "filesystem": fs,
                                   "cpus": psutil.cpu_count(), "host": platform.node(),
                                   "streams": args.streams or "auto", "chunk_size": args.chunk_size or "auto",
                                   "code": code0}) + "\n")
            soak.setup()
            src_dir, logs = work / "src", work / "logs"
            src_dir.mkdir()
            logs.mkdir()
            current = src_dir / "source.bin"
            make_source(current, args.size)
            # Calibrate: two whole sends, the expected transfer time is their mean.
            times = []
            for c in range(2):
                current, mtime_ns, sha = prepare_round(src_dir, current, -1 - c)
                code, wall = soak.send(current, logs / "calibrate.log", SEND_TIMEOUT)
                dest = soak.root / CLIENT_NAME / current.name
                if code != 0 or not dest.exists() or sha256_file(dest) != sha:
                    raise RuntimeError(f"calibration send failed (exit {code}): {tail(logs / 'calibrate.log')}")
                dest.unlink()
                times.append(wall)
            expected = statistics.mean(times)
            print(f"work folder {work} ({fs}); file {args.size / MiB:.0f} MiB; seed {seed}; "
                  f"expected transfer time {expected:.2f} s (calibration {times[0]:.2f}, {times[1]:.2f}); "
                  f"fastxfer from {soak.code} (repo HEAD {code0['repo_head']}, content {code0['fastxfer_sha256']})",
                  file=sys.stderr)
            jlog.write(json.dumps({"type": "calibration", "times_s": [round(t, 3) for t in times]}) + "\n")
            for rnd in range(1, args.rounds + 1):
                # A round takes a few expected times plus restarts; don't start one that can't finish.
                if time.monotonic() - started > args.deadline - max(30.0, 6 * expected):
                    stop_reason = f"deadline {args.deadline:.0f} s reached"
                    break
                server_kill = args.server_kill_every > 0 and rnd % args.server_kill_every == 0
                current, mtime_ns, sha = prepare_round(src_dir, current, rnd)
                r = run_round(soak, rnd, current, mtime_ns, sha, expected, rng, server_kill, logs, jlog)
                rounds.append(r)
                over = f"{r['overshoot']:.3f}" if r["overshoot"] is not None else "—"
                print(f"round {rnd:3d} kill {r['kill']:6} at {r['killed_at_s']:5.2f} s: "
                      f"{r['recorded_chunks']:3d} chunks recorded, missing {r['missing_bytes'] / MiB:6.1f} MiB, "
                      f"resent {r['second_up_bytes'] / MiB:6.1f} MiB (x{over}), "
                      f"resume {r['resume_s']:.2f} s  {'ok' if r['ok'] else 'FAILED: ' + '; '.join(r['problems'])}",
                      file=sys.stderr)
            summary = summarize(rounds, stop_reason, seed, expected, time.monotonic() - started)
            summary["code_after"] = code_state(soak.code)
            # The package's content is what ran; HEAD may move while a --code snapshot runs.
            summary["code_changed_during_run"] = summary["code_after"]["fastxfer_sha256"] != code0["fastxfer_sha256"]
            jlog.write(json.dumps(summary) + "\n")
        print_summary(summary, jpath)
        return 0 if summary["failures"] == 0 and rounds else 1
    finally:
        soak.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def summarize(rounds: list[dict], stop_reason: str, seed: int, expected: float, elapsed: float) -> dict:
    fails = [r for r in rounds if not r["ok"]]
    partial = [r for r in rounds if r["overshoot"] is not None]
    resume = [r["resume_s"] for r in rounds]
    resume_partial = [r["resume_s"] for r in rounds if 0 < r["recorded_chunks"]]
    gave_up = [r["client_gave_up_s"] for r in rounds if "client_gave_up_s" in r]
    return {
        "type": "summary", "seed": seed, "rounds": len(rounds), "stop_reason": stop_reason,
        "elapsed_s": round(elapsed, 1), "expected_transfer_s": round(expected, 3),
        "failures": len(fails), "failed_rounds": [r["round"] for r in fails],
        "client_kills": sum(r["kill"] == "client" for r in rounds),
        "server_kills": sum(r["kill"] == "server" for r in rounds),
        "rounds_with_recorded_chunks": sum(r["recorded_chunks"] > 0 for r in rounds),
        "rounds_finished_before_kill": sum(bool(r.get("first_finished_before_kill")) for r in rounds),
        "max_overshoot": max((r["overshoot"] for r in partial), default=None),
        "max_overshoot_round": max(partial, key=lambda r: r["overshoot"])["round"] if partial else None,
        "max_bound_use": max((r["bound_use"] for r in rounds), default=None),
        "median_resume_s": round(statistics.median(resume), 3) if resume else None,
        "max_resume_s": max(resume, default=None),
        "median_resume_s_with_recorded_chunks": round(statistics.median(resume_partial), 3) if resume_partial else None,
        "median_client_gave_up_s": round(statistics.median(gave_up), 3) if gave_up else None,
        "first_exit_after_server_kill": sorted({str(r.get("first_exit")) for r in rounds if r["kill"] == "server"}),
        "anomalies": [f"round {r['round']}: {r['anomaly']}" for r in rounds if "anomaly" in r],
    }


def print_summary(s: dict, jpath: Path) -> None:
    print(f"\nsoak: {s['rounds']} rounds ({s['client_kills']} client kills, {s['server_kills']} server kills) "
          f"in {s['elapsed_s']:.0f} s, {s['stop_reason']}; seed {s['seed']}; results {jpath.relative_to(REPO)}\n")
    over = f"{s['max_overshoot']:.3f} (round {s['max_overshoot_round']})" if s["max_overshoot"] else "—"
    rows = [
        ("rounds", s["rounds"]),
        ("failures", f"{s['failures']}" + (f" (rounds {s['failed_rounds']})" if s["failures"] else "")),
        ("rounds with chunks recorded at the kill", s["rounds_with_recorded_chunks"]),
        ("first send finished before its kill", s["rounds_finished_before_kill"]),
        ("max overshoot (resent / missing bytes)", over),
        ("max share of the bound used", f"{s['max_bound_use']:.3f}" if s["max_bound_use"] is not None else "—"),
        ("median resume time (second send, wall)", f"{s['median_resume_s']} s"),
        ("  ... in rounds with chunks recorded", f"{s['median_resume_s_with_recorded_chunks']} s"),
        ("max resume time", f"{s['max_resume_s']} s"),
        ("client exit after server kill", ", ".join(s["first_exit_after_server_kill"]) or "—"),
        ("median time for the client to give up after a server kill",
         f"{s['median_client_gave_up_s']} s" if s["median_client_gave_up_s"] is not None else "—"),
    ]
    print("| | |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    for a in s["anomalies"]:
        print(f"anomaly: {a}")


if __name__ == "__main__":
    run_main(main, "processes")
