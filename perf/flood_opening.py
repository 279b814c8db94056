"""How long an authorized opening takes while strangers flood the port, against
how long the flood lets a stranger live (docs/PROTOCOL.md § 11, strangers in all).

A real server (2 workers) on 127.0.0.1; idle strangers from 40 loopback
addresses, 64 each, reopened as they are cut (tests/flood.py, in a process
of its own, so that it and the client do not share an interpreter lock);
meanwhile ``--tries`` control openings from 127.0.0.1 (TCP, TLS, proof, welcome), one
after another, none retried.  Prints the openings' median and maximum, how
many were cut, and the flood's cuts per second per worker, from which a
stranger's life at the bound follows (bound ÷ rate).  Stops after ``--tries``
openings or ``--seconds``, whichever comes first; appends one JSON line to
``perf/results/flood-STAMP.jsonl``.

    .venv/bin/python perf/flood_opening.py [--tries 40] [--per-source 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]

from conftest import make_client, start_server  # noqa: E402
from flood import Flood, loopback_sources  # noqa: E402

from fastxfer.client.connect import ControlClient  # noqa: E402
from fastxfer.errors import ConnectError  # noqa: E402
from fastxfer.protocol import limits  # noqa: E402
from fastxfer.trust.identity import load_or_create  # noqa: E402
from fastxfer.trust.pins import PinList  # noqa: E402


def flood_for(port: int, sources: int, per_source: int, seconds: float, cuts, ready) -> None:
    with Flood(port, loopback_sources(sources), per_source, seconds=seconds, max_opens=10**7) as flood:
        while flood.held < sources * per_source:
            time.sleep(0.05)
        ready.set()
        while flood.is_running():
            cuts.value = flood.cuts
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tries", type=int, default=40)
    ap.add_argument("--per-source", type=int, default=64)
    ap.add_argument("--sources", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks
    work = Path(tempfile.mkdtemp(prefix="fx-flood-", dir="/dev/shm"))
    server = start_server(work / "server-home", work / "root", workers=2)
    try:
        client = make_client(work, server, "laptop")
        control = ControlClient("127.0.0.1", server.port, load_or_create(client.home), PinList(client.home))
        times, cut = [], 0
        cuts, ready = multiprocessing.Value("q", 0), multiprocessing.Event()
        flooder = multiprocessing.get_context("fork").Process(
            target=flood_for, args=(server.port, args.sources, args.per_source, args.seconds + 10, cuts, ready))
        flooder.start()
        try:
            ready.wait(30)
            time.sleep(0.5)
            start, first_cuts = time.monotonic(), cuts.value
            for _ in range(args.tries):
                if time.monotonic() - start > args.seconds:
                    break
                t = time.monotonic()
                try:
                    control.connect()
                    times.append(time.monotonic() - t)
                except ConnectError:
                    cut += 1
                control.drop()
            rate = (cuts.value - first_cuts) / (time.monotonic() - start) / 2
        finally:
            flooder.terminate()
            flooder.join()
        bound = limits.unauth_per_worker(limits.MAX_CONNECTIONS_PER_WORKER)
        print(f"openings: {len(times)} done, {cut} cut; median {statistics.median(times) * 1e3:.0f} ms, "
              f"max {max(times) * 1e3:.0f} ms")
        print(f"flood: {rate:.0f} cuts/s per worker; a stranger lives ~{bound / rate * 1e3:.0f} ms "
              f"at the bound of {bound}")
        results = Path(__file__).resolve().parent / "results"
        with open(results / f"flood-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.jsonl", "a") as out:
            out.write(json.dumps({"tries": len(times) + cut, "cut": cut, "median_s": statistics.median(times),
                                  "max_s": max(times), "cuts_per_s_per_worker": rate, "bound": bound,
                                  "sources": args.sources, "per_source": args.per_source}) + "\n")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
