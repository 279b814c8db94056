"""Round trips through a real server: bytes and digests must match."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import FX, files_under, make_client, make_file, sha256_file

CHUNK = 64 << 10
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7]


@pytest.mark.parametrize("streams", [1, 2, 8])
def test_round_trip_sizes(tmp_path: Path, server, client, streams: int) -> None:
    src = tmp_path / "src"
    files = [make_file(src / f"f{size}.bin", size, seed=size) for size in SIZES]
    done = client.send(server, *files, "--streams", str(streams), "--chunk-size", "64K",
                       "--dest", f"s{streams}")
    assert done.returncode == 0, done.stderr
    for f in files:
        stored = server.root / "laptop" / f"s{streams}" / f.name
        assert stored.read_bytes() == f.read_bytes()
    assert f"{len(files)} files stored and verified, 0 unchanged, 0 failed" in done.stdout


@pytest.mark.parametrize("streams", [1, 2, 8])
def test_round_trip_large(tmp_path: Path, server, client, streams: int) -> None:
    big = make_file(tmp_path / "big.bin", 64 << 20, seed=streams)
    done = client.send(server, big, "--streams", str(streams), "--sha256")
    assert done.returncode == 0, done.stderr
    want = sha256_file(big)
    assert sha256_file(server.root / "laptop" / "big.bin") == want
    # --sha256 prints what sha256sum prints
    assert f"{want}  {big}" in done.stdout


def test_metadata_kept_and_setuid_dropped(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "tool", 1000)
    os.chmod(f, 0o4755)
    os.utime(f, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    assert client.send(server, f).returncode == 0
    st = os.stat(server.root / "laptop" / "tool")
    assert st.st_mode & 0o7777 == 0o755
    assert st.st_mtime_ns == 1_600_000_000_123_456_789


def test_four_clients_at_once(tmp_path: Path, server) -> None:
    clients = [make_client(tmp_path, server, f"c{i}") for i in range(4)]
    sources = [make_file(tmp_path / f"in{i}" / "data.bin", (8 << 20) + i, seed=100 + i) for i in range(4)]
    procs = [
        subprocess.Popen(FX + ["send", str(s), "--to", server.address, "--streams", "3"],
                         env=dict(os.environ, FASTXFER_HOME=str(c.home)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, s in zip(clients, sources)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err + server.log_text()
    for c, s in zip(clients, sources):
        assert sha256_file(server.root / c.name / "data.bin") == sha256_file(s)


def test_replacing_keeps_the_older_version(tmp_path: Path, server, client) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"first version\n")
    assert client.send(server, f).returncode == 0
    f.write_bytes(b"second, longer version\n")
    os.utime(f, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    done = client.send(server, f)
    assert done.returncode == 0, done.stderr
    assert (server.root / "laptop" / "notes.txt").read_bytes() == b"second, longer version\n"
    kept = list((server.root / ".fastxfer" / "versions" / "laptop").glob("notes.txt~*"))
    assert [k.read_bytes() for k in kept] == [b"first version\n"]
    # state never shows among the client's files
    assert files_under(server.root) == ["laptop", "laptop/notes.txt"]


def test_same_file_again_moves_no_data(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "same.bin", 3 << 20)
    assert client.send(server, f).returncode == 0
    again = client.send(server, f, "-vv")
    assert again.returncode == 0
    assert "unchanged same.bin" in again.stdout
    assert "sent 0 B" in again.stdout


def test_missing_local_file_is_a_clear_error(tmp_path: Path, server, client) -> None:
    done = client.send(server, tmp_path / "nope.bin")  # nothing else to send: an error, nothing sent
    assert done.returncode == 7
    assert done.stderr.startswith("ERROR: ") and "nope.bin: No such file or directory" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    there = make_file(tmp_path / "there.bin", 10)
    some = client.send(server, tmp_path / "nope.bin", there)  # with something to send: a warning, the rest goes
    assert some.returncode == 9  # not everything named was stored
    assert some.stderr.startswith("WARNING: ") and "nope.bin" in some.stderr
    assert "1 file stored and verified, 0 unchanged, 0 failed, 1 skipped" in some.stdout
