"""One backoff for every reconnection the client makes (control and streams).

A run of failures waits 0.2 s, doubling up to 5 s, and gives up after
``attempts`` (8 by default: about 20 s, long enough for a server restart).
``FASTXFER_RECONNECTS`` sets the number of attempts (0: give up at the first
failure), for scripts that would rather fail fast and for tests.  The clock
is injectable so that the rule itself is tested without waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

ATTEMPTS = 8
FIRST_WAIT = 0.2
MAX_WAIT = 5.0


def attempts_from_env(default: int = ATTEMPTS) -> int:
    value = os.environ.get("FASTXFER_RECONNECTS", "")
    try:
        return max(0, min(100, int(value))) if value else default
    except ValueError:
        return default


class Backoff:
    """Counts one outage's failures; ``again()`` waits and says whether to try again."""

    def __init__(self, attempts: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.attempts = attempts_from_env() if attempts is None else attempts
        self.failures = 0
        self._sleep = sleep

    def again(self) -> bool:
        """After a failure: False once the budget is spent, else True after the wait."""
        self.failures += 1
        if self.failures > self.attempts:
            return False
        self._sleep(self.delay(self.failures))
        return True

    def reset(self) -> None:
        """The connection did some work: the next failure starts a new outage."""
        self.failures = 0

    @staticmethod
    def delay(failures: int) -> float:
        return min(MAX_WAIT, FIRST_WAIT * 2 ** (failures - 1))
