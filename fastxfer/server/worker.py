"""A worker process: takes sockets from the master and serves each in a thread.

A worker serves many connections at once (one thread each, bounded).  It
looks at the first byte of each to tell a control connection (a TLS
ClientHello, 0x16) from a stream connection ("FXS1") and drops anything
else.  It leaves when its channel to the master closes (the master died or
stopped it) or on SIGTERM, after letting running connections finish until
the drain deadline, during which it still takes stream connections of
running sessions but no new transfers; staging files stay resumable.  Its
main loop beats on the channel (``heartbeat``), so a worker that stops
taking sockets is noticed, killed and replaced by the master.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastxfer.server import fdpass, heartbeat
from fastxfer.trust import identity
from fastxfer.protocol import limits
from fastxfer.server.control import ControlSession
from fastxfer.errors import BusyError, FxError
from fastxfer.server.buffers import FrameBudget
from fastxfer.server.guard import Guard
from fastxfer.server.rates import ClientRates
from fastxfer.server.stream import StreamSession
from fastxfer.protocol.keys import ServerKeys
from fastxfer.net.conn import Conn
from fastxfer.store.facade import Policy, Store
from fastxfer.trust.clients import ClientList

log = logging.getLogger("fastxfer.server")

BOOT_FAILED = 3  # exit code that tells the master not to respawn
# The signals the master handles; blocked while it forks, reset in the worker.
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)


@dataclass(frozen=True)
class WorkerConfig:
    root: str
    home: str
    server_secret: bytes
    policy: Policy
    hash_budget: int = limits.HASH_PER_REPLY  # serve --hash-per-reply
    slots: int = limits.MAX_CONNECTIONS_PER_WORKER  # connections served at once
    frame_budget: int = limits.FRAME_BUDGET_PER_CLIENT  # per client name, in this worker
    worker_frame_budget: int = limits.FRAME_BUDGET_PER_WORKER
    quotas: dict[str, int] = field(default_factory=dict)  # the config file's, each with `trust quota`'s: the smaller holds
    client_rates: ClientRates | None = None  # serve --client-bwlimit: shared by every worker


class Worker:
    def __init__(self, index: int, channel: socket.socket, config: WorkerConfig) -> None:
        self.index = index
        self.channel = channel
        self.config = config
        self.active = threading.BoundedSemaphore(config.slots)
        self.threads: set[threading.Thread] = set()
        self.lock = threading.Lock()
        self.draining = False
        self.drain_deadline = 0.0
        self.per_client: dict[str, int] = {}

    def boot(self) -> None:
        folder = Path(self.config.home)
        self.ident = identity.load_or_create(folder)
        self.clients = ClientList(folder, self.config.quotas)
        self.keys = ServerKeys(self.config.server_secret)
        self.store = Store(self.config.root, self.config.policy, self.clients.quota_of)
        self.guard = Guard(bound=limits.unauth_per_worker(self.config.slots))
        self.frames = FrameBudget(self.config.frame_budget, self.config.worker_frame_budget)

    def start_drain(self) -> None:
        """No new transfers; what runs (and its stream reconnects) goes on until the deadline."""
        self.draining = True
        self.drain_deadline = time.monotonic() + limits.DRAIN_DEADLINE

    def run(self) -> None:
        # A timeout, because a signal does not interrupt a blocking receive
        # (PEP 475 retries it) and SIGTERM must be noticed.
        self.channel.settimeout(0.2)
        pulse = heartbeat.Pulse(self.channel)
        while True:
            pulse.beat()  # here, in the loop that takes sockets: it proves this loop runs
            if self.draining:
                with self.lock:
                    idle = not self.threads
                if idle or time.monotonic() > self.drain_deadline:
                    return
            try:
                got = fdpass.recv_socket(self.channel)
            except (InterruptedError, socket.timeout):
                continue
            except OSError:
                return
            if got is None:
                return  # the master is gone
            sock, peer = got
            if not self.active.acquire(blocking=False):
                log.warning("worker %d: too many connections, dropped %s", self.index, peer)
                sock.close()
                continue
            t = threading.Thread(target=self._serve, args=(sock, peer), daemon=True)
            with self.lock:
                self.threads.add(t)
            t.start()

    def _serve(self, sock: socket.socket, peer: str) -> None:
        conn = Conn(sock, peer)
        watch = self.guard.admit(sock, peer)
        held: list[str] = []
        try:
            if watch is None:
                log.warning("dropped %s: too many unauthenticated connections from that address", peer)
                return
            sock.settimeout(limits.HANDSHAKE_DEADLINE)
            # Small control messages must not wait for the peer's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = sock.recv(1, socket.MSG_PEEK)
            def proven(name: str) -> None:
                self.guard.promote(watch)
                with self.lock:
                    if self.per_client.get(name, 0) >= limits.CONNECTIONS_PER_CLIENT:
                        raise BusyError(f"client {name} has too many connections open; try again later")
                    self.per_client[name] = self.per_client.get(name, 0) + 1
                    held.append(name)

            if first == b"\x16":
                ControlSession(conn, self.ident, self.clients, self.keys, self.store,
                               proven, lambda: self.draining, self.config.hash_budget).run()
            elif first == b"F":
                StreamSession(conn, self.keys, self.store, self.clients, proven, self.frames,
                              self.config.client_rates).run()
            elif first:
                log.warning("dropped %s: not a fastxfer connection", peer)
        except socket.timeout:
            pass
        except OSError as exc:
            log.warning("connection from %s failed: %s", peer, exc)
        except FxError as exc:
            log.warning("dropped %s: %s", peer, exc.message)
        except Exception:
            log.exception("connection from %s failed unexpectedly", peer)
        finally:
            if watch is not None:
                self.guard.forget(watch)
            conn.close()
            with self.lock:
                for name in held:
                    self.per_client[name] -= 1
                self.threads.discard(threading.current_thread())
            self.active.release()


def watch_parent(channel: socket.socket) -> None:
    """Leave when the master is gone, even if something still holds our channel."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1.0)
    try:
        channel.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def preload() -> None:
    """Import once in the master, before the workers fork, what a worker's first
    session would otherwise import while its client waits: ~20 ms of x509 for
    client authentication and of the OpenSSL backend that ECDSA loads, and
    ctypes for syncfs."""
    import ctypes  # noqa: F401
    from cryptography import x509  # noqa: F401
    from cryptography.hazmat.backends.openssl import backend  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: F401


