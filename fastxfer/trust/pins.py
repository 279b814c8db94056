"""Client side: the server fingerprint pinned for each address.

A pin ties one server fingerprint to one HOST:PORT, as OpenSSH's
known_hosts does: a pin for one address vouches for no other.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastxfer.errors import UsageError
from fastxfer.trust.jsonfile import load, locked, save

DEFAULT_PORT = 4455
PINS_FILE = "pins.json"
LOCK_FILE = "pins.lock"  # two commands pinning at once (pair, pin) keep both pins


def parse_address(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT -> (host, port)."""
    text = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        host, port = text, None  # a bare IPv6 address
    else:
        host, port = text, None
    if not host:
        raise UsageError(f"not an address: {text!r} (expected HOST or HOST:PORT)")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise UsageError(f"not a port number in {text!r}") from None
    if not 0 < number < 65536:
        raise UsageError(f"port out of range in {text!r}")
    return host.lower(), number


def address_key(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PinList:
    """Client side: HOST:PORT -> server fingerprint (hex)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PINS_FILE
        self.lock = folder / LOCK_FILE

    def all(self) -> dict[str, str]:
        return load(self.path, own=False)  # the user's own folder: a dotfile manager's link is fine

    def get(self, host: str, port: int) -> bytes | None:
        value = self.all().get(address_key(host, port))
        return bytes.fromhex(value) if value else None

    def add(self, host: str, port: int, fp: bytes) -> None:
        with locked(self.lock):
            data = self.all()
            data[address_key(host, port)] = fp.hex()
            save(self.path, data)

    def remove(self, host: str, port: int) -> bool:
        with locked(self.lock):
            data = self.all()
            found = data.pop(address_key(host, port), None) is not None
            save(self.path, data)
        return found
