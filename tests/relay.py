"""A TCP relay on 127.0.0.1 that can damage what passes through it.

``mutate(conn_index, first_bytes, offset, data) -> data`` sees every chunk
going from client to server with the connection's number, its first bytes
and the chunk's offset in that connection, and returns what to forward, or
None to cut that connection there.  ``upstream`` counts the bytes forwarded
to the server, an account of the wire independent of the client's own.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Mutate = Callable[[int, bytes, int, bytes], "bytes | None"]


def passthrough(index: int, first: bytes, offset: int, data: bytes) -> bytes:
    return data


class Relay:
    def __init__(self, target_port: int, mutate: Mutate) -> None:
        self.target_port = target_port
        self.mutate = mutate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.count = 0
        self.upstream = 0
        self.lock = threading.Lock()
        self.closed = False
        self.open: list[socket.socket] = []  # both ends of every connection, for cut_all
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the server is down: so is this connection
                a.close()
                continue
            with self.lock:
                index = self.count
                self.count += 1
                self.open += [a, b]
            threading.Thread(target=self._pump, args=(a, b, index, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, index, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, index: int, upstream: bool) -> None:
        offset, first = 0, b""
        try:
            while data := src.recv(1 << 16):
                if upstream:
                    if len(first) < 4:
                        first = (first + data)[:4]
                    mutated = self.mutate(index, first, offset, data)
                    if mutated is None:
                        break
                    offset += len(data)
                    data = mutated
                dst.sendall(data)
                if upstream:  # counted once forwarded: a send cut short did not reach the server
                    with self.lock:
                        self.upstream += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut_all(self) -> int:
        """Cut every connection open now, both ways (a network that went away for
        a moment); later ones pass as before.  Returns how many were cut."""
        with self.lock:
            cut, self.open = self.open, []
        for s in cut:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(cut) // 2

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def flip_at(position: int, streams_only: bool = True, times: int = 1) -> Mutate:
    """Flip one bit at *position* of the first *times* stream connections."""
    hits: set[int] = set()
    lock = threading.Lock()

    def mutate(index: int, first: bytes, offset: int, data: bytes) -> bytes:
        if streams_only and first[:4] != b"FXS1":
            return data
        if offset <= position < offset + len(data):
            with lock:
                if len(hits) >= times and index not in hits:
                    return data
                hits.add(index)
            i = position - offset
            return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        return data

    return mutate


def cut_at(position: int, times: int = 1) -> Mutate:
    """Cut the first *times* stream connections after *position* bytes."""
    hits: set[int] = set()
    lock = threading.Lock()

    def mutate(index: int, first: bytes, offset: int, data: bytes) -> bytes | None:
        if first[:4] != b"FXS1" or offset + len(data) <= position:
            return data
        with lock:
            if index not in hits and len(hits) >= times:
                return data
            hits.add(index)
        return None

    return mutate


def throttled(bytes_per_second: float):
    """Pass data through at about the given rate, so a kill lands mid-transfer."""

    def mutate(index: int, first: bytes, offset: int, data: bytes) -> bytes:
        if first[:4] == b"FXS1":
            time.sleep(len(data) / bytes_per_second)
        return data

    return mutate


def throttled_then_held(bytes_per_second: float, gate: threading.Event, budget: int):
    """throttled(), and once *budget* bytes of stream data have passed (over all
    connections), held until *gate* is set: the run cannot finish before the
    test has done what it does mid-transfer, however slow the machine."""
    passed = [0]
    lock = threading.Lock()

    def mutate(index: int, first: bytes, offset: int, data: bytes) -> bytes:
        if first[:4] == b"FXS1":
            time.sleep(len(data) / bytes_per_second)
            with lock:
                passed[0] += len(data)
                held = passed[0] > budget
            if held:
                gate.wait(30)
        return data

    return mutate


def stalling(gate: threading.Event, stalled: threading.Event):
    def mutate(index: int, first: bytes, offset: int, data: bytes) -> bytes:
        if first[:4] == b"FXS1" and offset > 0:
            stalled.set()
            gate.wait(30)
        return data

    return mutate
