"""Server side of a control connection: authenticate, then put and commit.

Theory of operation.  The worker holding the connection does the TLS
handshake (server certificate = this server's identity), then sends a
fresh 32-byte challenge.  The client answers with its certificate and an
ECDSA signature over (context | challenge | server fingerprint | client
fingerprint).  Only if that fingerprint is authorized (clients.json) and
the signature checks out does the client get a name, a session secret and
a stream ticket; until then nothing is created on disk.  After that the
client names files (put), the worker answers with a transfer id, the
recorded chunk size and the chunks already durable; when the client has
every chunk acknowledged on its streams it sends the file digest (commit)
and the worker verifies and renames the file into place.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from fastxfer.protocol import messages, wire
from fastxfer.trust import identity
from fastxfer.protocol import layout
from fastxfer.protocol import limits
from fastxfer.protocol import paths, snapshot
from fastxfer.protocol import states
from fastxfer.errors import BusyError, FxError, ProtocolError, RefusedError, TrustError, wire_code
from fastxfer.protocol.messages import get_hex, get_int, get_list, get_obj, get_str
from fastxfer.protocol.keys import ServerKeys
from fastxfer.net.conn import Channel, Conn, tls_wrap
from fastxfer.server import pairing, snapshot_requests, sums_requests
from fastxfer.store.facade import Store
from fastxfer.store.budget import Budget
from fastxfer.trust.clients import ClientList

log = logging.getLogger("fastxfer.server")

PREAUTH_LIMIT = 16 << 10


def wire_error(exc: FxError) -> dict[str, Any]:
    return {"t": "error", "code": wire_code(exc).name, "message": exc.message}


class ControlSession:
    def __init__(self, conn: Conn, ident: identity.Identity, clients: ClientList,
                 keys: ServerKeys, store: Store, proven: Callable[[str], None],
                 draining: Callable[[], bool], hash_budget: int = limits.HASH_PER_REPLY) -> None:
        self.proven = proven
        self.hash_budget = hash_budget
        self.pending: sums_requests.Summing | None = None  # a sums path re-hashed in part, for the next page
        self.draining = draining
        self.raw = conn
        self.ident = ident
        self.clients = clients
        self.keys = keys
        self.store = store
        self.name = ""

    def run(self) -> None:
        tls = tls_wrap(self.raw, self.ident.server_context(), limits.HANDSHAKE_DEADLINE, server_side=True)
        # A stranger may not make the server buffer more than a proof's worth.
        chan = Channel(tls, limit=PREAUTH_LIMIT)
        try:
            if not self._authenticate(chan):
                tls.close()  # a pairing, done: the client opens a session of its own next
                return
        except FxError as exc:
            log.warning("refused %s: %s", self.raw.peer, exc.message)
            try:
                chan.send(wire_error(exc))
            except FxError:
                pass
            tls.close()
            return
        chan.set_limit(messages.MAX_CONTROL)
        try:
            self._serve(chan)
        finally:
            if self.pending is not None:
                self.pending.rehash.close()  # its descriptor
            tls.close()

    def _authenticate(self, chan: Channel) -> bool:
        """The opening; False: it was a pairing (server/pairing), which ends the session."""
        deadline = time.monotonic() + limits.AUTH_DEADLINE
        nonce = os.urandom(32)
        chan.send({"t": "challenge", "v": 1, "nonce": base64.b64encode(nonce).decode()})
        msg = chan.recv(max(0.1, deadline - time.monotonic()))
        if states.SERVER_CONTROL.step(states.AUTH, msg.get("t")) == states.PAIRING:
            pairing.serve(self, chan, msg, nonce, deadline)
            return False
        fp = self.proof(msg, nonce)
        name = self.clients.name_of(fp)
        shown = identity.format_fp(fp)
        if self.draining():
            raise BusyError("the server is shutting down; try again in a minute")
        if name is None:
            raise TrustError(
                f"this client ({shown}) is not authorized on this server; "
                f"on the server run: fastxfer trust add {shown} --name NAME"
            )
        self.proven(name)
        self.fp = fp
        session, ticket = self.keys.new_session(name, fp, int(time.time()) + limits.SESSION_TTL)
        self.name = name
        chan.send({
            "t": "welcome", "name": name,
            "ticket": base64.b64encode(ticket).decode(),
            "secret": base64.b64encode(session.secret).decode(),
            "max_chunk": wire.MAX_CHUNK,
            # Beyond the first version: REQS/DATAS stream frames; sums answered
            # a page at a time when the request says "page".
            "features": ["reqs", "pages"],
        })
        log.info("client %s (%s) connected from %s", name, shown, self.raw.peer)
        return True

    def proof(self, msg: dict[str, Any], nonce: bytes) -> bytes:
        """The fingerprint of the certificate in *msg*, once its signature over
        the opening (§ 4) checks out; before any lookup, so whether a
        fingerprint is authorized is told only to whoever holds its key."""
        try:
            cert = base64.b64decode(get_str(msg, "cert", 8192), validate=True)
            sig = base64.b64decode(get_str(msg, "sig", 512), validate=True)
        except ValueError:
            raise ProtocolError("malformed authentication") from None
        fp = identity.fingerprint_of(cert)
        identity.verify_auth(cert, sig, identity.auth_message(nonce, self.ident.fingerprint, fp))
        return fp

    def _serve(self, chan: Channel) -> None:
        state = states.READY
        while state != states.CLOSED:
            try:
                msg = chan.recv(limits.CONTROL_IDLE)
            except FxError:
                return  # client gone: its staging stays for a resume
            kind = msg.get("t")
            if self.clients.name_of(self.fp) != self.name:
                chan.send(wire_error(TrustError("this client is no longer authorized on this server")))
                return
            try:
                state = states.SERVER_CONTROL.step(state, kind)
                handler = HANDLERS.get(kind)  # bye has none: the server just closes
                if handler is not None:
                    chan.send(handler(self, msg))
            except BusyError as exc:
                chan.send(wire_error(exc))
                return
            except ProtocolError as exc:
                log.warning("client %s broke the protocol: %s", self.name, exc.message)
                try:
                    chan.send(wire_error(exc))
                except FxError:
                    pass
                return
            except FxError as exc:  # a refusal of this request alone
                chan.send(wire_error(exc))

    def _ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"t": "pong"}

    def _put(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.draining():
            raise BusyError("the server is shutting down: no new transfers; send again in a minute to resume")
        replies = []
        usage = Budget()  # the client's staging and quota, counted once for the batch
        for item in get_list(msg, "files"):
            item = get_obj(item)
            path = get_str(item, "path")
            kind = item.get("kind", "file")
            try:
                if kind != "file":
                    replies.append(self._put_other(kind, path, item))
                    continue
                size, chunk = get_int(item, "size"), get_int(item, "chunk", layout.MIN_CHUNK, wire.MAX_CHUNK)
                holes: set[int] = set()
                if item.get("holes") is not None and layout.valid_layout(size, chunk):
                    try:
                        holes = layout.hole_indices(item["holes"], layout.chunk_count(size, chunk))
                    except ValueError as exc:
                        raise ProtocolError(str(exc)) from None
                reply = self.store.open_put(
                    self.name, path,
                    size=size,
                    mtime_ns=get_int(item, "mtime_ns", -(2**62), 2**62),
                    mode=get_int(item, "mode", 0, 0o7777),
                    chunk=chunk,
                    usage=usage,
                    force=item.get("force") is True,
                    holes=holes,
                )
            except ProtocolError:
                raise
            except FxError as exc:
                log.warning("client %s: refused %r: %s", self.name, path, exc.message)
                replies.append(wire_error(exc))
                continue
            except OSError as exc:
                log.error("client %s: storage error on %r: %s", self.name, path, exc)
                replies.append(wire_error(RefusedError(f"{path}: storage error on the server ({exc.strerror})")))
                continue
            answer = {"t": "ok", "fid": reply.fid.hex(), "chunk": reply.chunk, "status": reply.status,
                      "have": messages.encode_have(reply.have)}
            if reply.same:  # it may be a copy: the client hashes it, and commits with "same" if so
                answer["same"] = [{"digest": d.hex(), "chunk": c} for d, c in reply.same]
            replies.append(answer)
        return {"t": "put_ok", "files": replies}

    def _put_other(self, kind: str, path: str, item: dict[str, Any]) -> dict[str, Any]:
        if kind == "dir":
            mtime_ns = get_int(item, "mtime_ns", -(2**62), 2**62) if "mtime_ns" in item else None
            mode = get_int(item, "mode", 0, 0o7777) if "mode" in item else None
            return {"t": "ok", "status": self.store.make_dir(self.name, path, mtime_ns, mode)}
        if kind == "link":
            stored = self.store.make_link(self.name, path, get_str(item, "target"),
                                          get_int(item, "mtime_ns", -(2**62), 2**62))
            if stored.status == "stored":
                log.info("client %s stored link %r", self.name, path)
            return {"t": "ok", "status": stored.status, "version": stored.version}
        raise ProtocolError(f"unknown entry kind {str(kind)[:20]!r}")

    def _probe(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Which small files need sending: unchanged ones (size and time) do not."""
        asked = []
        for item in get_list(msg, "files"):
            item = get_obj(item)
            sha = get_hex(item, "sha256", 32) if item.get("sha256") is not None else None
            asked.append((get_str(item, "path"), get_int(item, "size"),
                          get_int(item, "mtime_ns", -(2**62), 2**62), sha))
        replies = [wire_error(v) if isinstance(v, FxError) else {"t": "ok", "status": v}
                   for v in self.store.probe_many(self.name, asked)]
        answer: dict[str, Any] = {"t": "probe_ok", "files": replies}
        if "tops" in msg:
            # "Nothing of yours is stored under these": the client need not ask
            # about the rest of a first backup file by file.
            tops = get_list(msg, "tops", messages.MAX_PROBE_TOPS)
            if not all(isinstance(t, str) and len(t) <= wire.MAX_PATH_BYTES for t in tops):
                raise ProtocolError("field 'tops' must be a list of paths")
            try:
                raw = [b"/".join(paths.split(t)) for t in tops]
            except FxError:
                raw = None
            answer["empty"] = raw is not None and not self.store.stores_under(self.name, raw)
        return answer

    def _list(self, msg: dict[str, Any]) -> dict[str, Any]:
        prefix = get_str(msg, "prefix")
        try:
            if msg.get("at") is not None:
                return snapshot_requests.list_at(self, msg, prefix)
            if msg.get("versions"):
                return {"t": "list_ok", "entries": self.store.version_listing(self.name, prefix), "next": None}
            try:
                after = bytes.fromhex(get_str(msg, "after", 8192)) if msg.get("after") else None
            except ValueError:
                raise ProtocolError("malformed listing cursor") from None
            entries, nxt = self.store.listing(self.name, prefix, after)
        except ProtocolError:
            raise
        except FxError as exc:
            return wire_error(exc)
        return {"t": "list_ok", "entries": entries, "next": nxt.hex() if nxt else None}

    def _receipts(self, msg: dict[str, Any]) -> dict[str, Any]:
        from fastxfer.trust import receipts

        out = []
        snap = snap_of(msg)
        for item in get_list(msg, "paths", 2000):
            try:
                raw = b"/".join(paths.split(item if isinstance(item, str) else ""))
            except FxError:
                out.append(None)
                continue
            body = self.store.receipt_body(self.name, raw, self.ident.fingerprint, snap)
            out.append(receipts.sign(self.ident, body) if body else None)
        return {"t": "receipts_ok", "cert": base64.b64encode(self.ident.cert_der).decode(), "receipts": out}

    def _dirs(self, msg: dict[str, Any]) -> dict[str, Any]:
        items = []
        for item in get_list(msg, "items"):
            item = get_obj(item)
            items.append((get_str(item, "path"), get_int(item, "mode", 0, 0o7777),
                          get_int(item, "mtime_ns", -(2**62), 2**62)))
        self.store.finish_dirs(self.name, items)
        return {"t": "dirs_ok"}

    def _commit(self, msg: dict[str, Any]) -> dict[str, Any]:
        replies = []
        snap = snap_of(msg)  # the snapshot its files join
        for item in get_list(msg, "files"):
            item = get_obj(item)
            fid = get_hex(item, "fid", 16)
            digest = get_hex(item, "digest", 32)
            sha = get_hex(item, "sha256", 32) if item.get("sha256") is not None else None
            try:
                stored = self.store.commit(self.name, fid, digest, sha, same=item.get("same") is True, snap=snap)
            except ProtocolError:
                raise
            except FxError as exc:
                log.warning("client %s: commit refused: %s", self.name, exc.message)
                replies.append(wire_error(exc))
                continue
            except OSError as exc:
                log.error("client %s: storage error on commit: %s", self.name, exc)
                replies.append(wire_error(RefusedError(f"storage error on the server ({exc.strerror}); send again")))
                continue
            if stored.status == "stored":
                log.info("client %s stored %r%s", self.name, stored.path,
                         f" (older copy kept as {stored.version})" if stored.version else "")
            replies.append({"t": "ok", "path": stored.path, "status": stored.status,
                            "version": stored.version})
        return {"t": "committed", "files": replies}


def snap_of(msg: dict[str, Any]) -> int:
    """The send's open snapshot a request names ("snap"), 0 for none."""
    return get_int(msg, "snap", 0, 2**32 - 1) if "snap" in msg else 0


# Every request the control state machine allows after authentication, and
# the handler that answers it (tests/unit/test_states.py checks they agree).
HANDLERS: dict[str, Callable[[ControlSession, dict[str, Any]], dict[str, Any]]] = {
    "put": ControlSession._put,
    "probe": ControlSession._probe,
    "commit": ControlSession._commit,
    "list": ControlSession._list,
    "receipts": ControlSession._receipts,
    "sums": sums_requests.sums,
    "dirs": ControlSession._dirs,
    "snap_begin": snapshot_requests.snap_begin,
    "snap_add": snapshot_requests.snap_add,
    "snap_end": snapshot_requests.snap_end,
    "snapshots": snapshot_requests.snapshots,
    "forget": snapshot_requests.forget,
    "ping": ControlSession._ping,
}
