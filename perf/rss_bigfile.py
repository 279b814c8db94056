#!/usr/bin/env python3
"""Memory bound: peak RSS of every fastxfer process while one 4 GiB file is sent.

One run of this script:

* makes a work folder on /dev/shm (tmpfs) and writes a random source file
  into it quickly: one 64 MiB block from os.urandom, repeated, with the first
  8 bytes of every MiB replaced by a counter so that no two chunks are equal;
* makes a server identity and a client identity, authorizes the client,
  starts ``fastxfer serve`` on 127.0.0.1 (free port) and pins it;
* runs ``fastxfer send`` once, sampling with psutil every 0.05 s the RSS of
  the client process (and any child) and of every server process: the master
  and each worker, including a worker started to replace one that died;
  the kernel's own high-water mark (VmHWM in /proc/PID/status) is read at the
  same time as a cross-check that short spikes between samples were not missed;
* verifies the stored copy's SHA-256 against the source's;
* prints a table, appends one JSON line to perf/results/rss-*.jsonl, and
  removes everything it made (also on Ctrl-C or SIGTERM).

Target: peak RSS under 150 MiB for every process.  Exit status 0 only when the
copy verified and every process stayed under the target.

Only the standard library and psutil.  Nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from throughput_core import (  # shared with the other perf scripts
    code_state, filesystem_of, parse_size, raise_on_sigterm, run_main, sha256_file)

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "perf" / "results"
SAMPLE_INTERVAL = 0.05  # seconds
TARGET_MIB = 150.0
CLIENT_NAME = "rss"
BLOCK = 64 * MiB  # random block repeated to make the file
STOP_GRACE = 10.0






def make_file(path: Path, size: int) -> str:
    """Repeat one random 64 MiB block, stamping a counter into every MiB; return SHA-256."""
    block = os.urandom(BLOCK)
    buf = bytearray(MiB)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written, counter = 0, 0
        while written < size:
            n = min(MiB, size - written)
            start = written % BLOCK
            buf[:n] = block[start:start + n]
            buf[:8] = counter.to_bytes(8, "big")
            view = memoryview(buf)[:n]
            digest.update(view)
            while view:
                view = view[os.write(fd, view):]
            written += n
            counter += 1
    finally:
        os.close(fd)
    return digest.hexdigest()






def proc_status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile, RssShmem in bytes (empty if gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


@dataclass
class Seen:
    """One process followed through the run."""
    proc: psutil.Process
    role: str
    peak_rss: int = 0
    peak_breakdown: dict = field(default_factory=dict)  # /proc status at the peak sample
    hwm: int = 0  # kernel high-water mark, last read while alive
    samples: int = 0


class Sampler:
    """Every SAMPLE_INTERVAL: RSS of the client tree and the server tree."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client_pid: int | None = None
        self.seen: dict[int, Seen] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.rounds = 0

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()

    def _tree(self, pid: int | None) -> list[psutil.Process]:
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root] + root.children(recursive=True)
        except psutil.Error:
            return []

    def sample(self) -> None:
        with self.lock:
            self.rounds += 1
            for side, pid in (("server", self.server_pid), ("client", self.client_pid)):
                for p in self._tree(pid):
                    s = self.seen.get(p.pid)
                    if s is None:
                        if side == "server":
                            role = "server master" if p.pid == pid else "server worker"
                        else:
                            role = "client" if p.pid == pid else "client child"
                        s = self.seen[p.pid] = Seen(p, role)
                    try:
                        rss = s.proc.memory_info().rss
                    except psutil.Error:
                        continue
                    status = proc_status(p.pid)
                    s.samples += 1
                    s.hwm = max(s.hwm, status.get("VmHWM", 0))
                    if rss > s.peak_rss:
                        s.peak_rss, s.peak_breakdown = rss, status


