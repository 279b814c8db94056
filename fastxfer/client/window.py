"""A stream's requests in flight, for send (chunks and bundles awaiting their
acknowledgement) and get (chunk and batch requests awaiting their answer).

Bounded by a count and by bytes, so small pieces do not wait a round trip
each and big ones are not asked for faster than they can be handled.  Safe
to share between a stream's sending and receiving threads.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any


class Window:
    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: dict[Hashable, tuple[Any, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def has_room(self) -> bool:
        with self._lock:
            return len(self._items) < self.max_items and self._bytes < self.max_bytes

    def add(self, key: Hashable, item: Any, cost: int) -> None:
        with self._lock:
            self._items[key] = (item, cost)
            self._bytes += cost

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._items.get(key)
        return found[0] if found else None

    def pop(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._items.pop(key, None)
            if found is None:
                return None
            self._bytes -= found[1]
        return found[0]

    def pop_where(self, match) -> list[Any]:
        """Remove and return every item whose key satisfies *match*."""
        with self._lock:
            keys = [k for k in self._items if match(k)]
        return [item for item in (self.pop(k) for k in keys) if item is not None]

    def items(self) -> list[Any]:
        with self._lock:
            return [item for item, _ in self._items.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __bool__(self) -> bool:
        return len(self) > 0
