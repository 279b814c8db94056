"""A file whose transfer left the server while this send ran.

Two sends of one file from one client share its transfer (the server keys a
transfer by client, path, size and time, which is what lets a send resume).
The first to commit takes the staging with it: the other send then meets
an unknown transfer, on a stream (a NAK naming it) or at its commit. What
happened is found out here, on the control connection: when the server now
holds this very content at the path, the file is unchanged, stored by the
other send; otherwise it failed, to be sent again.
"""

from __future__ import annotations

import time

from fastxfer.errors import FxError, GoneError
from fastxfer.protocol import messages
from fastxfer.client.jobs import FileJob, Result, hash_list

SETTLE_TRIES, SETTLE_PAUSE = 10, 0.2  # at most 2 s of asking again before a gone transfer is a failure


def listed(call, job: FileJob) -> list[dict]:
    """What the server's manifest records at the file's path, with its size."""
    reply = call({"t": "list", "prefix": job.src.remote, "versions": False}, "list_ok")
    return [e for e in messages.get_list(reply, "entries", 1 << 20)
            if isinstance(e, dict) and e.get("path") == job.src.remote and e.get("size") == job.src.size]


def holds(call, job: FileJob, digest: str) -> bool:
    """Whether the server's manifest records this file with this digest."""
    return any(e.get("digest") == digest for e in listed(call, job))


def gone(answer: dict, job: FileJob) -> bool:
    """Whether a commit's answer says the server does not know the file's transfer:
    a refusal naming its id (other refusals name the path)."""
    return answer.get("t") == "error" and job.fid.hex() in str(answer.get("message", ""))


def settle(call, job: FileJob, error: FxError, tries: int = SETTLE_TRIES) -> Result:
    """The result of a file whose transfer is gone (*error* says how it was met)."""
    held = listed(call, job)
    for _ in range(tries):  # the other send's commit may be between its rename and its record
        if held:
            break
        time.sleep(SETTLE_PAUSE)
        held = listed(call, job)
    if held:  # only then is the whole file read, to compare
        try:
            mine = hash_list(job, job.chunk).hex()
        except FxError as exc:
            return Result(job.src, "failed", exc)
        if any(e.get("digest") == mine for e in held):
            return Result(job.src, "unchanged", sha256=job.sha256, by_other=True)
    return Result(job.src, "failed", GoneError(
        f"{job.src.remote}: its transfer left the server while it was sent ({error.message}) and the server "
        f"does not hold this file: another send of it, or a change, came between; send it again"))
