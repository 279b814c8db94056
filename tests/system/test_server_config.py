"""A real `fastxfer serve --config FILE`: the server and every server-side
command find the same root and state through the file, whatever
FASTXFER_HOME the shell has."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import FX, Server, fx, make_file, sha256_file

MIB = 1 << 20


def serve(path: Path, home: Path, log: Path, env: dict[str, str]) -> Server:
    """`fastxfer serve --config PATH` and nothing else on its command line."""
    with open(log, "w") as err:
        proc = subprocess.Popen(FX + ["serve", "--config", str(path)], env=dict(os.environ, **env),
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("listening on "):
            fp = next(x for x in lines if x.startswith("fastxfer server fingerprint: ")).split(": ")[1].strip()
            return Server(home, Path(), proc, int(line.rsplit(":", 1)[1]), fp, log)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"server did not start:\n{''.join(lines)}{log.read_text()}")


def test_one_file_for_the_server_and_its_administrator(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "server.toml"
    # Relative to the file's folder; port 0 and a second worker left to the defaults would be slower.
    path.write_text('root = "../srv"\nstate-dir = "../state"\nbind = "127.0.0.1"\nport = 0\nworkers = 1\n'
                    'min-age = 0\n[quotas]\ndesk = "1M"\n')
    state, root = tmp_path / "state", tmp_path / "srv"
    admin = tmp_path / "admin-home"  # the administrator's shell: never the server's state
    laptop_fp = fx(tmp_path / "laptop", "id", check=True).stdout.strip()
    desk_fp = fx(tmp_path / "desk", "id", check=True).stdout.strip()

    # Before the first start: it works, and says where the server will look.
    early = fx(admin, "trust", "add", laptop_fp, "--name", "laptop", "--config", path)
    assert early.returncode == 0, early.stderr
    assert f"WARNING: no server has run with the state folder {state} yet" in early.stderr
    assert (state / "clients.json").exists() and not admin.exists()

    log = tmp_path / "serve.log"
    log.touch()
    st = os.stat(log)  # the server's stderr is "the journal": lines carry priorities, no times
    srv = serve(path, admin, log, {"FASTXFER_HOME": str(tmp_path / "elsewhere"),
                                   "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        assert fx(admin, "id", "--config", path, check=True).stdout.strip() == srv.fingerprint
        assert (state / "identity.key").exists() and not (tmp_path / "elsewhere").exists()
        fx(tmp_path / "laptop", "pin", srv.address, srv.fingerprint, check=True)
        data = make_file(tmp_path / "data.bin", 2 * MIB)
        sent = fx(tmp_path / "laptop", "send", data, "--to", srv.address)
        assert sent.returncode == 0, sent.stderr
        assert sha256_file(root / "laptop" / "data.bin") == sha256_file(data)

        # Through FASTXFER_CONFIG, once the server has run: no warning, and the running server honours it.
        by_env = {"FASTXFER_CONFIG": str(path)}
        later = fx(admin, "trust", "add", desk_fp, "--name", "desk", env=by_env)
        assert later.returncode == 0 and later.stderr == ""
        assert "desk\t" in fx(admin, "trust", "list", env=by_env, check=True).stdout
        fx(tmp_path / "desk", "pin", srv.address, srv.fingerprint, check=True)
        over = fx(tmp_path / "desk", "send", data, "--to", srv.address)  # the file's 1M quota holds
        assert over.returncode == 6 and "over this client's quota" in over.stderr
        raised = fx(admin, "trust", "quota", "desk", "10M", env=by_env, check=True).stdout
        assert f"note: {path} sets desk's quota to 1.00 MiB: the smaller, 1.00 MiB, applies" in raised

        assert fx(admin, "staging", env=by_env, check=True).stdout.startswith("0 unfinished transfers")
        assert fx(admin, "check", "--config", path).returncode == 0
        forget = fx(admin, "forget", "--client", "laptop", "--keep-last", "1", "--dry-run", env=by_env)
        assert forget.returncode == 0 and "none younger than 0 days" in forget.stdout  # the file's min-age

        code = fx(admin, "invite", "--name", "phone", env=by_env, check=True).stdout.strip()
        phone = fx(tmp_path / "phone", "pair", srv.address, code)  # the running server finds it in its state
        assert phone.returncode == 0, phone.stderr
        assert "phone\t" in fx(admin, "trust", "list", "--config", path, check=True).stdout
    finally:
        assert srv.stop() == 0
    text = log.read_text()
    assert text.startswith("<6>") and all(line.startswith("<") for line in text.splitlines()), text
