"""Bandwidth limits on real transfers: 32 MiB through a limit of 8 MiB/s with
a 1 MiB burst needs 31/8 = 3.9 s, where this machine moves it unlimited in
about one.  The lower bound is the assertion (the limit holds, over 4
streams and 2 workers); the upper bound is loose, as speed is measured in
perf/bwlimit.py, not here."""

from __future__ import annotations

import time

from conftest import fx, make_client, make_file, sha256_file, start_server

SIZE = 32 << 20
LIMIT = "8M"
AT_LEAST = 3.5  # seconds: (32 - 1) MiB at 8 MiB/s is 3.875, less some slack for clocks
AT_MOST = 15.0


def timed(home, *args) -> tuple[float, object]:
    started = time.monotonic()
    done = fx(home, *args, timeout=60)
    return time.monotonic() - started, done


def test_send_and_get_hold_to_their_bwlimit(tmp_path, server, client) -> None:
    src = make_file(tmp_path / "src" / "big.bin", SIZE, seed=14)
    took, done = timed(client.home, "send", src, "--to", server.address, "--bwlimit", LIMIT, "--streams", "4")
    assert done.returncode == 0, done.stderr
    assert AT_LEAST <= took <= AT_MOST, took
    assert sha256_file(server.root / "laptop" / "big.bin") == sha256_file(src)

    out = tmp_path / "restored.bin"
    took, done = timed(client.home, "get", "big.bin", "--from", server.address, "-o", out,
                       "--bwlimit", LIMIT, "--streams", "4")
    assert done.returncode == 0, done.stderr
    assert AT_LEAST <= took <= AT_MOST, took
    assert sha256_file(out) == sha256_file(src)


def test_the_server_holds_each_client_to_its_limit(tmp_path) -> None:
    srv = start_server(tmp_path / "server-home", tmp_path / "root", workers=2,
                       extra=("--client-bwlimit", LIMIT))
    try:
        client = make_client(tmp_path, srv, "laptop")
        src = make_file(tmp_path / "src" / "big.bin", SIZE, seed=15)
        # 4 streams, spread over both workers: the limit is the client's, not a worker's
        took, done = timed(client.home, "send", src, "--to", srv.address, "--streams", "4")
        assert done.returncode == 0, done.stderr
        assert AT_LEAST <= took <= AT_MOST, took
        assert sha256_file(srv.root / "laptop" / "big.bin") == sha256_file(src)

        out = tmp_path / "restored.bin"
        took, done = timed(client.home, "get", "big.bin", "--from", srv.address, "-o", out, "--streams", "4")
        assert done.returncode == 0, done.stderr
        assert AT_LEAST <= took <= AT_MOST, took
        assert sha256_file(out) == sha256_file(src)
    finally:
        srv.stop()
