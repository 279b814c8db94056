"""The control requests about snapshots: open, fill and end one, list them,
forget them, and list the tree one holds.  Each is a handler of
control.HANDLERS, given the session it serves."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fastxfer.errors import BusyError, ProtocolError
from fastxfer.protocol import messages, paths, retention, snapshot
from fastxfer.protocol.messages import get_int, get_list, get_obj, get_str

if TYPE_CHECKING:
    from fastxfer.server.control import ControlSession

log = logging.getLogger("fastxfer.server")


def snap_begin(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    if session.draining():
        raise BusyError("the server is shutting down: no new transfers; send again in a minute")
    tops = []
    for item in get_list(msg, "paths", messages.MAX_PROBE_TOPS * 16):
        item = get_obj(item)
        path = get_str(item, "path")
        raw = b"/".join(paths.split(path)) if path.strip("/") else b""
        source = item.get("source")
        tops.append((raw, snapshot.storable(get_str(item, "source")) if source is not None else None))
    owner = snapshot.parse_owner(msg["owner"]) if msg.get("owner") is not None else (None,) * 4
    host = snapshot.storable(get_str(msg, "host", 255)) if "host" in msg else ""
    snap, previous = session.store.begin_snapshot(session.name, tops, host, owner)
    return {"t": "snap_begun", "id": snap, "previous": previous}


def snap_add(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    rows = [snapshot.parse_entry(e) for e in get_list(msg, "entries", snapshot.ENTRIES_PER_MESSAGE)]
    return {"t": "snap_added", "dropped": session.store.add_entries(session.name, get_int(msg, "id"), rows)}


def snap_end(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    summary = session.store.end_snapshot(session.name, get_int(msg, "id"), msg.get("partial") is True)
    log.info("client %s: snapshot %d %s (%d files)", session.name, summary["id"], summary["state"], summary["files"])
    keep = session.store.policy.retention
    if summary["state"] == "complete" and not keep.empty():
        # The server's own policy: never below its minimum age, so no number of sends pushes history out.
        policy = retention.Policy(**{**keep.as_dict(), "min_age_ns": session.store.policy.min_age_ns})
        done = session.store.forget(session.name, policy, time.time_ns(), False, True)
        if done.forgotten or done.pruned_files:
            log.info("client %s: retention forgot snapshots %s, pruned %d older copies (%d bytes)", session.name,
                     [f[0] for f in done.forgotten], done.pruned_files, done.pruned_bytes)
        summary["forgotten"] = [f[0] for f in done.forgotten]
    return {"t": "snap_ended", **summary}


def snapshots(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    prefix = get_str(msg, "prefix") if msg.get("prefix") else ""
    raw = b"/".join(paths.split(prefix)) if prefix.strip("/") else b""
    return {"t": "snapshots_ok", "snapshots": session.store.snapshot_list(session.name, raw)}


def forget(session: ControlSession, msg: dict[str, Any]) -> dict[str, Any]:
    """A client forgets its own snapshots: never one younger than the server's minimum age."""
    keep = get_obj(msg.get("keep"))
    counts = {k: get_int(keep, k, 0, 1 << 20) if k in keep else 0 for k in ("last", *retention.BUCKETS)}
    policy = retention.Policy(**counts, min_age_ns=session.store.policy.min_age_ns)
    if policy.empty():
        raise ProtocolError("a forget must keep something: give at least one keep count")
    dry_run = msg.get("dry_run") is True
    done = session.store.forget(session.name, policy, time.time_ns(), dry_run, msg.get("prune") is True)
    if not dry_run:
        log.info("client %s forgot snapshots %s", session.name, [f[0] for f in done.forgotten])
    return {"t": "forget_ok", **done.as_message(), "min_age_ns": policy.min_age_ns}


def list_at(session: ControlSession, msg: dict[str, Any], prefix: str) -> dict[str, Any]:
    at = msg.get("at")
    if not (isinstance(at, int) and not isinstance(at, bool) or isinstance(at, str) and len(at) < 40):
        raise ProtocolError("field 'at' must be a snapshot id, 'latest' or 'time:NS'")
    snap = session.store.resolve_snapshot(session.name, at)
    raw = b"/".join(paths.split(prefix.strip("/"))) if prefix.strip("/") else b""
    try:
        after = bytes.fromhex(get_str(msg, "after", 8192)) if msg.get("after") else None
    except ValueError:
        raise ProtocolError("malformed listing cursor") from None
    entries, nxt = session.store.snapshot_listing(session.name, snap, raw, after)
    return {"t": "list_ok", "entries": entries, "next": nxt.hex() if nxt else None, "snapshot": snap}
