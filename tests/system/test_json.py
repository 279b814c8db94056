"""--json and --json-lines (docs/JSON.md): each command's standard output is
exactly one JSON document (or one object per line, the document last), read
with json.loads and checked against the real files, digests and exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

from conftest import fx, held_send, make_client, make_file, sha256_file, start_send, wait_for
from relay import Relay, throttled

SIZES = {"a.bin": 300_000, "b.bin": 1_500_000, "sub/c.txt": 10, "sub/empty": 0}


def tree(top: Path) -> Path:
    for i, (name, size) in enumerate(SIZES.items()):
        make_file(top / name, size, seed=i)
    os.symlink("a.bin", top / "sub" / "link")
    return top


def doc(done, code: int = 0) -> dict:
    """The one document on standard output, with the exit code it reports and the process returned."""
    assert done.returncode == code, done.stdout + done.stderr
    out = json.loads(done.stdout)  # the whole of stdout: nothing else is printed there
    assert out["fastxfer_json"] == 1
    assert out.get("exit_code", code) == code
    return out


def lines_of(done, code: int = 0) -> list[dict]:
    assert done.returncode == code, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[-1]["event"] == "summary" and lines[-1]["exit_code"] == code
    assert all(line["event"] in ("file", "content") for line in lines[:-1])
    return lines


def test_send_ls_sums_snapshots_get_report_what_they_did(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    total = sum(SIZES.values())
    sent = doc(client.send(server, top, "--json", "--sha256"))  # the server records each plain SHA-256
    assert (sent["command"], sent["client"], sent["snapshot"], sent["snapshot_state"]) == \
        ("send", "laptop", 1, "complete")
    assert (sent["files"], sent["stored"], sent["unchanged"], sent["failed"], sent["skipped"]) == (4, 4, 0, 0, 0)
    assert sent["bytes"] == total and sent["bytes_sent"] == total and sent["resumed_bytes"] == 0
    assert sent["by_kind"] == {"dir": {"stored": 2}, "file": {"stored": 4}, "link": {"stored": 1}}
    assert sent["failures"] == [] and sent["exit_code"] == 0

    again = doc(client.send(server, top, "--json"))
    assert (again["snapshot"], again["stored"], again["unchanged"], again["bytes_sent"]) == (2, 0, 4, 0)
    assert again["bytes"] == total

    listed = doc(fx(client.home, "ls", "docs", "--json", "--from", server.address))
    by_path = {e["path"]: e for e in listed["entries"]}
    for name, size in SIZES.items():
        assert by_path[f"docs/{name}"]["size"] == size
        assert by_path[f"docs/{name}"]["sha256"] == sha256_file(top / name)
    assert by_path["docs/sub/link"]["kind"] == "link" and by_path["docs/sub/link"]["target"] == "a.bin"

    sums = doc(fx(client.home, "sums", "docs", "--json", "--from", server.address))
    assert {f["path"]: f["sha256"] for f in sums["files"]} == \
        {f"docs/{n}": hashlib.sha256((top / n).read_bytes()).hexdigest() for n in SIZES}
    assert (sums["ok"], sums["bad"], sums["problems"]) == (4, 0, [])

    snaps = doc(fx(client.home, "snapshots", "--json", "--from", server.address))["snapshots"]
    assert [(s["id"], s["files"], s["bytes"]) for s in snaps] == [(1, 4, total), (2, 4, total)]

    out = tmp_path / "restored"
    got = doc(fx(client.home, "get", "docs", "-o", out, "--json", "--from", server.address))
    assert (got["command"], got["restored"], got["not_restored"], got["bytes_received"]) == ("get", 6, 0, total)
    assert all(sha256_file(out / n) == sha256_file(top / n) for n in SIZES)
    there = doc(fx(client.home, "get", "docs", "-o", out, "--json", "--from", server.address))
    assert (there["unchanged"], there["bytes_received"]) == (5, 0)  # the files and the link; a folder is restored


def test_json_lines_give_a_line_per_entry_then_the_summary(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    lines = lines_of(client.send(server, top, "--json-lines", "--sha256"))
    files = {line["path"]: line for line in lines[:-1]}
    assert len(lines) == len(files) + 1 == 2 + 4 + 1 + 1  # two folders, four files, a link, the summary
    for name in SIZES:
        line = files[f"docs/{name}"]
        assert (line["status"], line["size"], line["sha256"]) == ("stored", SIZES[name], sha256_file(top / name))
    assert lines[-1]["stored"] == 4 and lines[-1]["command"] == "send"
    # Each entry once again when both sides compare content, and in a dry run.
    compared = lines_of(client.send(server, top, "--json-lines", "--checksum"))
    assert len(compared) == len(lines) and {line["status"] for line in compared[:-1] if line["kind"] == "file"} \
        == {"unchanged"}
    make_file(top / "new.bin", 5000, seed=9)
    dry = lines_of(client.send(server, top, "--json-lines", "-n"))
    assert [line["path"] for line in dry[:-1] if line["status"] == "send" and line["kind"] == "file"] == ["docs/new.bin"]
    assert len(dry) == len(lines) + 1  # one more file
    (top / "new.bin").unlink()

    out = tmp_path / "restored"
    got = lines_of(fx(client.home, "get", "docs", "-o", out, "--json-lines", "--from", server.address))
    assert sorted(line["path"] for line in got[:-1]) == sorted(["sub", "sub/link", *SIZES])
    assert {line["status"] for line in got[:-1]} == {"restored"} and got[-1]["restored"] == len(got) - 1

    checked = lines_of(fx(server.home, "check", "--root", server.root, "--json-lines"))
    assert [line["event"] for line in checked[:-1]] == ["file"] * 4 + ["content"] * 4
    assert checked[-1]["files"] == {"ok": 4, "changed": 0, "missing": 0}


def test_damage_and_local_refusals_are_counted_with_their_exit_codes(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    assert client.send(server, top, "-q").returncode == 0
    stored = server.root / "laptop" / "docs" / "b.bin"
    with open(stored, "r+b") as f:
        f.write(b"X")  # bit rot on the server's disk
    checked = doc(fx(server.home, "check", "--root", server.root, "--json"), code=5)
    assert checked["files"] == {"ok": 3, "changed": 1, "missing": 0}
    assert [(p["path"], p["status"]) for p in checked["problems"]] == [("docs/b.bin", "changed")] * 2

    # A get into a folder whose files differ locally: each is refused, grouped under one cause.
    out = tmp_path / "restored"
    for name in ("a.bin", "sub/c.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("local edit")
    human = fx(client.home, "get", "docs", "-o", out, "--from", server.address)
    got = doc(fx(client.home, "get", "docs", "-o", out, "--json", "--from", server.address), code=human.returncode)
    assert got["exit_code"] == 9 and got["skipped"] == 2
    [group] = [g for g in got["failures"] if g["count"] == 2]
    assert group["cause"].startswith("exists locally") and sorted(group["paths"]) == ["a.bin", "sub/c.txt"]


def test_dry_run_says_what_would_be_sent(tmp_path: Path, server, client) -> None:
    top = tree(tmp_path / "docs")
    dry = doc(client.send(server, top, "--json", "-n"))
    assert dry["dry_run"] and dry["snapshot"] is None and dry["bytes_sent"] == 0
    assert dry["would_send"] == 7 and dry["would_send_bytes"] == sum(SIZES.values())
    assert not (server.root / "laptop" / "docs").exists()


def recorded_chunks(server) -> int:
    """Chunks the server has made durable for laptop's unfinished transfers."""
    from fastxfer.protocol import layout

    staging = server.root / ".fastxfer" / "staging" / "laptop"
    return sum(len(layout.parse_record(rec.read_bytes(), 1 << 20)) for rec in staging.glob("*.rec"))


