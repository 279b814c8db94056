"""Real servers on 127.0.0.1 ephemeral ports, real identities, real files."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# A suite run in the background of a shell without job control starts with
# SIGINT ignored, and every process it starts would inherit that (Python
# keeps an ignored SIGINT): the Ctrl-C tests' sends and gets then went on
# and exited 0. A handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FX = [sys.executable, "-m", "fastxfer"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def make_file(path: Path, size: int, seed: int = 0) -> Path:
    """Deterministic pseudo-random bytes (fast, incompressible enough)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(b"%d" % seed).digest() * (1 << 15)  # 1 MiB pattern
    rnd = os.urandom(4096)
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            n = min(len(block), left)
            # vary every MiB so chunks differ from each other
            f.write((rnd + i.to_bytes(8, "big") + block)[:n])
            left -= n
            i += 1
    return path


def fx(home: Path, *args: str, timeout: float = 120, check: bool = False,
       input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run fastxfer with *home* as its FASTXFER_HOME; *env* adds to its environment."""
    env = dict(os.environ, FASTXFER_HOME=str(home), **(env or {}))
    done = subprocess.run(FX + [str(a) for a in args], env=env, capture_output=True, text=True,
                          errors="surrogateescape", timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"fastxfer {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Server:
    home: Path
    root: Path
    proc: subprocess.Popen
    port: int
    fingerprint: str
    log: Path
    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_server(home: Path, root: Path, workers: int = 2, port: int = 0, extra: tuple[str, ...] = (),
                 code: Path | None = None) -> Server:
    """A real server; *code*: a folder holding another release's fastxfer package to run instead."""
    log = home.parent / f"server-{time.monotonic_ns()}.log"
    env = dict(os.environ, FASTXFER_HOME=str(home), **({"PYTHONPATH": str(code)} if code else {}))
    # From the release's own folder: `-m` puts the current folder first on the path.
    if code is None:
        fp = identity_of(home)
    else:  # that release's own `fastxfer id`
        fp = subprocess.run(FX + ["id"], env=env, cwd=code, capture_output=True, text=True, check=True).stdout.strip()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            FX + ["serve", "--root", str(root), "--bind", "127.0.0.1", "--port", str(port),
                  "--workers", str(workers), *extra],
            env=env, cwd=code,
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if line.startswith("listening on "):
            server = Server(home, root, proc, int(line.rsplit(":", 1)[1]), fp, log)
            # It listens before its workers have forked: a test that counts
            # them (worker_pids) must not read an empty list as none.
            wait_for(lambda: len(server.worker_pids()) >= workers or proc.poll() is not None, timeout=30)
            return server
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()}")


@dataclass
class Client:
    home: Path
    name: str
    fingerprint: str

    def send(self, server: Server, *args: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
        return fx(self.home, "send", *args, "--to", server.address, timeout=timeout)


def make_client(tmp: Path, server: Server, name: str, pin: bool = True, trust: bool = True) -> Client:
    from fastxfer.trust.clients import ClientList
    from fastxfer.trust.identity import parse_fp
    from fastxfer.trust.pins import PinList, parse_address

    home = tmp / f"client-{name}"
    fp = identity_of(home)
    # What `fastxfer trust add` and `fastxfer pin` write, written here: a
    # command's start-up for each was a fifth of the system tests' time.
    if trust:
        ClientList(server.home).add(parse_fp(fp), name)
    if pin:
        PinList(home).add(*parse_address(server.address), parse_fp(server.fingerprint))
    return Client(home, name, fp)


def identity_of(home: Path) -> str:
    """What `fastxfer id` prints for *home*, made in this process if need be."""
    from fastxfer.trust.identity import format_fp, load_or_create

    return format_fp(load_or_create(home).fingerprint)


@pytest.fixture
def server(tmp_path: Path):
    srv = start_server(tmp_path / "server-home", tmp_path / "root")
    yield srv
    srv.stop()


@pytest.fixture
def client(tmp_path: Path, server: Server) -> Client:
    return make_client(tmp_path, server, "laptop")


def files_under(root: Path) -> list[str]:
    """Every entry below root, hidden state excluded, as relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".fastxfer" in dirnames:
            dirnames.remove(".fastxfer")
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def restart_while(server: Server, proc: subprocess.Popen, release=lambda: None, timeout: float = 120) -> str:
    """Kill the whole server (master and workers: its tickets die with it),
    start it again on the same port and root, release() what held *proc*
    back, and let it end; its stderr."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    again = start_server(server.home, server.root, port=server.port)
    release()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        again.stop()
    return err


def start_send(client, relay, *args, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A send through a relay (tests/relay.py), left running; *env* adds to its environment."""
    return subprocess.Popen(FX + ["send", *map(str, args), "--to", f"127.0.0.1:{relay.port}"],
                            env=dict(os.environ, FASTXFER_HOME=str(client.home), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def held_send(client, server, *args):
    """A send through a relay that holds its streams once they are open (its put
    made, no chunk arrived yet): yields (the send's process, the gate that lets
    the streams go).  The relay closes on leaving."""
    from relay import Relay, stalling

    gate, stalled = threading.Event(), threading.Event()
    relay = Relay(server.port, stalling(gate, stalled))
    try:
        fx(client.home, "pin", f"127.0.0.1:{relay.port}", server.fingerprint, check=True)
        proc = start_send(client, relay, *args)
        assert stalled.wait(30)
        yield proc, gate
    finally:
        gate.set()
        relay.close()


# ---------------------------------------------------------------- pairing codes in logs

_message_words: set[str] = set()


def assert_code_not_in(log: str, code: str) -> None:
    """Neither the pairing *code* nor its words, together, nor alone those of
    its words that no message of fastxfer's uses ("already used"): a log may
    hold those whatever the code."""
    from fastxfer.protocol import pairing

    if not _message_words:
        text = " ".join(p.read_text() for p in Path(pairing.__file__).parents[1].rglob("*.py")
                        if p.name != "words.py")
        _message_words.update(set(pairing.WORDS) & set(re.findall(r"[a-z]+", text.lower())))
    number, first, second = code.split("-")
    for shown in (code, f"{first}-{second}", f"{first} {second}", f"{number}-{first}", repr((first, second))):
        assert shown not in log, shown
    for word in (first, second):
        assert word in _message_words or not re.search(rf"\b{word}\b", log), word
