"""What the server holds below a path: the one loop over listing pages."""

from __future__ import annotations

from fastxfer.client.connect import ControlClient
from fastxfer.errors import RefusedError
from fastxfer.protocol import messages

MAX_ENTRIES = 1 << 20  # entries one page may carry


def list_all(control: ControlClient, prefix: str, versions: bool = False, at: int | str | None = None) -> list[dict]:
    """Every entry at or below *prefix*, page after page: in the current view,
    in the snapshot *at* names (protocol/snapshot.parse_at), or every older copy kept."""
    entries: list[dict] = []
    cursor = None
    while True:
        msg = {"t": "list", "prefix": prefix, "versions": versions, "after": cursor}
        if at is not None:
            msg["at"] = at
        reply = control.call(msg, "list_ok")
        if at is not None and isinstance(reply.get("snapshot"), int):
            at = reply["snapshot"]  # 'latest' or a time, held to what the first page meant
        entries += messages.get_list(reply, "entries", MAX_ENTRIES)
        cursor = reply.get("next")
        if not cursor:
            return entries


def list_version(control: ControlClient, path: str, version: str) -> list[dict]:
    """The one older copy of *path* named *version*, as an entry to restore."""
    found = [e for e in list_all(control, path, versions=True)
             if e.get("version") == version and e.get("path") == path.strip("/")]
    if not found:
        raise RefusedError(f"no version {version!r} of {path!r} (see: fastxfer ls --versions)")
    return found
