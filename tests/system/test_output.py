"""Output that tells the truth (issue 14 items 7 and 8), read as a person reads
it: -q says nothing when all went well, -v lists what changed and only that,
-vv everything; counts say what happened; failures come grouped by cause;
progress bars speak the summaries' binary units."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import FX, fx, make_file


def items(out: str) -> dict[str, str]:
    """The itemized lines of a run: {path: code}."""
    codes = ("new", "changed", "touched", "repaired", "linked", "deleted", "unchanged", "recorded", "restored",
             "folder", "link")
    found = {}
    for line in out.splitlines():
        code, _, rest = line.partition(" ")
        if code in codes and rest.strip():
            found[rest.strip().split("  (")[0]] = code
    return found


def tree(top: Path) -> Path:
    make_file(top / "a.txt", 100, seed=1)
    make_file(top / "sub" / "b.txt", 200, seed=2)
    make_file(top / "big.bin", 1 << 20, seed=3)  # past the small-file size: put, chunks, commit
    return top


def test_quiet_prints_nothing_when_all_goes_well(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    sent = client.send(server, top, "-q")
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
    out = tmp_path / "out"
    got = fx(client.home, "get", "docs", "-o", out, "--from", server.address, "-q")
    assert (got.returncode, got.stdout, got.stderr) == (0, "", "")
    checked = fx(server.home, "check", "--root", server.root, "-q")
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    # An error is still said, with -q too.
    missing = client.send(server, tmp_path / "nothing-here", "-q")
    assert missing.returncode != 0 and missing.stdout == "" and "ERROR" in missing.stderr


def test_v_lists_exactly_what_changed_and_vv_everything(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    first = client.send(server, top, "-v")
    assert first.returncode == 0, first.stderr
    assert items(first.stdout) == {"docs": "new", "docs/a.txt": "new", "docs/sub": "new",
                                   "docs/sub/b.txt": "new", "docs/big.bin": "new"}, first.stdout
    # The default: the summary, no list.
    assert client.send(server, top).stdout.count("\n") == 2
    st = (top / "sub" / "b.txt").stat()
    (top / "sub" / "b.txt").write_bytes(b"x" * 200)
    os.utime(top / "sub" / "b.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dirs = {p: p.stat().st_mtime_ns for p in (top, top / "sub")}
    make_file(top / "c.txt", 10, seed=4)
    for p, ns in dirs.items():  # a folder's time as it was: only the files changed
        os.utime(p, ns=(ns, ns))
    again = client.send(server, top, "-v")
    assert again.returncode == 0, again.stderr
    assert items(again.stdout) == {"docs/sub/b.txt": "changed", "docs/c.txt": "new"}, again.stdout
    assert "2 files stored and verified, 2 unchanged" in again.stdout
    everything = client.send(server, top, "-vv")
    assert items(everything.stdout) == {p: "unchanged" for p in ("docs", "docs/a.txt", "docs/sub", "docs/sub/b.txt",
                                                                 "docs/big.bin", "docs/c.txt")}, everything.stdout
    # A path as send prints it is one get takes.
    got = fx(client.home, "get", "docs/sub/b.txt", "-o", tmp_path / "b.txt", "--from", server.address)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "b.txt").read_bytes() == b"x" * 200


def test_unchanged_folders_are_not_listed_as_stored(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    assert client.send(server, top).returncode == 0
    again = client.send(server, top, "-v")
    assert again.returncode == 0, again.stderr
    assert items(again.stdout) == {} and "(folder)" not in again.stdout, again.stdout
    os.chmod(top / "sub", 0o700)
    touched = client.send(server, top, "-v")
    assert items(touched.stdout) == {"docs/sub": "touched"}, touched.stdout


def test_a_checksum_repair_is_counted_as_stored(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    assert client.send(server, top).returncode == 0
    for name in ("a.txt", "big.bin"):  # rot on the server, same size and time
        victim = server.root / "laptop" / "docs" / name
        st = victim.stat()
        data = bytearray(victim.read_bytes())
        data[50] ^= 1
        victim.write_bytes(bytes(data))
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    repaired = client.send(server, top, "--checksum", "-v")
    assert repaired.returncode == 0, repaired.stderr
    assert "2 files stored and verified, 1 unchanged" in repaired.stdout, repaired.stdout
    assert "same size and time" not in repaired.stdout
    assert items(repaired.stdout) == {"docs/a.txt": "repaired", "docs/big.bin": "repaired"}, repaired.stdout
    assert fx(server.home, "check", "--root", server.root).returncode == 0


def test_a_dry_run_counts_and_lists_as_the_real_run(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    assert client.send(server, top).returncode == 0
    make_file(top / "c.txt", 10, seed=4)
    (top / "big.bin").write_bytes(b"y" * 1000)
    dry = client.send(server, top, "-n", "-v")
    real = client.send(server, top, "-v")
    assert dry.returncode == real.returncode == 0, dry.stderr + real.stderr
    assert items(dry.stdout) == {"docs/c.txt": "new", "docs/big.bin": "changed"}, dry.stdout
    assert {p: c for p, c in items(real.stdout).items() if p != "docs"} == items(dry.stdout), real.stdout
    assert "dry run: 2 files would be stored (1010 B), 2 unchanged, 0 failed, 0 skipped" in dry.stdout
    assert "2 files stored and verified, 2 unchanged, 0 failed, 0 skipped" in real.stdout


def test_get_counts_files_not_folders_and_lists_what_it_made(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    assert client.send(server, top).returncode == 0
    out = tmp_path / "out"
    got = fx(client.home, "get", "docs", "-o", out, "--from", server.address, "-v")
    assert got.returncode == 0, got.stderr
    assert "3 files restored and verified, 0 already there (same size and time), 1 folder made" in got.stdout
    assert items(got.stdout) == {"a.txt": "new", "sub": "new", "sub/b.txt": "new", "big.bin": "new"}, got.stdout
    again = fx(client.home, "get", "docs", "-o", out, "--from", server.address, "-v")
    assert again.returncode == 0, again.stderr
    assert "0 files restored and verified, 3 already there" in again.stdout and "made" not in again.stdout
    assert items(again.stdout) == {}


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MiB tmpfs: a get into it runs out of space."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_get_groups_failures_by_cause(tmp_path: Path, server, client, tiny_disk: Path) -> None:
    top = tmp_path / "docs"
    for i in range(24):
        make_file(top / f"f{i:02}.bin", 100 << 10, seed=i)
    assert client.send(server, top).returncode == 0
    out = tiny_disk / "docs"
    out.mkdir()
    for i in (0, 1):  # two files in the way: another cause, fewer files
        (out / f"f{i:02}.bin").write_bytes(b"mine")
    got = fx(client.home, "get", "docs", "-o", out, "--from", server.address)
    assert got.returncode != 0
    errors = [line for line in got.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[0].startswith("ERROR: No space left on device ("), got.stderr  # the largest group first
    full = int(errors[0].split("(")[1].split()[0])
    assert full >= 10 and "more (-v lists them)" in errors[0], errors
    assert "ERROR: exists locally; not replaced (use --force) (2 entries: f00.bin, f01.bin)" in errors, errors
    assert len(errors) == 2, errors
    listed = fx(client.home, "get", "docs", "-o", out, "--from", server.address, "-v")
    assert sum(1 for line in listed.stderr.splitlines() if line.startswith("  f")) >= full + 2, listed.stderr


def test_check_groups_damage_by_cause(tmp_path: Path, server, client) -> None:
    top = tmp_path / "docs"
    for i in range(6):
        make_file(top / f"f{i}.bin", 100, seed=i)
    assert client.send(server, top).returncode == 0
    for i in range(5):
        (server.root / "laptop" / "docs" / f"f{i}.bin").unlink()
    checked = fx(server.home, "check", "--root", server.root)
    assert checked.returncode == 5
    assert "MISSING: in the current view (5 entries: laptop/'docs/f0.bin', laptop/'docs/f1.bin', laptop/'docs/f2.bin' " \
           "and 2 more (-v lists them))" in checked.stdout, checked.stdout
    assert "1 file intact, 0 changed on disk, 5 missing" in checked.stdout
    every = fx(server.home, "check", "--root", server.root, "-v")
    assert "MISSING: as kept snapshots hold them (5 entries" in checked.stdout, checked.stdout
    assert every.stdout.count("  laptop/'docs/f") == 10, every.stdout  # the view's and the snapshot's


def on_a_terminal(home: Path, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run fastxfer with a pseudo-terminal as its standard error (so it draws its
    bars): (exit code, standard output, what the terminal showed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal's size
    proc = subprocess.Popen(FX + [str(a) for a in args], env=dict(os.environ, FASTXFER_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the last writer closed it
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, shown.decode(errors="replace")


def test_progress_bars_use_binary_units(tmp_path: Path, server, client) -> None:
    big = make_file(tmp_path / "docs" / "big.bin", 24 << 20, seed=5)
    code, _, bar = on_a_terminal(client.home, "send", big.parent, "--to", server.address)
    assert code == 0, bar
    assert "sending:" in bar and "24.00 MiB/24.00 MiB" in bar and "iB/s" in bar, bar
    assert "MB/s" not in bar.replace("MiB/s", "") and "24.0M" not in bar, bar
    code, _, bar = on_a_terminal(client.home, "get", "docs", "-o", tmp_path / "out", "--from", server.address)
    assert code == 0 and "receiving:" in bar and "24.00 MiB/24.00 MiB" in bar, bar
    code, sums, bar = on_a_terminal(client.home, "sums", "--from", server.address)
    assert code == 0 and sums.endswith("  docs/big.bin\n"), bar
    assert "listing: 2 entries" in bar and "re-hashing on the server:" in bar and "24.00 MiB/24.00 MiB" in bar, bar
    code, _, bar = on_a_terminal(server.home, "check", "--root", server.root)
    assert code == 0 and "checking stored files:" in bar and "1/1 files" in bar, bar


def test_a_bar_keeps_its_total_through_cut_streams(tmp_path: Path, server, client) -> None:
    import re

    from relay import Relay, cut_at

    src = make_file(tmp_path / "big.bin", 24 << 20, seed=6)
    relay = Relay(server.port, cut_at(6 << 20, times=2))  # both streams cut once, mid-file: chunks sent again
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        code, out, bar = on_a_terminal(client.home, "send", src, "--to", f"127.0.0.1:{relay.port}",
                                       "--streams", "2", "--chunk-size", "1M")
    finally:
        relay.close()
    assert code == 0, bar
    frames = [f for f in bar.split("\r") if f.startswith("sending:")]
    numbers = [re.search(r"\| ([\d.]+ \w+)/([\d.]+ \w+),", f) for f in frames]
    assert frames and all(numbers), frames  # a frame without its total is a bar that lost it
    assert {m.group(2) for m in numbers} == {"24.00 MiB"}, frames
    assert numbers[-1].group(1) == "24.00 MiB" and "100%" in frames[-1], frames
