#!/usr/bin/env python3
"""CPU ceiling of the fastxfer pipeline on this machine.

Every byte fastxfer moves costs CPU in steps no design can skip.  This script
measures each one on one core, as CPU time (user + system, not wall) per byte,
with 4 MiB buffers (fastxfer's default chunk), over ``--mib`` MiB per
repetition, median of 3 repetitions:

=====================================  =====  ==========================================
step                                   count  how
=====================================  =====  ==========================================
SHA-256                                  2    ``hashlib.sha256().update``; once per side
AES-256-GCM seal                         1    ``AESGCM.encrypt_into`` into a reused buffer
AES-256-GCM open                         1    ``AESGCM.decrypt_into`` into a reused buffer
copy in (client: read the source)        1    ``os.preadv`` from a tmpfs file into a buffer
copy out (server: write the copy)        1    ``os.pwrite`` of a buffer into a tmpfs file
loopback TCP, memory to memory           1    a sender and a receiver process on
                                              127.0.0.1, ``sendall`` / ``recv_into`` of
                                              preallocated buffers; CPU of both summed
                                              (each its own process_time, cross-checked
                                              with psutil from the parent)
=====================================  =====  ==========================================

The copy steps cycle through a 64 MiB tmpfs file (/dev/shm) whose pages
already exist, so they measure the copy and not the allocation of new tmpfs
pages (which this VM charges heavily on first touch; see perf/README.md).

The ceiling for client and server sharing the machine: cores ÷ (sum of the
per-byte costs) → MiB/s.  It ignores per-chunk Python and syscall overhead,
so a real transfer stays below it.  A second figure replaces the copy out by
writes into new pages (a fresh file, unlinked after each 64 MiB), which is
what storing a backup on tmpfs costs: the pages of a new file are allocated
and zeroed by the writes that fill them.

Prints a table (``--json``: only the JSON line) and appends one JSON line to
perf/results/ceiling-<UTC timestamp>.jsonl.  Standard library, cryptography
and psutil only; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cryptography
import psutil
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MiB = 1 << 20
CHUNK = 4 * MiB          # fastxfer's default chunk (fastxfer/protocol/layout.py)
TAG = 16                 # AES-GCM tag
AAD = bytes(32)          # a frame header's worth of associated data
FILE_SPAN = 64 * MiB     # tmpfs file the copy steps cycle through
TMPFS = "/dev/shm"
RESULTS = Path(__file__).resolve().parent / "results"

Measure = Callable[[int], float]  # chunks -> CPU seconds


@dataclass
class Step:
    name: str
    count: int            # times each byte goes through this step in a transfer
    reps_ns: list[float]  # ns per byte of each repetition

    @property
    def ns(self) -> float:
        return statistics.median(self.reps_ns)


def random_buffer(size: int) -> bytearray:
    return bytearray(os.urandom(size))


def cpu() -> float:
    return time.process_time()  # user + system of this process


# --- in-process steps: each returns the CPU seconds spent on `chunks` chunks ---

def sha256_step(chunks: int) -> float:
    data = random_buffer(CHUNK)
    t0 = cpu()
    h = hashlib.sha256()
    for _ in range(chunks):
        h.update(data)
    h.digest()
    return cpu() - t0


def seal_step(chunks: int) -> float:
    aead, plain, out = AESGCM(AESGCM.generate_key(256)), random_buffer(CHUNK), bytearray(CHUNK + TAG)
    t0 = cpu()
    for i in range(chunks):
        aead.encrypt_into(i.to_bytes(12, "big"), plain, AAD, out)
    return cpu() - t0


def open_step(chunks: int) -> float:
    aead, nonce = AESGCM(AESGCM.generate_key(256)), bytes(12)
    sealed, out = aead.encrypt(nonce, bytes(random_buffer(CHUNK)), AAD), bytearray(CHUNK)
    t0 = cpu()
    for _ in range(chunks):
        aead.decrypt_into(nonce, sealed, AAD, out)
    return cpu() - t0


def tmpfs_file(folder: str) -> int:
    """A FILE_SPAN file on tmpfs with every page already allocated; returns an fd."""
    fd = os.open(os.path.join(folder, "span.bin"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    block = random_buffer(CHUNK)
    for off in range(0, FILE_SPAN, CHUNK):
        os.pwrite(fd, block, off)
    return fd


def read_step(chunks: int) -> float:
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="ceiling-") as folder:
        fd, buf = tmpfs_file(folder), bytearray(CHUNK)
        try:
            t0 = cpu()
            for i in range(chunks):
                if os.preadv(fd, [buf], (i * CHUNK) % FILE_SPAN) != CHUNK:
                    raise RuntimeError("short read from tmpfs")
            return cpu() - t0
        finally:
            os.close(fd)


def new_file_step(chunks: int) -> float:
    """os.pwrite into fresh files: what the server's copy really costs on tmpfs,
    where every page of a new file is allocated (and zeroed) by the write."""
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="ceiling-") as folder:
        buf = random_buffer(CHUNK)
        spent, done = 0.0, 0
        while done < chunks:
            fd = os.open(os.path.join(folder, "new.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                t0 = cpu()
                for i in range(min(chunks - done, FILE_SPAN // CHUNK)):
                    if os.pwrite(fd, buf, i * CHUNK) != CHUNK:
                        raise RuntimeError("short write to tmpfs")
                spent += cpu() - t0
                done += min(chunks - done, FILE_SPAN // CHUNK)
            finally:
                os.close(fd)
            os.unlink(os.path.join(folder, "new.bin"))  # its pages go back for the next round
        return spent


def write_step(chunks: int) -> float:
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="ceiling-") as folder:
        fd, buf = tmpfs_file(folder), random_buffer(CHUNK)
        try:
            t0 = cpu()
            for i in range(chunks):
                if os.pwrite(fd, buf, (i * CHUNK) % FILE_SPAN) != CHUNK:
                    raise RuntimeError("short write to tmpfs")
            return cpu() - t0
        finally:
            os.close(fd)


# --- loopback TCP: two processes, CPU of both ---

def _tcp_sender(port: int, chunks: int, ctl: multiprocessing.connection.Connection) -> None:
    buf = random_buffer(CHUNK)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        ctl.send("ready")
        ctl.recv()                      # go
        t0 = cpu()
        for _ in range(chunks):
            sock.sendall(buf)
        ctl.send(cpu() - t0)
        ctl.recv()                      # exit (CPU has been read)


def _tcp_receiver(listener: socket.socket, chunks: int, ctl: multiprocessing.connection.Connection) -> None:
    view = memoryview(bytearray(CHUNK))
    view[:] = b"\0" * CHUNK             # touch the pages before timing
    sock, _ = listener.accept()
    listener.close()
    with sock:
        ctl.send("ready")
        ctl.recv()
        t0 = cpu()
        for _ in range(chunks):
            got = 0
            while got < CHUNK:
                n = sock.recv_into(view[got:])
                if n == 0:
                    raise RuntimeError("sender closed early")
                got += n
        ctl.send(cpu() - t0)
        ctl.recv()


def tcp_step(chunks: int) -> tuple[float, float, float]:
    """CPU seconds of (sender, receiver) while `chunks` chunks cross loopback.

    Each process reports its own process_time (precise); the third value is
    the sum of both as psutil sees it from outside (10 ms ticks), a cross-check.
    """
    ctx = multiprocessing.get_context("fork")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pipes = [ctx.Pipe() for _ in range(2)]
    procs = [ctx.Process(target=_tcp_receiver, args=(listener, chunks, pipes[0][1]), daemon=True),
             ctx.Process(target=_tcp_sender, args=(port, chunks, pipes[1][1]), daemon=True)]
    try:
        for p in procs:
            p.start()
        listener.close()
        ctls = [parent for parent, _ in pipes]
        for c in ctls:
            if not c.poll(30):
                raise RuntimeError("loopback step: a process did not get ready")
            c.recv()
        ps = [psutil.Process(p.pid) for p in procs]

        def used() -> list[float]:
            return [t.user + t.system for t in (q.cpu_times() for q in ps)]

        before = used()
        for c in ctls:
            c.send("go")
        reported = []
        for c in ctls:
            if not c.poll(600):
                raise RuntimeError("loopback step: timed out")
            reported.append(c.recv())
        after = used()
        for c in ctls:
            c.send("exit")
        for p in procs:
            p.join(10)
        recv_s, send_s = reported
        return send_s, recv_s, sum(after) - sum(before)
    finally:
        for p in procs:                 # only the two processes started here
            if p.is_alive():
                p.terminate()
                p.join(5)


# --- driver ---

def run_step(measure: Measure, chunks: int, reps: int) -> list[float]:
    measure(min(chunks, 4))             # warm-up: first touch of buffers, caches
    return [measure(chunks) * 1e9 / (chunks * CHUNK) for _ in range(reps)]


def mib_s(ns_per_byte: float) -> float:
    return 1e9 / ns_per_byte / MiB


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="MiB through each step per repetition (default 1024)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per step; the median counts (default 3)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups
    chunks = max(1, args.mib * MiB // CHUNK)
    say = (lambda *a, **k: None) if args.json else (lambda *a, **k: print(*a, **k, file=sys.stderr, flush=True))

    load_before = os.getloadavg()
    steps: list[Step] = []
    for name, count, measure in [
        ("SHA-256 (hashlib)", 2, sha256_step),
        ("AES-256-GCM seal (encrypt_into)", 1, seal_step),
        ("AES-256-GCM open (decrypt_into)", 1, open_step),
        ("copy in: os.preadv tmpfs -> buffer", 1, read_step),
        ("copy out: os.pwrite buffer -> tmpfs", 1, write_step),
    ]:
        say(f"measuring {name} ...")
        steps.append(Step(name, count, run_step(measure, chunks, args.reps)))

    say("measuring loopback TCP (sender + receiver processes) ...")
    tcp_runs = [tcp_step(chunks) for _ in range(args.reps)]
    per_byte = chunks * CHUNK / 1e9
    steps.append(Step("loopback TCP, both processes", 1, [(s + r) / per_byte for s, r, _ in tcp_runs]))

    cores = os.cpu_count() or 1
    total_ns = sum(s.ns * s.count for s in steps)
    ceiling = cores * mib_s(total_ns)
    # The same pipeline when the server's copy lands in new pages, as a backup's does.
    say("measuring writes into new tmpfs pages ...")
    alloc = Step("copy out into new pages (allocation)", 1, run_step(new_file_step, chunks, args.reps))
    copy_out = next(s for s in steps if s.name.startswith("copy out"))
    alloc_total_ns = total_ns - copy_out.ns + alloc.ns
    alloc_ceiling = cores * mib_s(alloc_total_ns)
    now = time.gmtime()
    record = {
        "kind": "ceiling",
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        "cpu_model": cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
        "chunk_bytes": CHUNK,
        "mib_per_rep": chunks * CHUNK // MiB,
        "reps": args.reps,
        "cpu_clock": "time.process_time, user + system (TCP: of each process, summed; psutil cross-check)",
        "copy_method": f"os.preadv from / os.pwrite to a pre-allocated {FILE_SPAN // MiB} MiB file on tmpfs ({TMPFS})",
        "steps": [{"step": s.name, "count": s.count, "ns_per_byte": round(s.ns, 4),
                   "mib_s_one_core": round(mib_s(s.ns)), "reps_ns_per_byte": [round(x, 4) for x in s.reps_ns]}
                  for s in steps],
        "tcp_cpu_s_sender_receiver_psutil": [[round(x, 3) for x in run] for run in tcp_runs],
        "total_ns_per_byte": round(total_ns, 4),
        "cpu_s_per_gib": round(total_ns * (1 << 30) / 1e9, 3),
        "ceiling_mib_s": round(ceiling),
        "new_pages_write_ns_per_byte": round(alloc.ns, 4),
        "ceiling_with_new_pages_mib_s": round(alloc_ceiling),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ceiling-{time.strftime('%Y%m%d-%H%M%S', now)}.jsonl"
    line = json.dumps(record)
    with out.open("a") as f:
        f.write(line + "\n")

    if args.json:
        print(line)
        return 0
    print(f"\n{record['cpu_model']}, {cores} cores; 4 MiB buffers, {record['mib_per_rep']} MiB per step, "
          f"median of {args.reps}; CPU time (user + system)\n")
    print(f"| {'step':<37} | count | {'ns/B':>6} | {'MiB/s one core':>14} | {'ns/B x count':>12} |")
    print(f"| {'-' * 37} | ----: | {'-' * 5}: | {'-' * 13}: | {'-' * 11}: |")
    for s in steps:
        print(f"| {s.name:<37} | {s.count:>5} | {s.ns:>6.3f} | {mib_s(s.ns):>14,.0f} | {s.ns * s.count:>12.3f} |")
    print(f"| {'total per byte moved':<37} | {'':>5} | {'':>6} | {mib_s(total_ns):>14,.0f} | {total_ns:>12.3f} |")
    print(f"\n{total_ns:.3f} ns/B = {record['cpu_s_per_gib']} CPU s/GiB; "
          f"ceiling with {cores} cores: {cores} / {total_ns:.3f} ns/B = {ceiling:,.0f} MiB/s")
    print(f"with the server's copy written into new pages ({alloc.ns:.3f} ns/B instead of {copy_out.ns:.3f}), "
          f"as a backup's file is on tmpfs: {alloc_total_ns:.3f} ns/B, ceiling {alloc_ceiling:,.0f} MiB/s")
    print(f"written to {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
