"""The main job, end to end on 127.0.0.1, with nothing kept afterwards.

A temporary folder holds the server's root, both identities and a generated
file; the identities are made to trust each other (the client's fingerprint
authorized on the server, the server's pinned on the client), the file is
sent over several streams, and its stored copy is checked byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

FX = [sys.executable, "-m", "fastxfer"]


def run(home: str, *args: str, capture: bool = True) -> str:
    env = dict(os.environ, FASTXFER_HOME=home)
    done = subprocess.run(FX + list(args), env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return (done.stdout or "").strip()


def make_file(path: str, size: int) -> None:
    # Random bytes, so neither compression nor deduplication can flatter the figure.
    block = 8 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256, help="MiB to send (default: %(default)s)")
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="fastxfer-demo-", dir=base) as tmp:
        server_home, client_home = os.path.join(tmp, "server-id"), os.path.join(tmp, "client-id")
        root, source = os.path.join(tmp, "root"), os.path.join(tmp, "demo.bin")
        print(f"== working in {tmp}")
        server_fp, client_fp = run(server_home, "id"), run(client_home, "id")
        print(f"== server identity {server_fp}\n== client identity {client_fp}")
        run(server_home, "trust", "add", client_fp, "--name", "demo", capture=False)
        print(f"== generating {args.size} MiB of random data")
        make_file(source, args.size << 20)
        server = subprocess.Popen(
            FX + ["serve", "--root", root, "--bind", "127.0.0.1", "--port", "0"],
            env=dict(os.environ, FASTXFER_HOME=server_home),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            port = None
            assert server.stdout is not None
            for line in server.stdout:
                if line.startswith("listening on "):
                    port = line.rsplit(":", 1)[1].strip()
                    break
            if port is None:
                print("ERROR: the server did not start", file=sys.stderr)
                return 1
            address = f"127.0.0.1:{port}"
            print(f"== server listening on {address}")
            run(client_home, "pin", address, server_fp, capture=False)
            start = time.monotonic()
            run(client_home, "send", source, "--to", address, "--streams", str(args.streams),
                "--sha256", capture=False)
            elapsed = time.monotonic() - start
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        print("== server stopped")
        stored = os.path.join(root, "demo", "demo.bin")
        want, got = sha256(source), sha256(stored)
        if want != got:
            print(f"ERROR: stored copy differs: {got} != {want}", file=sys.stderr)
            return 1
        print(f"== verified: SHA-256 {got} on both sides")
        print(f"== {args.size} MiB in {elapsed:.2f} s, {args.size / elapsed:.0f} MiB/s "
              "(whole command, Python start-up and handshakes included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