def test_resumed_bytes_count_what_an_interrupted_send_left_on_the_server(tmp_path: Path, server, client) -> None:
    size, chunk = 32 << 20, 1 << 20
    src = make_file(tmp_path / "big.bin", size)
    relay = Relay(server.port, throttled(8 << 20))  # seconds: the kill lands mid-transfer
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_send(client, relay, src, "--streams", "2", "--chunk-size", "1M")
        assert wait_for(lambda: relay.upstream >= 8 << 20 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_for(lambda: recorded_chunks(server) >= 4, timeout=10)  # what arrived whole is kept
    finally:
        relay.close()
    sent = doc(client.send(server, src, "--json", "--streams", "2", "--chunk-size", "1M"))
    assert sent["stored"] == 1 and sent["bytes"] == size
    assert sent["resumed_bytes"] >= 4 * chunk and sent["resumed_bytes"] % chunk == 0, sent
    assert sent["resumed_bytes"] + sent["bytes_sent"] == size, sent
    assert sha256_file(server.root / "laptop" / "big.bin") == sha256_file(src)


def test_a_command_that_fails_still_prints_one_document(tmp_path: Path, server) -> None:
    stranger = make_client(tmp_path, server, "stranger", pin=False)  # the server's fingerprint is not pinned
    src = make_file(tmp_path / "a.bin", 1000)
    for args in (["send", src, "--to", server.address], ["ls", "--from", server.address]):
        done = fx(stranger.home, *args, "--json")
        failed = doc(done, code=3)
        assert failed["command"] == args[0] and failed["error"]["code"] == 3 and failed["error"]["kind"] == "trust"
        assert failed["error"]["message"] in done.stderr and done.stderr.startswith("ERROR: ")
    lines = fx(stranger.home, "send", src, "--to", server.address, "--json-lines")
    assert lines.returncode == 3 and json.loads(lines.stdout)["event"] == "error"
    other = fx(tmp_path / "other", "id", check=True).stdout.strip()  # a fingerprint the server does not have
    fx(stranger.home, "pin", server.address, other, check=True)
    mismatch = doc(fx(stranger.home, "send", src, "--to", server.address, "--json"), code=3)
    assert mismatch["error"]["kind"] == "trust"

    client = make_client(tmp_path, server, "laptop")
    missing = doc(fx(client.home, "ls", "nothing/here", "--json", "--from", server.address), code=6)
    assert missing["error"]["kind"] == "refused"
    usage = doc(fx(client.home, "send", "--json", "--to", server.address), code=2)  # no PATH: argparse refuses
    assert usage["error"]["kind"] == "usage" and "PATH" in usage["error"]["message"]
    nothing = doc(fx(client.home, "send", tmp_path / "no-such", "--json", "--to", server.address), code=7)
    assert nothing["error"]["kind"] == "local_file" and len(nothing["skipped_paths"]) == 1


def test_trust_list_and_pins(tmp_path: Path, server, client) -> None:
    assert fx(server.home, "trust", "quota", "laptop", "5M").returncode == 0
    listed = doc(fx(server.home, "trust", "list", "--json"))
    assert listed["command"] == "trust list"
    assert [(c["name"], c["fingerprint"], c["quota"]) for c in listed["clients"]] == \
        [("laptop", client.fingerprint, 5 << 20)]
    pins = doc(fx(client.home, "pins", "--json"))["pins"]
    assert [(p["address"], p["fingerprint"]) for p in pins] == [(server.address, server.fingerprint)]
    assert len(bytes.fromhex(pins[0]["fingerprint_hex"])) == 32


def test_send_failures_are_grouped_by_cause(tmp_path: Path, server, client) -> None:
    assert fx(server.home, "trust", "quota", "laptop", "250K").returncode == 0
    top = tmp_path / "docs"
    for i in range(3):
        make_file(top / f"big{i}.bin", 2_000_000, seed=i)
    human = client.send(server, top)
    sent = doc(client.send(server, top, "--json"), code=human.returncode)
    assert (sent["stored"], sent["failed"], sent["bytes"], sent["snapshot_state"]) == (0, 3, 0, "partial")
    [group] = sent["failures"]
    assert (group["kind"], group["exit_code"], group["count"]) == ("refused", 6, 3)
    assert group["cause"].startswith("over this client's quota") and "docs/" not in group["cause"]
    assert sorted(group["paths"]) == [f"docs/big{i}.bin" for i in range(3)]


def test_a_file_changed_while_sent_has_one_line_with_its_last_outcome(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "moving.bin", 8 << 20)
    with held_send(client, server, src, "--streams", "1", "--chunk-size", "1M", "--json-lines") as (proc, gate):
        with open(src, "r+b") as f:
            f.seek(5 << 20)
            f.write(b"new bytes in the middle of the file")
        os.utime(src, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        gate.set()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # the first read was torn: it was read and sent again
    [line, summary] = [json.loads(text) for text in out.splitlines()]
    assert (line["path"], line["status"], summary["stored"], summary["failed"]) == ("moving.bin", "stored", 1, 0)
    assert summary["bytes_sent"] >= 8 << 20  # what each round sent of it


def test_an_interrupted_send_still_prints_one_document(tmp_path: Path, server, client) -> None:
    src = make_file(tmp_path / "big.bin", 4 << 20)
    with held_send(client, server, src, "--streams", "1", "--chunk-size", "1M", "--json") as (proc, gate):
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    failed = json.loads(out)
    assert (failed["exit_code"], failed["error"]["kind"]) == (130, "interrupted")
    assert "run the same send again" in failed["error"]["message"] and "ERROR: interrupted" in err
