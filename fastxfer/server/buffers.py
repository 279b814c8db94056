"""What a worker's streams may hold in frame buffers: a share per client
name across all its streams in this worker, and a total for the worker.

A stream takes room before it reads a large frame's body (the 5-byte prefix
has announced its size) or before it reads a large answer for a restore,
keeps it while it keeps the buffers (mapping them again for every frame
would cost the sender's rate), and gives it all back when it has had
nothing to read for a moment and drops its buffers, or when it ends.
Without room, a stream waits a bounded time, then is refused as busy: the
client carries on with its other streams.
"""

from __future__ import annotations

import threading
import time

from fastxfer.errors import BusyError
from fastxfer.protocol import limits
from fastxfer.protocol.units import human


class FrameBudget:
    """One per worker; shared by every stream thread of that worker."""

    def __init__(self, per_client: int = limits.FRAME_BUDGET_PER_CLIENT,
                 per_worker: int = limits.FRAME_BUDGET_PER_WORKER, wait: float = limits.FRAME_BUDGET_WAIT) -> None:
        self.per_client = per_client
        self.per_worker = per_worker
        self.wait = wait
        self.held: dict[str, int] = {}
        self.total = 0
        self._changed = threading.Condition()

    def take(self, client: str, size: int) -> None:
        """Room for *size* more bytes for *client*, waiting up to ``wait`` seconds; else BusyError."""
        deadline = time.monotonic() + self.wait
        with self._changed:
            while True:
                mine = self.held.get(client, 0)
                if mine + size <= self.per_client and self.total + size <= self.per_worker:
                    self.held[client] = mine + size
                    self.total += size
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    raise self._refusal(client, mine, size)

    def give(self, client: str, size: int) -> None:
        if size <= 0:
            return
        with self._changed:
            left = self.held[client] - size
            if left:
                self.held[client] = left
            else:
                del self.held[client]
            self.total -= size
            self._changed.notify_all()

    def _refusal(self, client: str, mine: int, size: int) -> BusyError:
        if mine + size > self.per_client:
            return BusyError(f"client {client}'s streams already hold {human(mine)} of frame buffers on this "
                             f"server (at most {human(self.per_client)}); try again with fewer streams")
        return BusyError(f"the server's frame buffers are full ({human(self.total)} of "
                         f"{human(self.per_worker)} held); try again later")


class Room:
    """One stream's part of the budget: the buffers it holds, each by its size."""

    def __init__(self, budget: FrameBudget) -> None:
        self.budget = budget
        self.client = ""
        self.sizes: dict[str, int] = {}

    @property
    def held(self) -> int:
        return sum(self.sizes.values())

    def need(self, buffers: str, size: int) -> None:
        """The buffers named *buffers* are about to hold *size* bytes; small ones are free."""
        have = self.sizes.get(buffers, 0)
        if size <= have or size <= limits.FRAME_BUDGET_FREE:
            return
        self.budget.take(self.client, size - have)
        self.sizes[buffers] = size

    def give_back(self) -> None:
        """After the stream dropped its buffers (or ended)."""
        held, self.sizes = self.held, {}
        if held:
            self.budget.give(self.client, held)
