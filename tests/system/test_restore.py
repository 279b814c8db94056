"""get: back from the server, verified, confined to the destination."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
from pathlib import Path


from conftest import FX, fx, make_client, make_file, restart_while, sha256_file, start_server, wait_for
from relay import Relay, throttled, throttled_then_held
from test_tree import snapshot


def get(client, server, *args) -> subprocess.CompletedProcess:
    return fx(client.home, "get", *args, "--from", server.address, timeout=300)


def start_get(client, relay, out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """get of "data" through a relay into *out*, left running, with small waves."""
    return subprocess.Popen(FX + ["get", "data", "--from", f"127.0.0.1:{relay.port}", "-o", str(out)],
                            env=dict(os.environ, FASTXFER_HOME=str(client.home), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=few_descriptors)


def get_interrupted(tmp_path: Path, server, client, top: Path, interrupt,
                    env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, Path]:
    """Send *top*, then get it through a relay that trickles the requests and
    then holds them (so the get cannot finish first); once the first files
    are placed, interrupt(proc, release) does something to the run, calls
    release() if the run is to go on, and returns its stderr.  (the get
    process, its stderr, where it restores)"""
    assert client.send(server, top, "--chunk-size", "1M").returncode == 0
    gate = threading.Event()
    relay = Relay(server.port, throttled_then_held(20_000, gate, 12_000))
    out = tmp_path / "restored"
    out.mkdir()
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_get(client, relay, out, env)  # small waves: the first is placed early
        assert wait_for(lambda: len(list(out.rglob("f*.bin"))) > 0, timeout=60)
        err = interrupt(proc, gate.set)
    finally:
        gate.set()
        relay.close()
    return proc, err, out


def few_descriptors() -> None:
    """In a child before exec: a descriptor limit that makes get's waves small (about 86 entries)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))


