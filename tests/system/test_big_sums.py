"""Large backups: sums (which send --checksum uses to compare) is answered a
page at a time, each page ending once the server has re-hashed its budget
(serve --hash-per-reply, lowered here to 1 MiB), inside a file if need be, so
no reply waits on all the hashing at once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import fx, make_client, make_file, start_server, wait_for
from test_migration import extract_release, old_fx

KIB = 1 << 10
# One file of three budgets, six chunked files and five bundled ones, 7.1 MiB in all.
SIZES = [600 * KIB] * 6 + [100 * KIB] * 5
BIG = 3 << 20


def make_tree(top: Path) -> dict[str, str]:
    """The files, and the sums lines sha256sum would print for them."""
    expected = {}
    for i, size in enumerate(SIZES):
        f = make_file(top / f"f{i:02}.bin", size, seed=i)
        expected[f"docs/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    big = make_file(top / "big.bin", BIG, seed=99)  # listed first: the first pages stop inside it
    expected["docs/big.bin"] = hashlib.sha256(big.read_bytes()).hexdigest()
    return expected


def sums_of(stdout: str) -> dict[str, str]:
    return {path: sha for sha, path in (line.split("  ", 1) for line in stdout.splitlines())}


@pytest.fixture
def paged(tmp_path: Path):
    srv = start_server(tmp_path / "server-home", tmp_path / "root", extra=("--hash-per-reply", "1M"))
    yield srv
    srv.stop()


def test_sums_check_and_checksum_send_page_by_bytes_hashed(tmp_path: Path, paged) -> None:
    client = make_client(tmp_path, paged, "laptop")
    top = tmp_path / "docs"
    expected = make_tree(top)
    assert client.send(paged, top, "--chunk-size", "256K").returncode == 0

    done = fx(client.home, "sums", "--from", paged.address)
    assert done.returncode == 0, done.stderr
    assert sums_of(done.stdout) == expected
    # Every page ended at the budget, the first two inside big.bin (12 chunks
    # of 256 KiB): 7.1 MiB in 1 MiB pages.
    log = paged.log_text()
    assert log.count("sums page of 0 of 12 files, 1048576 bytes re-hashed") >= 2
    assert log.count("sums page of") >= 6

    at = fx(client.home, "sums", "--at", "1", "--from", paged.address)  # content named by digest
    assert at.returncode == 0, at.stderr
    assert sums_of(at.stdout) == expected
    assert paged.log_text().count("sums page of") >= 12

    before = paged.log_text().count("sums page of")
    again = client.send(paged, top, "--checksum")  # compares through the same pages
    assert again.returncode == 0, again.stderr
    assert f"0 files stored and verified, {len(SIZES) + 1} unchanged, 0 failed" in again.stdout
    assert paged.log_text().count("sums page of") >= before + 6

    # One file changed on the server's disk is still found, whichever page holds it.
    stored = paged.root / "laptop" / "docs" / "f04.bin"
    data = bytearray(stored.read_bytes())
    data[1000] ^= 1
    stored.write_bytes(bytes(data))
    bad = fx(client.home, "sums", "--from", paged.address)
    assert bad.returncode == 5 and "'docs/f04.bin' is changed on the server" in bad.stderr
    del expected["docs/f04.bin"]
    assert sums_of(bad.stdout) == expected
    check = fx(paged.home, "check", "--root", paged.root)
    assert check.returncode == 5 and "CHANGED: laptop/'docs/f04.bin'" in check.stdout
    assert f"{len(SIZES)} files intact, 1 changed on disk" in check.stdout


def test_pages_and_the_release_before_them(tmp_path: Path, paged) -> None:
    """A client from before pages is answered whole; a server from before them
    ignores "page" and answers whole, which the new client takes."""
    release = extract_release(tmp_path / "release", "1e18228")  # the last commit before pages
    top = tmp_path / "docs"
    expected = make_tree(top)
    home = tmp_path / "old-client"
    fp = old_fx(release, home, "id").stdout.strip()
    fx(paged.home, "trust", "add", fp, "--name", "laptop", check=True)
    old_fx(release, home, "pin", paged.address, paged.fingerprint)
    old_fx(release, home, "send", top, "--to", paged.address)
    old = old_fx(release, home, "sums", "--from", paged.address)
    assert sums_of(old.stdout) == expected and "sums page of" not in paged.log_text()
    old_fx(release, home, "send", top, "--checksum", "--to", paged.address)  # its probes name digests
    assert "sums page of" not in paged.log_text()

    old_server = start_server(tmp_path / "old-server-home", tmp_path / "old-root", code=release)
    try:
        client = make_client(tmp_path, old_server, "desk")
        assert client.send(old_server, top).returncode == 0
        done = fx(client.home, "sums", "--from", old_server.address)
        assert done.returncode == 0, done.stderr
        assert sums_of(done.stdout) == expected
        again = client.send(old_server, top, "--checksum")
        assert again.returncode == 0 and f"{len(SIZES) + 1} unchanged, 0 failed" in again.stdout
    finally:
        old_server.stop()


def held_open(server, path: Path) -> bool:
    """Whether a worker of *server* has *path* open."""
    import psutil

    return any(f.path == str(path) for pid in server.worker_pids() for f in psutil.Process(pid).open_files())


def test_a_page_stopped_inside_a_file_goes_on_or_lets_it_go(tmp_path: Path, paged, monkeypatch) -> None:
    """The session keeps the file a page stopped in open for the next page, and
    closes it when the client asks about another file instead."""
    from fastxfer.client.connect import connect_control

    client = make_client(tmp_path, paged, "laptop")
    top = tmp_path / "docs"
    expected = make_tree(top)
    assert client.send(paged, top, "--chunk-size", "256K").returncode == 0
    big = paged.root / "laptop" / "docs" / "big.bin"
    monkeypatch.setenv("FASTXFER_HOME", str(client.home))
    control, _ = connect_control(paged.address)
    try:
        first = control.call({"t": "sums", "paths": ["docs/big.bin", "docs/f00.bin"], "page": True}, "sums_ok")
        assert (first["files"], first["next"], first["done"]) == ([], 0, 1 << 20)
        assert held_open(paged, big)
        other = control.call({"t": "sums", "paths": ["docs/f00.bin"], "page": True}, "sums_ok")
        assert other["files"] == [{"path": "docs/f00.bin", "status": "ok", "sha256": expected["docs/f00.bin"]}]
        assert "next" not in other and not held_open(paged, big)
        answers, paths = [], ["docs/big.bin", "docs/f00.bin"]
        for _ in range(8):  # from the start again: 3 MiB of big.bin in 1 MiB pages, then f00
            reply = control.call({"t": "sums", "paths": paths, "page": True}, "sums_ok")
            answers += reply["files"]
            paths = paths[len(reply["files"]):]
            if "next" not in reply:
                break
        assert [(a["path"], a["sha256"]) for a in answers] == [(p, expected[p])
                                                              for p in ("docs/big.bin", "docs/f00.bin")]
        whole = control.call({"t": "sums", "paths": ["docs/big.bin", "docs/f00.bin"]}, "sums_ok")  # no page: as before
        assert "next" not in whole and [a["sha256"] for a in whole["files"]] == [expected["docs/big.bin"],
                                                                               expected["docs/f00.bin"]]
        control.call({"t": "sums", "paths": ["docs/big.bin"], "page": True}, "sums_ok")
        assert held_open(paged, big)
    finally:
        control.close()
    assert wait_for(lambda: not held_open(paged, big), 10)  # the session's end lets it go
