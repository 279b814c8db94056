#!/usr/bin/env python3
"""How to make many small files durable, on the filesystem of --where: the
strategies issue 12 item 3 names, each storing the same tree the way the
server stores a bundle (staged aside, made durable, renamed into place, each
folder fsynced once), in one process, no network, strategies alternating
run by run.

  syncfs-256      one syncfs(2) per 256 files (what the server does per bundle)
  syncfs-1024     one syncfs per 1,024 files (larger batches)
  fdatasync-each  fdatasync of each file as soon as it is written
  hint-fdatasync  sync_file_range(WRITE) of each file as it is written, then
                  fdatasync of each at the end of its batch of 256

Per run: wall seconds for the whole tree, system CPU.  Each run writes into
new folders and nothing is deleted until the end, in harness.py's work folder
(on ext4 without a journal, deleting makes the next creates slow).  Appends JSON lines to
perf/results/small-durability-STAMP.jsonl.

    .venv/bin/python perf/small_durability.py --where /tmp/bench-disk --runs 3
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

STRATEGIES = ("syncfs-256", "syncfs-1024", "fdatasync-each", "hint-fdatasync")
SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs failed")


def start_writeback(fd: int) -> None:
    if _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range failed")


def store_tree(top: Path, strategy: str, files: int, dirs: int, data: bytes) -> None:
    """*files* copies of *data* in *dirs* folders below *top*, by *strategy*."""
    (top / "staging").mkdir(parents=True)
    staging = os.open(top / "staging", os.O_RDONLY | os.O_DIRECTORY)
    batch = 1024 if strategy == "syncfs-1024" else 256
    per_dir = -(-files // dirs)
    try:
        for first in range(0, files, batch):
            parents: dict[int, int] = {}
            staged: list[tuple[bytes, int, bytes]] = []
            open_fds: list[int] = []
            for i in range(first, min(first + batch, files)):
                d = i // per_dir
                if d not in parents:
                    (top / f"d{d:03d}").mkdir(exist_ok=True)
                    parents[d] = os.open(top / f"d{d:03d}", os.O_RDONLY | os.O_DIRECTORY)
                tmp = b"s%d" % i
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=staging)
                os.pwrite(fd, data, 0)
                os.utime(fd, ns=(i, i))
                if strategy == "fdatasync-each":
                    os.fdatasync(fd)
                if strategy == "hint-fdatasync":
                    start_writeback(fd)
                    open_fds.append(fd)
                else:
                    os.close(fd)
                staged.append((tmp, parents[d], b"f%d" % i))
            if strategy.startswith("syncfs"):
                syncfs(staging)
            for fd in open_fds:
                os.fdatasync(fd)
                os.close(fd)
            for tmp, parent, name in staged:
                os.rename(tmp, name, src_dir_fd=staging, dst_dir_fd=parent)
            for fd in parents.values():
                os.fsync(fd)
                os.close(fd)
    finally:
        os.close(staging)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--where", type=Path, required=True, help="folder on the filesystem to measure")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list of " + ", ".join(STRATEGIES))
    ap.add_argument("--runs", type=int, default=3, help="runs of each strategy")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--file-size", default="16K")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        ap.error(f"unknown strategies: {', '.join(sorted(unknown))}")
    data = os.urandom(harness.parse_size(args.file_size))
    log = harness.JsonLog(harness.RESULTS / f"small-durability-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    times: dict[str, list[float]] = {s: [] for s in strategies}
    # The harness's work folder: on a disk it waits until earlier deletions no longer
    # slow creates, and marks its own deletion for the next run.
    with harness.work_folder(args.where, keep=False) as work:
        kind = harness.filesystem_of(work)
        log.write("meta", where=str(args.where), filesystem=kind, files=args.files, dirs=args.dirs,
                  file_size=len(data))
        for run in range(args.runs):
            for strategy in strategies:
                os.sync()
                time.sleep(0.5)
                top = work / f"{strategy}-{run}"
                t0, c0 = time.perf_counter(), os.times()
                store_tree(top, strategy, args.files, args.dirs, data)
                wall, system = time.perf_counter() - t0, os.times().system - c0.system
                times[strategy].append(wall)
                log.write("run", strategy=strategy, run=run, wall_s=wall, system_s=system)
                print(f"run {run + 1}  {strategy:15s} {wall:7.3f} s  (system {system:.2f} s)", flush=True)
    base = statistics.median(times[strategies[0]])
    print(f"\n{kind}: {args.files} x {len(data)} B, median of {args.runs}")
    print("| strategy | median s | ratio to " + strategies[0] + " |\n| --- | ---: | ---: |")
    for s in strategies:
        m = statistics.median(times[s])
        log.write("median", strategy=s, wall_s=m, ratio=m / base)
        print(f"| {s} | {m:.3f} | {m / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