def test_send_then_get_is_identical(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    make_file(top / "big.bin", (3 << 20) + 5, seed=1)  # many chunks at 64K
    make_file(top / "small" / "a.txt", 100, seed=2)
    make_file(top / "small" / "deep" / "b.bin", 300_000, seed=3)  # above the bundle size
    make_file(top / "empty.bin", 0)
    (top / "empty-folder").mkdir()
    os.chmod(top / "small" / "a.txt", 0o640)
    os.chmod(top / "small", 0o750)
    os.utime(top / "small", ns=(1_400_000_000 * 10**9,) * 2)
    os.symlink("small/a.txt", top / "inside-link")
    os.symlink("/etc/hostname", top / "absolute-link")
    os.symlink("../small/a.txt", top / "small" / "deep" / "up-link")  # climbs, and stays inside
    os.symlink("../../outside", top / "small" / "escaping-link")
    os.symlink("nowhere", top / "dangling-link")
    assert client.send(server, top, "--chunk-size", "64K").returncode == 0
    out = tmp_path / "restored"
    out.mkdir()
    done = get(client, server, "data", "-o", out)
    assert done.returncode == 0, done.stderr  # links are data: made exactly as stored
    assert snapshot(out) == snapshot(top)  # folders too: their modes and times come back
    assert os.readlink(out / "absolute-link") == "/etc/hostname"

    safe = tmp_path / "safe"
    done = get(client, server, "data", "-o", safe, "--safe-links")
    assert done.returncode == 0, done.stderr  # asked for: left out, not a failure
    assert "2 unsafe links left out" in done.stdout and "leaves the restore" in done.stderr
    want = snapshot(top)
    for unsafe in ("absolute-link", "small/escaping-link"):
        want.pop(unsafe)
        assert not os.path.lexists(safe / unsafe)
    assert snapshot(safe) == want


def test_a_tree_of_several_waves_comes_back_whole(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(700):  # several waves of small files (descriptors are short), an empty one too
        make_file(top / f"d{i % 7}" / f"f{i}.bin", i * 13, seed=i)
    make_file(top / "big.bin", (2 << 20) + 3, seed=9)  # and one of many chunks
    assert client.send(server, top, "--chunk-size", "64K").returncode == 0
    out = tmp_path / "restored"
    out.mkdir()
    done = subprocess.run(FX + ["get", "data", "-o", str(out), "--from", server.address],
                          env=dict(os.environ, FASTXFER_HOME=str(client.home)), capture_output=True,
                          text=True, timeout=300, preexec_fn=few_descriptors)
    assert done.returncode == 0, done.stderr
    assert "701 files restored and verified" in done.stdout  # and 7 folders made, not counted as verified
    assert snapshot(out) == snapshot(top)


def test_a_get_cut_off_leaves_only_whole_files(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(600):
        make_file(top / f"d{i % 6}" / f"f{i}.bin", 2000 + i, seed=i)

    def kill(proc: subprocess.Popen, release) -> str:
        os.killpg(server.proc.pid, signal.SIGKILL)  # master and workers: every connection drops
        return proc.communicate(timeout=120)[1]

    # The server stays down: one reconnection is enough to give up on it.
    proc, err, out = get_interrupted(tmp_path, server, client, top, kill, {"FASTXFER_RECONNECTS": "1"})
    assert proc.returncode not in (0, None), err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".fastxfer-get-")]  # nothing half-written
    assert 0 < len(files) < 600, len(files)
    for p in files:  # what is there is whole
        assert p.read_bytes() == (top / p.relative_to(out)).read_bytes()


def test_ctrl_c_during_a_get_leaves_whole_files_and_a_rerun_finishes(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(600):
        make_file(top / f"d{i % 6}" / f"f{i}.bin", 2000 + i, seed=i)

    def ctrl_c(proc: subprocess.Popen, release) -> str:
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=20)[1]

    proc, err, out = get_interrupted(tmp_path, server, client, top, ctrl_c)
    assert proc.returncode == 130 and "run the same get again" in err, err
    assert not [p for p in out.rglob("*") if p.name.startswith(".fastxfer-get-")]  # nothing half-written
    rerun = get(client, server, "data", "-o", out)
    assert rerun.returncode == 0 and "already there" in rerun.stdout, rerun.stderr
    assert snapshot(out) == snapshot(top)


def test_a_get_survives_a_server_restart(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(400):
        make_file(top / f"d{i % 4}" / f"f{i}.bin", 2000 + i, seed=i)
    make_file(top / "big.bin", 8 << 20, seed=7)
    proc, err, out = get_interrupted(tmp_path, server, client, top,
                                     lambda proc, release: restart_while(server, proc, release))
    assert proc.returncode == 0, err
    assert snapshot(out) == snapshot(top)


def test_streams_told_busy_leave_and_the_others_finish(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server-home", tmp_path / "root", workers=1)
    relay = None
    try:
        client = make_client(tmp_path, server, "laptop")
        top = tmp_path / "data"
        for i in range(400):
            make_file(top / f"d{i % 4}" / f"f{i}.bin", 5000 + i, seed=i)
        assert client.send(server, top).returncode == 0
        # A slow get holds a control connection and 16 streams on the one
        # worker; a second one's 17 more pass the 32 a client may hold there.
        relay = Relay(server.port, throttled(20_000))
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        slow_out, fast_out = tmp_path / "slow", tmp_path / "fast"
        slow_out.mkdir()
        fast_out.mkdir()
        slow = subprocess.Popen(
            FX + ["get", "data", "--from", f"127.0.0.1:{relay.port}", "-o", str(slow_out), "--streams", "16"],
            env=dict(os.environ, FASTXFER_HOME=str(client.home)), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: relay.count >= 17, timeout=60)
        # Through a relay of its own too, slowed less: every one of its streams has connected
        # before its work is done (unslowed, the first streams could finish it before the last open).
        fast_relay = Relay(server.port, throttled(200_000))
        try:
            fx(client.home, "pin", f"127.0.0.1:{fast_relay.port}", server.fingerprint, check=True)
            fast = fx(client.home, "get", "data", "--from", f"127.0.0.1:{fast_relay.port}", "-o", fast_out,
                      "--streams", "16", timeout=120)
        finally:
            fast_relay.close()
        _, slow_err = slow.communicate(timeout=120)
        assert fast.returncode == 0, fast.stderr
        assert slow.returncode == 0, slow_err
        assert snapshot(fast_out) == snapshot(slow_out) == snapshot(top)
        assert "too many connections" in server.log_text()  # some of the fast get's streams were told busy
    finally:
        if relay is not None:
            relay.close()
        server.stop()


def test_a_second_get_skips_what_is_already_there(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(30):
        make_file(top / f"f{i}.bin", 1000 + i, seed=i)
    os.symlink("f1.bin", top / "link")
    assert client.send(server, top).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    assert get(client, server, "data", "-o", out).returncode == 0
    for i in range(10):  # as if the first get had been interrupted
        (out / f"f{i}.bin").unlink()
    again = get(client, server, "data", "-o", out)
    assert again.returncode == 0, again.stderr
    assert "10 files restored and verified, 21 already there" in again.stdout
    assert "received 9.81 KiB" in again.stdout  # their 10,045 bytes only
    assert snapshot(out) == snapshot(top)
    (out / "f20.bin").write_bytes(b"a local edit")  # not what the server holds: never replaced
    third = get(client, server, "data", "-o", out)
    assert third.returncode == 9 and "f20.bin: exists locally" in third.stderr
    assert (out / "f20.bin").read_bytes() == b"a local edit"


def test_dest_rules_and_no_overwrite(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "report.pdf", 5000)
    assert client.send(server, f).returncode == 0
    renamed = tmp_path / "copy.pdf"
    assert get(client, server, "report.pdf", "-o", renamed).returncode == 0  # a new name
    assert renamed.read_bytes() == f.read_bytes()
    folder = tmp_path / "into"
    folder.mkdir()
    assert get(client, server, "report.pdf", "-o", folder).returncode == 0  # inside a folder
    assert (folder / "report.pdf").read_bytes() == f.read_bytes()
    renamed.write_bytes(b"local changes")
    again = get(client, server, "report.pdf", "-o", renamed)
    assert again.returncode == 7 and "exists locally" in again.stderr
    assert renamed.read_bytes() == b"local changes"
    forced = get(client, server, "report.pdf", "-o", renamed, "--force")
    assert forced.returncode == 0 and renamed.read_bytes() == f.read_bytes()


def test_missing_path_is_a_clear_error(tmp_path: Path, server, client) -> None:
    done = get(client, server, "not/there", "-o", tmp_path)
    assert done.returncode == 6 and "nothing to restore" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_client_sees_only_its_own_files(tmp_path: Path, server, client) -> None:
    other = make_client(tmp_path, server, "other")
    assert other.send(server, make_file(tmp_path / "theirs.bin", 1000)).returncode == 0
    assert fx(client.home, "ls", "--from", server.address).stdout.strip() == ""
    assert fx(client.home, "ls", "theirs.bin", "--from", server.address).returncode == 6
    out = tmp_path / "out"
    out.mkdir()
    for path in ["../other/theirs.bin", "/other/theirs.bin", "other/theirs.bin"]:
        done = get(client, server, path, "-o", out)
        assert done.returncode == 6, done.stderr
    assert list(out.iterdir()) == []


def test_a_new_identity_under_the_old_name_restores_everything(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "thesis.tex", 7777)
    assert client.send(server, f).returncode == 0
    new = make_client(tmp_path, server, "laptop-new", trust=False)
    assert fx(server.home, "trust", "add", new.fingerprint, "--name", "laptop").returncode == 0
    out = tmp_path / "new-machine"
    out.mkdir()
    assert get(new, server, "thesis.tex", "-o", out).returncode == 0
    assert (out / "thesis.tex").read_bytes() == f.read_bytes()


def test_a_file_damaged_on_the_server_is_not_restored(tmp_path: Path, server, client) -> None:
    f = make_file(tmp_path / "precious.bin", 1 << 20)
    assert client.send(server, f, "--chunk-size", "64K").returncode == 0
    stored = server.root / "laptop" / "precious.bin"
    st = stored.stat()
    with open(stored, "r+b") as g:  # bit rot: same size, same time
        g.seek(500_000)
        byte = g.read(1)
        g.seek(500_000)
        g.write(bytes([byte[0] ^ 0x40]))
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "out"
    out.mkdir()
    done = get(client, server, "precious.bin", "-o", out)
    assert done.returncode == 5, done.stderr
    assert "do not match" in done.stderr
    assert list(out.iterdir()) == []  # no partial or hidden file left


def test_files_gone_from_the_server_fail_alone(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    for i in range(40):
        make_file(top / f"f{i}.bin", 1000 + i, seed=i)
    make_file(top / "big.bin", 1 << 20, seed=99)
    assert client.send(server, top, "--chunk-size", "64K").returncode == 0
    stored = server.root / "laptop" / "data"
    (stored / "f7.bin").unlink()  # a small file: its answer in a DATAS frame says so
    with open(stored / "big.bin", "r+b") as g:  # a file of many chunks: NAK for its requests
        g.truncate(1000)
    out = tmp_path / "out"
    out.mkdir()
    done = get(client, server, "data", "-o", out)
    assert done.returncode == 9, done.stderr  # some restored, some not
    assert "f7.bin: not stored on the server" in done.stderr
    assert "big.bin: the server's copy is not the one it lists" in done.stderr
    got = sorted(p.name for p in (out).iterdir())
    assert got == sorted(f"f{i}.bin" for i in range(40) if i != 7)  # nothing half-written
    for name in got:
        assert (out / name).read_bytes() == (top / name).read_bytes()


def test_output_piped_into_head_ends_quietly(tmp_path: Path, server, client) -> None:
    top = tmp_path / "many"
    for i in range(300):
        make_file(top / f"f{i:03d}.txt", 10, seed=i)
    assert client.send(server, top).returncode == 0
    for cmd in ("ls", "sums"):
        done = subprocess.run(["sh", "-c", " ".join(FX) + f" {cmd} --from {server.address} | head -1"],
                              env=dict(os.environ, FASTXFER_HOME=str(client.home)),
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_listing(tmp_path: Path, server, client) -> None:
    import json

    top = tmp_path / "t"
    make_file(top / "x.bin", 123)
    os.symlink("x.bin", top / "l")
    assert client.send(server, top).returncode == 0
    table = fx(client.home, "ls", "t", "--from", server.address, check=True).stdout
    assert "t/x.bin" in table and "t/l -> x.bin" in table
    entries = json.loads(fx(client.home, "ls", "--json", "--from", server.address, check=True).stdout)["entries"]
    by_path = {e["path"]: e for e in entries}
    assert by_path["t/x.bin"]["sha256"] == sha256_file(top / "x.bin")
    assert by_path["t/x.bin"]["size"] == 123 and by_path["t/l"]["kind"] == "link"


def test_check_finds_what_changed_on_disk_and_sums_match_sha256sum(tmp_path: Path, server, client) -> None:
    top = tmp_path / "docs"
    make_file(top / "a.bin", 300, seed=1)
    make_file(top / "big.bin", 5 << 20, seed=2)  # chunked: its plain SHA-256 is made by check/sums
    make_file(top / "odd\nname", 10, seed=3)
    assert client.send(server, top).returncode == 0
    sums = fx(client.home, "sums", "--from", server.address)
    assert sums.returncode == 0, sums.stderr
    (tmp_path / "SHA256SUMS").write_text(sums.stdout, errors="surrogateescape")
    ok = subprocess.run(["sha256sum", "-c", str(tmp_path / "SHA256SUMS")], cwd=server.root / "laptop",
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert fx(server.home, "check", "--root", server.root).returncode == 0
    victim = server.root / "laptop" / "docs" / "big.bin"
    st = victim.stat()
    with open(victim, "r+b") as f:
        f.seek(4 << 20)
        f.write(b"rot")
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    checked = fx(server.home, "check", "--root", server.root)
    assert checked.returncode == 5
    assert "CHANGED: laptop/'docs/big.bin'" in checked.stdout
    assert "2 files intact, 1 changed on disk" in checked.stdout
    again = fx(client.home, "sums", "--from", server.address)
    assert again.returncode == 5 and "changed" in again.stderr
    small = server.root / "laptop" / "docs" / "a.bin"  # a bundled file, same size
    small.write_bytes(bytes(b ^ 1 for b in small.read_bytes()))
    # Sending again by content replaces the rotten copies with the verified new ones.
    repaired = client.send(server, top, "--checksum")
    assert repaired.returncode == 0, repaired.stderr
    # Counted as stored (they were sent), not as unchanged; the same content as recorded: no older version kept.
    assert "2 files stored and verified, 1 unchanged" in repaired.stdout, repaired.stdout
    assert fx(server.home, "check", "--root", server.root).returncode == 0
    assert victim.read_bytes() == (top / "big.bin").read_bytes()
    assert small.read_bytes() == (top / "a.bin").read_bytes()


def test_older_version_is_listed_and_restored(tmp_path: Path, server, client) -> None:
    f = tmp_path / "plan.txt"
    f.write_text("first plan\n")
    os.utime(f, ns=(10**18, 10**18))
    assert client.send(server, f).returncode == 0
    f.write_text("second plan, longer\n")
    assert client.send(server, f).returncode == 0
    listed = fx(client.home, "ls", "plan.txt", "--versions", "--json", "--from", server.address)
    import json

    versions = json.loads(listed.stdout)["entries"]
    assert len(versions) == 1 and versions[0]["size"] == len("first plan\n")
    out = tmp_path / "old.txt"
    done = get(client, server, "plan.txt", "--version", versions[0]["version"], "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "first plan\n" and out.stat().st_mtime_ns == 10**18
    missing = get(client, server, "plan.txt", "--version", "plan.txt~nope", "-o", tmp_path / "x")
    assert missing.returncode == 6 and "no version" in missing.stderr


def test_delete_removes_only_what_the_tree_does_not_hold_inside_the_copy(tmp_path: Path, server, client) -> None:
    top = tmp_path / "data"
    make_file(top / "keep.txt", 100, seed=1)
    make_file(top / "sub" / "kept.bin", 300_000, seed=2)
    assert client.send(server, top).returncode == 0
    out = tmp_path / "copy"
    beside = tmp_path / "beside.txt"
    beside.write_text("not part of the copy")
    make_file(out / "stale.txt", 10, seed=3)
    make_file(out / "old" / "deep" / "x", 10, seed=4)
    os.symlink(beside, out / "sub-link")  # a link is removed, never followed
    (out / "sub").mkdir()
    make_file(out / "sub" / "extra", 10, seed=5)
    done = get(client, server, "data", "-o", out)
    assert done.returncode == 0 and (out / "stale.txt").exists()  # without --delete: left alone
    done = get(client, server, "data", "-o", out, "--delete")
    assert done.returncode == 0, done.stderr
    assert "deleted 4 local entries" in done.stdout, done.stdout
    assert snapshot(out) == snapshot(top)
    assert beside.read_text() == "not part of the copy"

    make_file(out / "stale.txt", 10, seed=3)
    make_file(out / "keep.txt", 5, seed=9)  # in the way, not replaced without --force: nothing is deleted
    done = get(client, server, "data", "-o", out, "--delete")
    assert done.returncode == 9 and "nothing was deleted" in done.stderr, done.stderr
    assert (out / "stale.txt").exists()