def worker_main(index: int, channel: socket.socket, inherited: list[int], config: WorkerConfig) -> None:
    """Entry point of a worker process (forked by the master, with HANDLED blocked)."""
    worker = Worker(index, channel, config)

    def on_term(_sig: int, _frame: object) -> None:
        worker.start_drain()

    # Every handler inherited from the master is replaced before the signals
    # are unblocked (as gunicorn's workers do).  SIGTERM: finish what runs,
    # then leave (the master sends it, on its own SIGTERM or shutdown).
    # SIGINT: a Ctrl-C on the terminal reaches the whole process group; the
    # master decides how the pool stops, so workers wait for it.  SIGHUP:
    # nothing to reload (trust changes apply to new connections), and a
    # closing terminal must not take workers down.  SIGCHLD: a worker has no
    # children of its own to reap.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in inherited:  # the listener, the master's wake pipe, other workers' channels
        try:
            os.close(fd)
        except OSError:
            pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    threading.Thread(target=watch_parent, args=(channel,), daemon=True).start()
    try:
        worker.boot()
    except Exception as exc:  # noqa: BLE001 - any boot failure must stop the pool
        print(f"fastxfer: worker {index} cannot start: {exc}", file=sys.stderr, flush=True)
        os._exit(BOOT_FAILED)
    worker.run()
    logging.shutdown()
    os._exit(0)
