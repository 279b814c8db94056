#!/usr/bin/env python3
"""A limited send over an emulated long, lossy path: what the limit and the
automatic stream count (client/tuning.py) make of each other.

Brings up the link emulator of /work/shared/wan (see perf/wan.py; default a
100 ms round trip, 100 Mbit/s, 0.5 % loss each way), starts a fastxfer server
in wan-s on 198.18.2.1 (2 workers, fresh root and homes, the client trusted
and the server pinned), and from wan-c sends one new random file per run
through each limit of ``--limits`` (``none`` for no limit), in the order
given: the command's own time (``--json`` ``seconds``), the rate, and the
streams the tuning ended with.  Appends JSON lines to
perf/results/wan-bwlimit-STAMP.jsonl; takes the link down (wan-down.sh) and
stops the server in a finally block.  As root only; without the emulator it
says so and exits 0.

    .venv/bin/python perf/wan_bwlimit.py [--size 64M] [--limits none,2M,4M,1M]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SetupError, parse_size  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "perf" / "results"
ADDR = "198.18.2.1"
MiB = 1 << 20


def cli(python: str, home: Path, *args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTXFER_HOME=str(home), PYTHONPATH=str(REPO))
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [python, "-m", "fastxfer", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=900)


def serve(python: str, base: Path) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, FASTXFER_HOME=str(base / "sh"), PYTHONPATH=str(REPO))
    with open(base / "serve.log", "w") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", "wan-s", python, "-m", "fastxfer", "serve", "--root",
                                 str(base / "root"), "--bind", ADDR, "--port", "0", "--workers", "2"],
                                env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
    raise SetupError("the server did not start (serve.log)")


def link(wan: Path, script: str, env: dict[str, str] | None = None) -> None:
    """wan-up.sh or wan-down.sh, as the emulator's README runs them (no sshd: no scp here)."""
    done = subprocess.run([str(wan / script)], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SetupError(f"{script}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=64 * MiB)
    ap.add_argument("--limits", default="none,2M,4M,1M")
    ap.add_argument("--delay-ms", default="50", help="one way (DELAY_MS)")
    ap.add_argument("--rate", default="100mbit", help="the link (RATE)")
    ap.add_argument("--loss", default="0.5", help="percent per packet each way (LOSS)")
    ap.add_argument("--wan", type=Path, default=Path("/work/shared/wan"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    if os.geteuid() != 0 or not (args.wan / "wan-up.sh").exists():
        print("skipped: needs root and the link emulator in", args.wan)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks
    server, up, base = None, False, Path(tempfile.mkdtemp(prefix="fx-wanbw-", dir="/dev/shm"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    scenario = {"delay_ms": args.delay_ms, "rate": args.rate, "loss": args.loss}
    try:
        up = True
        link(args.wan, "wan-up.sh", {"DELAY_MS": args.delay_ms, "RATE": args.rate, "LOSS": args.loss})
        for d in ("sh", "ch", "root"):
            (base / d).mkdir()
        server_fp = cli(args.python, base / "sh", "id").stdout.split()[0]
        client_fp = cli(args.python, base / "ch", "id").stdout.split()[0]
        cli(args.python, base / "sh", "trust", "add", client_fp, "--name", "wan")
        server, port = serve(args.python, base)
        cli(args.python, base / "ch", "pin", f"{ADDR}:{port}", server_fp)
        print("| limit | seconds | MiB/s | of the limit | streams |\n| --- | ---: | ---: | ---: | ---: |")
        for i, limit in enumerate(args.limits.split(",")):
            src = base / f"src-{i}.bin"
            with open(src, "wb") as f:
                f.write(os.urandom(args.size))  # new bytes: a copy of a stored file would be linked
            extra = [] if limit == "none" else ["--bwlimit", limit]
            done = cli(args.python, base / "ch", "send", src, "--to", f"{ADDR}:{port}", "--json", *extra, ns="wan-c")
            src.unlink()
            report = json.loads(done.stdout)
            rate = args.size / report["seconds"]
            share = rate / parse_size(limit) if limit != "none" else None
            row = {"stamp": stamp, **scenario, "limit": limit, "size": args.size, "seconds": report["seconds"],
                   "mib_s": rate / MiB, "rate_over_limit": share, "streams": report["streams"],
                   "exit_code": report["exit_code"]}
            print(f"| {limit} | {report['seconds']:.1f} | {rate / MiB:.2f} | "
                  f"{'—' if share is None else f'{share:.2f}'} | {report['streams']} |", flush=True)
            RESULTS.mkdir(exist_ok=True)
            with open(RESULTS / f"wan-bwlimit-{stamp}.jsonl", "a") as out:
                out.write(json.dumps(row) + "\n")
    except SetupError as exc:
        print(f"skipped: {exc}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
        if up:
            link(args.wan, "wan-down.sh")
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
