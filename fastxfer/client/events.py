"""What the engine tells whoever runs it (the CLI renders it: cli/report.py).

The engine never prints.  It calls ``emit`` with one of these events, from
any of its threads; a sink must be quick and thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Planned:
    """The work is known: this many bytes and files to move (may shrink: Unneeded)."""

    total_bytes: int
    files: int
    verb: str = "sending"


@dataclass(frozen=True)
class Unneeded:
    """A file found not to need moving leaves the totals."""

    size: int


@dataclass(frozen=True)
class Moved:
    """Bytes of file content went over the wire (sent or received)."""

    size: int


@dataclass(frozen=True)
class FilesDone:
    """Files finished so far, of how many."""

    done: int
    total: int


@dataclass(frozen=True)
class Finished:
    """The run is over: the bar, if any, can go."""


Event = Planned | Unneeded | Moved | FilesDone | Finished
Sink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The sink of a run nobody watches (tests, scripts, -q)."""
