"""Who trusts whom: the server's authorized clients and the client's pins.

Both are small JSON files in the identity folder, written atomically.
A pin ties one server fingerprint to one HOST:PORT, as OpenSSH's
known_hosts does: a pin for one address vouches for no other.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import UsageError

DEFAULT_PORT = 4455
CLIENTS_FILE = "clients.json"
PINS_FILE = "pins.json"

# A client's name is its folder under the server's root: one path component,
# never hidden, never special.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"not a valid client name: {name!r} "
            "(1-64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
        )
    return name


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


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return {str(k): str(v) for k, v in data.items()}


def _save(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ClientList:
    """Server side: fingerprint (hex) -> client name."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CLIENTS_FILE
        self._seen: tuple[tuple[int, int, int], dict[str, str]] | None = None

    def all(self) -> dict[str, str]:
        # Workers ask on every stream frame that does work; the file is
        # re-read only when it was replaced (_save renames a new one in).
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._seen is None or self._seen[0] != stamp:
            self._seen = (stamp, _load(self.path))
        return dict(self._seen[1])

    def name_of(self, fp: bytes) -> str | None:
        return self.all().get(fp.hex())

    def add(self, fp: bytes, name: str) -> None:
        data = self.all()
        data[fp.hex()] = check_name(name)
        _save(self.path, data)

    def remove(self, fp: bytes | None, name: str | None) -> int:
        data = self.all()
        keep = {
            k: v
            for k, v in data.items()
            if not ((fp is not None and k == fp.hex()) or (name is not None and v == name))
        }
        _save(self.path, keep)
        return len(data) - len(keep)


class PinList:
    """Client side: HOST:PORT -> server fingerprint (hex)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / PINS_FILE

    def all(self) -> dict[str, str]:
        return _load(self.path)

    def get(self, host: str, port: int) -> bytes | None:
        value = self.all().get(address_key(host, port))
        return bytes.fromhex(value) if value else None

    def add(self, host: str, port: int, fp: bytes) -> None:
        data = self.all()
        data[address_key(host, port)] = fp.hex()
        _save(self.path, data)

    def remove(self, host: str, port: int) -> bool:
        data = self.all()
        found = data.pop(address_key(host, port), None) is not None
        _save(self.path, data)
        return found