def wait_listening(proc: subprocess.Popen, out_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fastxfer serve exited {proc.returncode}")
        with contextlib.suppress(OSError):
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", out_path.read_text())
            if m:
                return int(m.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"fastxfer serve did not report a port within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, extra: list[psutil.Process] = ()) -> None:
    """SIGTERM our process by pid, SIGKILL after a grace; then any of its children we saw."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for p in extra:
        with contextlib.suppress(psutil.Error):
            p.kill()  # psutil refuses if the pid was reused by another process


def run(args: argparse.Namespace) -> int:
    python = args.python
    code_dir = Path(args.code).resolve()
    base_env = {**os.environ, "PYTHONPATH": str(code_dir)}
    parent = Path(args.where)
    work = Path(tempfile.mkdtemp(prefix="fastxfer-rss-", dir=parent))
    server: subprocess.Popen | None = None
    client: subprocess.Popen | None = None
    sampler: Sampler | None = None
    try:
        fs = filesystem_of(work)
        need = 2 * args.size + 256 * MiB  # source and the stored copy; the pre-warm file goes first
        free = shutil.disk_usage(work).free
        if free < need:
            print(f"{fs}: {free / GiB:.1f} GiB free, {need / GiB:.1f} GiB needed", file=sys.stderr)
            return 2
        src = work / "big.bin"
        code_before = code_state(code_dir)
        t0 = time.perf_counter()
        src_sha = make_file(src, args.size)
        print(f"made {src} ({args.size / MiB:.0f} MiB, {fs}) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        if args.prewarm:
            # In a VM whose balloon hands freed memory back to the host, the first touch
            # of a page costs about 1.4 s of system time per GiB here (measured with dd on
            # /dev/shm); touch as much as the server will fill, and free it, so the timing
            # below is fastxfer's, not the hypervisor's.  RSS is unaffected either way.
            t0 = time.perf_counter()
            warm = work / "prewarm.bin"
            fd = os.open(warm, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                zeros = bytes(16 * MiB)
                for _ in range(0, args.size + 64 * MiB, len(zeros)):
                    os.write(fd, zeros)
            finally:
                os.close(fd)
                warm.unlink()
            print(f"pre-warmed {args.size / MiB:.0f} MiB of tmpfs pages in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
        shome, chome, root = work / "server-home", work / "client-home", work / "root"
        for d in (shome, chome, root):
            d.mkdir()

        def cli(home: Path, *a: str) -> str:
            done = subprocess.run([python, "-m", "fastxfer", *a], cwd=code_dir, capture_output=True,
                                  text=True, timeout=60, env={**base_env, "FASTXFER_HOME": str(home)})
            if done.returncode:
                raise RuntimeError(f"fastxfer {a[0]}: exit {done.returncode}: {done.stderr.strip()}")
            return done.stdout.strip()

        server_fp, client_fp = cli(shome, "id"), cli(chome, "id")
        cli(shome, "trust", "add", client_fp, "--name", CLIENT_NAME)
        out_path, err_path = work / "serve.out", work / "serve.log"
        serve_cmd = [python, "-m", "fastxfer", "serve", "--root", str(root), "--bind", "127.0.0.1", "--port", "0"]
        if args.workers:
            serve_cmd += ["--workers", str(args.workers)]
        server = subprocess.Popen(serve_cmd, cwd=code_dir, env={**base_env, "FASTXFER_HOME": str(shome)},
                                  stdout=open(out_path, "wb"), stderr=open(err_path, "wb"),
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        port = wait_listening(server, out_path, 30)
        cli(chome, "pin", f"127.0.0.1:{port}", server_fp)
        time.sleep(0.5)  # let the workers finish booting so their idle RSS is in the first sample

        sampler = Sampler(server.pid)
        sampler.start()
        idle = {pid: s.peak_rss for pid, s in sampler.seen.items()}
        send_cmd = [python, "-m", "fastxfer", "send", str(src), "--to", f"127.0.0.1:{port}", "--quiet"]
        if args.streams:
            send_cmd += ["--streams", str(args.streams)]
        if args.chunk_size:
            send_cmd += ["--chunk-size", args.chunk_size]
        client_log = work / "client.log"
        timeout = max(300.0, args.size / (5 * MiB))
        t0 = time.perf_counter()
        with open(client_log, "wb") as clog:
            client = subprocess.Popen(send_cmd, cwd=code_dir, env={**base_env, "FASTXFER_HOME": str(chome)},
                                      stdin=subprocess.DEVNULL, stdout=clog, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            sampler.client_pid = client.pid
            try:
                code = client.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
                print(f"client still running after {timeout:.0f} s: killed", file=sys.stderr)
                os.kill(client.pid, signal.SIGKILL)
                client.wait()
        wall = time.perf_counter() - t0
        time.sleep(0.3)  # workers' post-commit memory (buffers released?) in a last sample or two
        sampler.stop()

        dest = root / CLIENT_NAME / src.name
        t1 = time.perf_counter()
        verified = code == 0 and dest.exists() and sha256_file(dest) == src_sha
        verify_s = time.perf_counter() - t1
        client_out = client_log.read_text(errors="replace").strip()

        code_after = code_state(code_dir)
        rows = []
        order = {"client": 0, "client child": 1, "server master": 2, "server worker": 3}
        for pid, s in sorted(sampler.seen.items(), key=lambda kv: (order[kv[1].role], kv[0])):
            b = s.peak_breakdown
            rows.append({
                "role": s.role, "pid": pid, "samples": s.samples,
                "idle_rss_mib": round(idle.get(pid, 0) / MiB, 1) if pid in idle else None,
                "peak_rss_mib": round(s.peak_rss / MiB, 1),
                "vmhwm_mib": round(s.hwm / MiB, 1),
                "anon_mib": round(b.get("RssAnon", 0) / MiB, 1),
                "file_mib": round(b.get("RssFile", 0) / MiB, 1),
                "shmem_mib": round(b.get("RssShmem", 0) / MiB, 1),
                "under_target": max(s.peak_rss, s.hwm) < TARGET_MIB * MiB,
            })
        all_under = all(r["under_target"] for r in rows)
        mib_s = args.size / MiB / wall

        print(f"\n{args.size / MiB:.0f} MiB file on {fs}, {psutil.cpu_count()} CPUs, "
              f"streams {args.streams or 'auto'}, chunk {args.chunk_size or 'auto'}, sampled every {SAMPLE_INTERVAL} s "
              f"({sampler.rounds} samples); send {wall:.1f} s = {mib_s:.0f} MiB/s, exit {code}; "
              f"SHA-256 {'verified' if verified else 'NOT VERIFIED'}\n")
        print("| process | pid | idle RSS MiB | peak RSS MiB (psutil) | VmHWM MiB (kernel) | "
              "anon / file / shmem at peak | < 150 MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | :---: |")
        for r in rows:
            idle_txt = "—" if r["idle_rss_mib"] is None else f"{r['idle_rss_mib']:.0f}"
            print(f"| {r['role']} | {r['pid']} | {idle_txt} | {r['peak_rss_mib']:.0f} | {r['vmhwm_mib']:.0f} | "
                  f"{r['anon_mib']:.0f} / {r['file_mib']:.0f} / {r['shmem_mib']:.0f} | "
                  f"{'yes' if r['under_target'] else 'NO'} |")
        print(f"\ncode: {code_dir}, content {code_after['fastxfer_sha256']}; repository HEAD {code_after['repo_head']}, "
              f"fastxfer/ {'with uncommitted changes' if code_after['repo_fastxfer_dirty'] else 'clean'}"
              + ("; CHANGED DURING THE RUN" if code_before["fastxfer_sha256"] != code_after["fastxfer_sha256"] else ""))
        if client_out:
            print(f"client said: {client_out.splitlines()[-1]}")
        print(f"(verification of the stored copy took {verify_s:.1f} s, outside the timing)")

        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"rss-{time.strftime('%Y%m%d')}.jsonl", "a") as f:
            f.write(json.dumps({
                "type": "rss", "stamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "size": args.size,
                "filesystem": fs, "cpus": psutil.cpu_count(), "host": platform.node(),
                "streams": args.streams or "auto", "workers": args.workers or "default",
                "prewarm": args.prewarm, "chunk_size": args.chunk_size or "auto",
                "sample_interval_s": SAMPLE_INTERVAL, "samples": sampler.rounds,
                "wall_s": round(wall, 3), "mib_s": round(mib_s, 1), "exit": code,
                "verified": verified, "target_mib": TARGET_MIB, "all_under_target": all_under,
                "processes": rows, "client_output": client_out[-500:],
                "code": code_after, "code_changed_during_run": code_before["fastxfer_sha256"] != code_after["fastxfer_sha256"],
            }) + "\n")
        if not verified:
            print(f"FAILED: exit {code}; server log tail: "
                  f"{' | '.join(err_path.read_text(errors='replace').splitlines()[-3:])}", file=sys.stderr)
        return 0 if verified and all_under else 1
    finally:
        if sampler is not None:
            sampler._stop.set()
        if client is not None and client.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(client.pid, signal.SIGKILL)
            client.wait()
        if server is not None:
            seen = [s.proc for s in sampler.seen.values() if s.role.startswith("server")] if sampler else []
            stop_process(server, seen)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=parse_size, default=4 * GiB, help="file size (default 4G)")
    p.add_argument("--streams", type=int, default=None, help="fastxfer send --streams (default: automatic)")
    p.add_argument("--chunk-size", default=None, help="fastxfer send --chunk-size (default: automatic)")
    p.add_argument("--workers", type=int, default=None, help="fastxfer serve --workers (default: server's)")
    p.add_argument("--no-prewarm", dest="prewarm", action="store_false",
                   help="skip touching the staging copy's worth of tmpfs pages before the send")
    p.add_argument("--code", default=str(REPO),
                   help="folder holding the fastxfer package to run (default: this repository's "
                        "working tree; e.g. a `git archive` of one commit)")
    p.add_argument("--where", default="/dev/shm", help="parent of the work folder (default /dev/shm)")
    venv = REPO / ".venv" / "bin" / "python"
    p.add_argument("--python", default=str(venv) if venv.exists() else sys.executable)
    args = p.parse_args(argv)

    raise_on_sigterm()
    return run(args)


if __name__ == "__main__":
    run_main(main, "processes")
