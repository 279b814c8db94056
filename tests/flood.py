"""Idle strangers from many loopback addresses, each reopened as soon as it is cut.

``Flood(port, sources, per_source)`` holds ``per_source`` connections from each
address in ``sources`` (127.0.0.x are all loopback, so each is a distinct
source to the server) and sends nothing on them: the cheapest way to hold a
slot.  A connection the server closes or resets is replaced at once from the
same address.  The flood is bounded both ways: it stops after ``seconds`` or
``max_opens`` connections, whichever comes first, or at ``stop()``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time


def loopback_sources(count: int, first: int = 2) -> list[str]:
    return [f"127.0.0.{first + i}" for i in range(count)]


class Flood:
    def __init__(self, port: int, sources: list[str], per_source: int,
                 seconds: float = 10.0, max_opens: int = 50_000) -> None:
        self.port = port
        self.sources = sources
        self.per_source = per_source
        self.seconds = seconds
        self.max_opens = max_opens
        self.opens = 0
        self.cuts = 0
        self.held = 0  # connections open at the last look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _open(self, sel: selectors.BaseSelector, source: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((source, 0))
            code = s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return
        if code not in (0, errno.EINPROGRESS):
            s.close()
            return
        self.opens += 1
        sel.register(s, selectors.EVENT_READ, source)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + self.seconds
        try:
            for source in self.sources:
                for _ in range(self.per_source):
                    self._open(sel, source)
            while not self._stop.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(0.05):
                    sock = key.fileobj
                    try:
                        if sock.recv(1):  # type: ignore[union-attr]
                            continue  # the server never speaks first; nothing to do
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    sel.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    self.cuts += 1
                    if self.opens < self.max_opens:
                        self._open(sel, key.data)
                self.held = len(sel.get_map())
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()
