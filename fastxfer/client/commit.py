"""The commit of files whose every chunk the server made durable: each named
by its transfer id and its hash list's digest, and the answer read as what
the server now holds (stored, found unchanged, or committed meanwhile by
another send of the same file)."""

from __future__ import annotations

from fastxfer.errors import ConnectError, ProtocolError
from fastxfer.protocol import layout
from fastxfer.client.gone import gone, holds
from fastxfer.client.jobs import FileJob, Result
from fastxfer.client.plan import call_batch, wire_failure


def commit(call, batch: list[FileJob], snap: int = 0) -> list[Result]:
    """Commit files whose every chunk is durable, each with its hash list's digest;
    each joins the open snapshot *snap* (if not 0) as the server commits it."""
    items = []
    for job in batch:
        digest = job.linked or layout.file_digest(job.src.size, job.chunk, job.digests)  # type: ignore[arg-type]
        item = {"fid": job.fid.hex(), "digest": digest.hex(), "sha256": job.sha256.hex() if job.sha256 else None}
        if job.linked is not None:
            item["same"] = True  # nothing sent: the server puts its copy with this digest in place
        items.append(item)
    extra = {"snap": snap} if snap else None
    joined = [bool(snap)] * len(batch)
    try:
        answers = call_batch(call, "commit", "committed", items, extra)
    except ConnectError:
        # The answer was lost with the connection: the server may have
        # committed.  Ask (on a new connection) which files its manifest now
        # records with exactly this content (the hash list's digest); commit
        # the others again: their chunks are still staged.
        again = [i for i, job in enumerate(batch) if not holds(call, job, items[i]["digest"])]
        answers = [{"t": "ok", "path": job.src.remote, "status": "stored", "version": None, "lost": True}
                   for job in batch]
        joined = [False] * len(batch)  # whether the lost answer's commit recorded them is not known
        if again:
            for i, a in zip(again, call_batch(call, "commit", "committed", [items[i] for i in again], extra)):
                answers[i], joined[i] = a, bool(snap)
    results = []
    for job, answer, joins, item in zip(batch, answers, joined, items):
        if gone(answer, job) and holds(call, job, item["digest"]):  # another send committed it first
            results.append(Result(job.src, "unchanged", sha256=job.sha256, by_other=True))
        elif answer.get("t") == "error":
            results.append(Result(job.src, "failed", wire_failure(answer)))
        elif answer.get("status") not in ("stored", "unchanged"):
            raise ProtocolError(f"the server committed {job.src.remote!r} with an unknown status "
                                f"{str(answer.get('status'))[:20]!r}")
        else:
            # Sent, so stored, even when the server found the content it held ("unchanged"): that
            # is a new time or mode, or (send --checksum) a copy that no longer matched its record.
            status, version = str(answer.get("status")), answer.get("version")
            how = "linked" if job.linked else "same" if status == "unchanged" else \
                "stored" if answer.get("lost") else "changed" if version else "new"
            results.append(Result(job.src, "stored" if status in ("stored", "unchanged") else status,
                                  sha256=job.sha256, version=version, changed=job.changed,
                                  in_snapshot=joins, how=how))
    return results
