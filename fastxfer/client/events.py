"""What the engine tells whoever runs it (the CLI renders it: cli/report.py).

The engine never prints.  It calls ``emit`` with one of these events, from
any of its threads; a sink must be quick and thread-safe.

Named tuples, not frozen dataclasses: a command's start-up pays for each
class it defines (a frozen dataclass costs ~0.35 ms to define here, a named
tuple ~0.05 ms), and one is built for every chunk moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Planned(NamedTuple):
    """The work is known: this many bytes and files to move (may shrink: Unneeded)."""

    total_bytes: int
    files: int
    verb: str = "sending"


class Unneeded(NamedTuple):
    """A file found not to need moving leaves the totals."""

    size: int


class Moved(NamedTuple):
    """Bytes of file content went over the wire (sent or received)."""

    size: int


class Requeued(NamedTuple):
    """Bytes counted as moved that must move again: their stream was lost before
    the server acknowledged them.  They are counted once more when they do move."""

    size: int


class FilesDone(NamedTuple):
    """Files finished so far, of how many."""

    done: int
    total: int


class Settled(NamedTuple):
    """One entry's outcome is final: a send's Result (client/jobs.py) or a
    get's Outcome (client/restore_plan.py), once, as soon as it is known
    (what --json-lines writes a line for)."""

    result: object


class Finished(NamedTuple):
    """The run is over: the bar, if any, can go."""


Event = Planned | Unneeded | Moved | Requeued | FilesDone | Settled | Finished
Sink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The sink of a run nobody watches (tests, scripts, -q)."""
