"""Signed receipts: the server's word, checkable offline, on what it holds.

A receipt is a canonical JSON body (client, path, size, SHA-256, hash-list
digest, time stored, server fingerprint) and the server's ECDSA signature
over "fastxfer receipt v1" + body.  A receipts file is JSON lines: one line
with the server's certificate, then one line per receipt.  Verifying needs
no network: the certificate must hash to a fingerprint the client pinned,
and every signature must check out under its key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from fastxfer.trust import identity
from fastxfer.errors import TrustError, UsageError

CONTEXT = b"fastxfer receipt v1\x00"


def canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(ident: identity.Identity, body: dict) -> dict:
    data = canonical(body)
    return {"body": data.decode(), "sig": base64.b64encode(ident.sign(CONTEXT + data)).decode()}


def write(path: Path, cert_der: bytes, receipts: list[dict]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"server_cert": base64.b64encode(cert_der).decode()}) + "\n")
        for r in receipts:
            f.write(json.dumps(r) + "\n")


def verify_file(path: Path, pinned: set[bytes]) -> list[dict]:
    """Every receipt in the file, checked; raises TrustError on the first bad one."""
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a receipts file ({exc})") from None
    cert = None
    bodies = []
    for n, line in enumerate(lines, 1):
        if "server_cert" in line:
            cert = base64.b64decode(line["server_cert"])
            if identity.fingerprint_of(cert) not in pinned:
                raise TrustError(f"{path}:{n}: signed by a server that is not pinned here "
                                 f"({identity.format_fp(identity.fingerprint_of(cert))})")
            continue
        if cert is None:
            raise UsageError(f"{path}:{n}: receipt before any server certificate")
        data = line.get("body", "").encode()
        try:
            identity.verify_auth(cert, base64.b64decode(line.get("sig", "")), CONTEXT + data)
        except (TrustError, ValueError):
            raise TrustError(f"{path}:{n}: signature does not check out: the receipt was altered") from None
        body = json.loads(data)
        if bytes.fromhex(body.get("server", "")) != identity.fingerprint_of(cert):
            raise TrustError(f"{path}:{n}: receipt names another server")
        bodies.append(body)
    return bodies
