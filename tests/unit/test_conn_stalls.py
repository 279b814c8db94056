"""Conn.window_stalls reads the kernel's own account of a connection (TCP_INFO)
on real TCP connections over 127.0.0.1: a peer that stops reading holds the
sender back by its receive window; one that reads as fast as it can does not."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fastxfer.net.conn import Conn

SEND_FOR = 0.6  # seconds


def send_for(reader_reads: bool) -> tuple[float, float]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                if reader_reads:
                    if not receiver.recv(1 << 20):
                        return
                else:
                    stop.wait(0.05)

        reading = threading.Thread(target=read, daemon=True)
        reading.start()
        sender.settimeout(0.05)
        block = b"\0" * (1 << 20)
        started = time.monotonic()
        try:
            while time.monotonic() - started < SEND_FOR:
                try:
                    sender.send(block)
                except TimeoutError:
                    pass
            stalls = Conn(sender).window_stalls()
        finally:
            stop.set()
            sender.close()
            reading.join(5)
            receiver.close()
    if stalls is None:
        pytest.skip("this kernel's TCP_INFO has no busy_time / rwnd_limited (Linux 4.10+)")
    return stalls


def test_a_peer_that_stops_reading_holds_the_sender_back() -> None:
    busy, held = send_for(reader_reads=False)
    assert busy >= SEND_FOR / 2
    assert held >= 0.8 * busy


def test_a_peer_that_reads_does_not() -> None:
    busy, held = send_for(reader_reads=True)
    assert held < 0.5 * busy or busy == 0.0
