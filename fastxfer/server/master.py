"""The master process: binds, accepts, hands sockets to a pool of workers.

Theory of operation.  The master binds the one port, forks the workers
(multiprocessing, fork context) with a Unix SEQPACKET channel each, and
then only accepts and hands over: each accepted socket goes to the next
worker round-robin by SCM_RIGHTS, and the master closes its copy.  Signal
handlers only queue the signal on a wake-up pipe; the loop dispatches to
``handle_<name>``.  A worker that dies is reaped and replaced, unless it
failed at boot, which stops the server instead of respawning in a loop.
A worker that stops beating (``heartbeat``) is passed over for new
connections, then killed and replaced once silent for ``silence`` seconds.
SIGTERM stops accepting and lets workers drain until the drain deadline;
SIGINT stops within a few seconds.  Either way no worker outlives the
master: a worker also leaves when its channel to the master closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass

from fastxfer.server import fdpass, heartbeat
from fastxfer.protocol import limits
from fastxfer.errors import BootError, FxError
from fastxfer.server.worker import BOOT_FAILED, HANDLED, WorkerConfig, preload, worker_main

log = logging.getLogger("fastxfer.server")


@dataclass
class WorkerSlot:
    index: int
    process: multiprocessing.process.BaseProcess
    channel: socket.socket
    beat: float  # when the master last heard it (or forked it)
    hung: bool = False  # killed for its silence, not reaped yet


class Master:
    def __init__(self, listener: socket.socket, workers: int, config: WorkerConfig,
                 silence: float = limits.WORKER_SILENCE) -> None:
        self.listener = listener
        self.silence = silence
        self.size = workers
        self.config = config
        self.slots: list[WorkerSlot | None] = [None] * workers
        self.next = 0
        self.stopping: str | None = None
        self.drain_until = 0.0
        self.ctx = multiprocessing.get_context("fork")
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    # ------------------------------------------------------------ workers

    def spawn(self, index: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A worker must hold no other worker's channel, or a dead master
        # would go unnoticed by the workers holding copies of its ends.
        inherited = [self.listener.fileno(), self.wake_r, self.wake_w, parent.fileno()]
        inherited += [s.channel.fileno() for s in self.slots if s is not None]
        process = self.ctx.Process(
            target=worker_main,
            args=(index, child, inherited, self.config),
            name=f"fastxfer-worker-{index}",
            daemon=False,
        )
        # Blocked across the fork: a signal that reaches the new worker before
        # it has set its own handlers waits for them instead of running the
        # master's (which would write to the master's wake pipe, a descriptor
        # the worker has closed and may reuse).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        # Never blocking: a stopped worker must not stop the master with it.
        parent.setblocking(False)
        self.slots[index] = WorkerSlot(index, process, parent, time.monotonic())

    def reap(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot is None or slot.process.is_alive():
                continue
            code = slot.process.exitcode
            slot.channel.close()
            slot.process.join()
            self.slots[i] = None
            if self.stopping:
                continue
            if code == BOOT_FAILED:
                raise BootError(f"worker {i} could not start (see the log above); stopping the server")
            if slot.hung:
                log.warning("worker %d (pid %d) killed for its silence; starting a new one", i, slot.process.pid)
            else:
                log.warning("worker %d (pid %d) died (exit %s); starting a new one", i, slot.process.pid, code)
            self.spawn(i)

    def watch(self) -> None:
        """Hear each worker's beats; kill one silent for longer than ``silence``."""
        now = time.monotonic()
        for slot in self.slots:
            if slot is None or slot.hung:
                continue
            if heartbeat.heard(slot.channel):
                slot.beat = now
            # exitcode polls without reaping only a live child, so the pid is
            # still ours (not reused) when it is None.
            elif now - slot.beat > self.silence and slot.process.exitcode is None:
                slot.hung = True
                log.warning("worker %d (pid %d) sent no heartbeat for %.1f s (stopped or stuck); killing it",
                            slot.index, slot.process.pid, now - slot.beat)
                os.kill(slot.process.pid, signal.SIGKILL)

    def rotation(self) -> list[WorkerSlot]:
        """The workers to offer the next connection to, in round-robin order:
        those beating, or if none is, every one not condemned."""
        start = self.next
        self.next += 1
        ring = [self.slots[(start + i) % self.size] for i in range(self.size)]
        alive = [s for s in ring if s is not None and not s.hung]
        now = time.monotonic()
        return [s for s in alive if now - s.beat <= limits.HEARTBEAT_LATE] or alive

    def hand_over(self, conn: socket.socket, peer: str) -> None:
        deadline = time.monotonic() + limits.HANDOVER_WAIT
        order = self.rotation()
        while order:
            full = []
            for slot in order:
                try:
                    fdpass.send_socket(slot.channel, conn, peer)
                    return
                except BlockingIOError:
                    full.append(slot)  # its queue of handed sockets is full: busy for now
                except OSError:
                    pass  # that worker is gone; the reaper will replace it
            left = deadline - time.monotonic()
            if left <= 0:
                break
            order = full
            if order:
                heartbeat.wait_writable([s.channel for s in order], left)
        log.warning("no worker could take %s", peer)

    # -------------------------------------------------------------- loop

    def _on_signal(self, signum: int, _frame: object) -> None:
        try:
            os.write(self.wake_w, bytes([signum]))
        except BlockingIOError:
            pass

    def run(self) -> None:
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        preload()
        for i in range(self.size):
            self.spawn(i)
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.listener.setblocking(False)
        try:
            while not self._done():
                for key, _ in sel.select(timeout=0.5):
                    if key.data == "accept":
                        self.accept()
                    else:
                        self.dispatch_signals()
                self.reap()
                self.watch()
        finally:
            sel.close()
            self.shutdown()

    def _done(self) -> bool:
        if self.stopping == "int":
            return True
        if self.stopping == "term":
            # Draining: keep handing over stream reconnects of running
            # transfers until every worker has finished or the deadline passed.
            return all(s is None for s in self.slots) or time.monotonic() > self.drain_until
        return False

    def accept(self) -> None:
        for _ in range(64):
            try:
                conn, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            peer = f"{addr[0]}:{addr[1]}"
            try:
                self.hand_over(conn, peer)
            finally:
                conn.close()

    def dispatch_signals(self) -> None:
        try:
            data = os.read(self.wake_r, 64)
        except BlockingIOError:
            return
        for signum in data:
            name = signal.Signals(signum).name.lower()
            getattr(self, f"handle_{name}")()

    def handle_sigchld(self) -> None:
        self.reap()

    def handle_sighup(self) -> None:
        log.info("SIGHUP ignored (trust changes apply to new connections without a reload)")

    def handle_sigterm(self) -> None:
        if self.stopping:
            return
        log.info("SIGTERM: no new transfers; running ones get %.0f s to finish", limits.DRAIN_DEADLINE)
        self.stopping = "term"
        self.drain_until = time.monotonic() + limits.DRAIN_DEADLINE + 1
        self.signal_workers(signal.SIGTERM)

    def signal_workers(self, sig: int) -> None:
        for slot in self.slots:
            if slot is not None and slot.process.is_alive():
                try:
                    os.kill(slot.process.pid, sig)
                except ProcessLookupError:
                    pass

    def handle_sigint(self) -> None:
        log.info("SIGINT: stopping")
        self.stopping = "int"

    def shutdown(self) -> None:
        self.listener.close()
        self.signal_workers(signal.SIGTERM)
        grace = 1.0 if self.stopping == "term" else limits.STOP_DEADLINE
        deadline = time.monotonic() + grace
        for slot in self.slots:
            if slot is None:
                continue
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                log.warning("worker %d did not stop in time; killing it", slot.index)
                os.kill(slot.process.pid, signal.SIGKILL)
                slot.process.join()
            slot.channel.close()
        log.info("server stopped")


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise FxError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    return sock


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if to_journal() else logging.Formatter(
        "%(asctime)s fastxfer[%(process)d] %(levelname)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def to_journal() -> bool:
    """Whether standard error is the journal's stream: systemd sets
    JOURNAL_STREAM to its device and inode (a redirected stderr is not)."""
    try:
        dev, ino = (int(n) for n in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """Lines for journald: its own time and pid, so neither here; the level as
    the syslog priority prefix of sd-daemon(3) on every line (a traceback's
    too). The journal gives every line the master's pid (whose stream it is),
    so a worker's lines say which process they come from."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self.master = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        if record.process != self.master:
            prefix += f"[{record.process}] "
        return "\n".join(prefix + line for line in super().format(record).splitlines())
