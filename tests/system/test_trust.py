"""Nothing moves until both fingerprints check out."""

from __future__ import annotations

from pathlib import Path

from conftest import files_under, fx, make_client, make_file


def assert_nothing_stored(server) -> None:
    assert files_under(server.root) == []
    assert list((server.root / ".fastxfer" / "staging").iterdir()) == []


def test_unpinned_server_is_refused_before_anything_is_sent(tmp_path: Path, server) -> None:
    c = make_client(tmp_path, server, "laptop", pin=False)
    f = make_file(tmp_path / "secret-name.bin", 1000)
    done = c.send(server, f)
    assert done.returncode == 3
    assert "not pinned" in done.stderr and server.fingerprint in done.stderr
    assert f"fastxfer pin {server.address} {server.fingerprint}" in done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_stored(server)
    assert "secret-name" not in server.log_text()
    assert "connected" not in server.log_text()


def test_wrong_pin_is_refused(tmp_path: Path, server) -> None:
    c = make_client(tmp_path, server, "laptop", pin=False)
    other = fx(tmp_path / "impostor", "id", check=True).stdout.strip()
    fx(c.home, "pin", server.address, other, check=True)
    done = c.send(server, make_file(tmp_path / "a.bin", 10))
    assert done.returncode == 3
    assert "impersonating" in done.stderr and server.fingerprint in done.stderr
    assert_nothing_stored(server)


def test_pin_for_another_address_vouches_for_nothing(tmp_path: Path, server) -> None:
    c = make_client(tmp_path, server, "laptop", pin=False)
    fx(c.home, "pin", f"127.0.0.1:{server.port + 1}", server.fingerprint, check=True)
    fx(c.home, "pin", f"localhost:{server.port}", server.fingerprint, check=True)
    done = c.send(server, make_file(tmp_path / "a.bin", 10))
    assert done.returncode == 3 and "not pinned" in done.stderr
    assert_nothing_stored(server)


def test_unknown_client_is_refused_and_nothing_written(tmp_path: Path, server) -> None:
    c = make_client(tmp_path, server, "stranger", trust=False)
    done = c.send(server, make_file(tmp_path / "a.bin", 100_000))
    assert done.returncode == 3
    assert "not authorized" in done.stderr
    assert f"fastxfer trust add {c.fingerprint} --name" in done.stderr
    assert_nothing_stored(server)
    assert "refused" in server.log_text()


def test_removed_client_is_refused(tmp_path: Path, server) -> None:
    c = make_client(tmp_path, server, "laptop")
    assert c.send(server, make_file(tmp_path / "a.bin", 10)).returncode == 0
    fx(server.home, "trust", "remove", "laptop", check=True)
    assert "laptop" not in fx(server.home, "trust", "list", check=True).stdout
    done = c.send(server, make_file(tmp_path / "b.bin", 10))
    assert done.returncode == 3
    assert not (server.root / "laptop" / "b.bin").exists()


def test_trust_and_pin_commands(tmp_path: Path) -> None:
    home = tmp_path / "h"
    fp = fx(home, "id", check=True).stdout.strip()
    assert fx(home, "id", check=True).stdout.strip() == fp  # stable
    assert fx(home, "trust", "add", "not-a-fingerprint", "--name", "x").returncode == 2
    assert fx(home, "trust", "add", fp, "--name", "../evil").returncode == 2
    assert fx(home, "trust", "add", fp.lower().replace("-", ""), "--name", "me").returncode == 0
    assert fp in fx(home, "trust", "list", check=True).stdout
    assert fx(home, "pin", "backup.example:4455", fp).returncode == 0
    assert "backup.example:4455" in fx(home, "pins", check=True).stdout
    assert fx(home, "unpin", "backup.example").returncode == 0  # default port 4455
    assert fx(home, "unpin", "backup.example").returncode == 2


def test_signed_receipts_verify_offline_and_catch_tampering(tmp_path: Path, server) -> None:
    import json

    c = make_client(tmp_path, server, "laptop")
    top = tmp_path / "t"
    make_file(top / "small.txt", 50)
    make_file(top / "big.bin", 3 << 20)
    receipts = tmp_path / "receipts.jsonl"
    done = c.send(server, top, "--receipts", receipts)
    assert done.returncode == 0, done.stderr
    ok = fx(c.home, "receipt", "verify", receipts)
    assert ok.returncode == 0 and "2 receipts verified" in ok.stdout, ok.stderr
    lines = receipts.read_text().splitlines()
    bodies = [json.loads(json.loads(line)["body"]) for line in lines[1:]]
    from conftest import sha256_file

    assert {b["path"]: b["sha256"] for b in bodies} == {
        "t/big.bin": sha256_file(top / "big.bin"), "t/small.txt": sha256_file(top / "small.txt")}
    # a receipt edited to claim another size no longer verifies
    forged = json.loads(lines[1])
    forged["body"] = forged["body"].replace('"size":', '"size":1')
    (tmp_path / "forged.jsonl").write_text("\n".join([lines[0], json.dumps(forged)]) + "\n")
    bad = fx(c.home, "receipt", "verify", tmp_path / "forged.jsonl")
    assert bad.returncode == 3 and "altered" in bad.stderr
    # a client that never pinned this server does not accept its receipts
    stranger = tmp_path / "stranger"
    fx(stranger, "id", check=True)
    assert fx(stranger, "receipt", "verify", receipts).returncode == 3
