"""This machine's identity: a P-256 key and a self-signed certificate.

The fingerprint of an identity is the SHA-256 of its certificate (DER),
shown as base32 in groups of four so people can read it aloud.  Trust is
always by fingerprint: a certificate's names and dates mean nothing here.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from fastxfer.errors import FxError, TrustError, UsageError
from fastxfer.trust.jsonfile import write_private

KEY_FILE = "identity.key"
CERT_FILE = "identity.crt"

# Client proof of key possession inside TLS (see docs/PROTOCOL.md, "Client
# authentication"): bound to the server's fingerprint so that a server the
# client trusts cannot relay the proof to another server.
AUTH_CONTEXT = b"fastxfer client auth v1\x00"


def home() -> Path:
    explicit = os.environ.get("FASTXFER_HOME")
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(config) / "fastxfer"


def fingerprint_of(cert_der: bytes) -> bytes:
    return hashlib.sha256(cert_der).digest()


def format_fp(fp: bytes) -> str:
    text = base64.b32encode(fp).decode().rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_fp(text: str) -> bytes:
    """Accept the grouped base32 form, in any case, or 64 hex digits."""
    clean = text.strip().replace("-", "").replace(" ", "").replace(":", "")
    try:
        if len(clean) == 64:
            return bytes.fromhex(clean)
        if len(clean) == 52:
            return base64.b32decode(clean.upper() + "====")
    except (ValueError, binascii.Error):
        pass
    raise UsageError(
        f"not a fingerprint: {text!r} (expected what `fastxfer id` prints)"
    )


@dataclass(frozen=True)
class Identity:
    folder: Path
    cert_der: bytes

    @property
    def fingerprint(self) -> bytes:
        return fingerprint_of(self.cert_der)

    @property
    def key_path(self) -> Path:
        return self.folder / KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self.folder / CERT_FILE

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.sign(message, ec.ECDSA(hashes.SHA256()))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert_path, self.key_path)
        # Clients prove their key inside the channel (Python 3.11's ssl can
        # only check client certificates against a CA store).
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        # The server is checked by its pinned fingerprint right after the
        # handshake, before a single byte of ours is sent.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def auth_message(nonce: bytes, server_fp: bytes, client_fp: bytes) -> bytes:
    return AUTH_CONTEXT + nonce + server_fp + client_fp


def verify_auth(cert_der: bytes, signature: bytes, message: bytes) -> None:
    """Raise TrustError unless *signature* over *message* is by *cert_der*'s key.

    Every way the proof can be bad gives the same error.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public = x509.load_der_x509_certificate(cert_der).public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise TypeError
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, TypeError, ValueError) as exc:
        raise TrustError("client authentication failed") from exc


def load_or_create(folder: Path | None = None) -> Identity:
    folder = folder or home()
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    if cert_path.exists() and key_path.exists():
        return Identity(folder, _load_cert_der(cert_path))
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_pem, cert_pem = _generate()
        write_private(key_path, key_pem)
        write_private(cert_path, cert_pem)
    except OSError as exc:
        raise FxError(f"cannot create identity in {folder}: {exc.strerror}") from exc
    return Identity(folder, _load_cert_der(cert_path))


def load_cert_der_from_pem(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _load_cert_der(path: Path) -> bytes:
    try:
        return load_cert_der_from_pem(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrustError(f"identity certificate {path} is unreadable: {exc}") from exc


def _generate() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastxfer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * 100))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
