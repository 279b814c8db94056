"""Which snapshots a retention policy keeps, with no I/O.

As restic's forget does: --keep-last N keeps the N newest; --keep-hourly,
-daily, -weekly and -monthly N keep the newest snapshot of each of the N
newest hours, days, ISO weeks or months that have one (local time, as a
user reads a calendar).  A policy applies to each group of snapshots of the
same paths on its own: forgetting old Documents snapshots never touches
Photos.  Whatever is younger than the minimum age is kept whatever the
policy says: that is what stops a stolen client from erasing its history.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from fastxfer.errors import UsageError

DEFAULT_MIN_AGE = 7 * 24 * 3600 * 10**9
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
BUCKETS = ("hourly", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    min_age_ns: int = DEFAULT_MIN_AGE

    def empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly or self.monthly)

    def as_dict(self) -> dict[str, int]:
        return {"last": self.last, "hourly": self.hourly, "daily": self.daily, "weekly": self.weekly,
                "monthly": self.monthly, "min_age_ns": self.min_age_ns}


def parse_age(text: str) -> int:
    """'7d', '36h', '2w', '90m', '0' as nanoseconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not m:
        raise UsageError(f"{text!r} is not an age: give a number and s, m, h, d or w (7d, 36h, 0)")
    return int(m.group(1)) * UNITS[m.group(2) or "d"] * 10**9


def bucket(kind: str, time_ns: int) -> tuple:
    t = datetime.datetime.fromtimestamp(time_ns / 1e9)
    if kind == "hourly":
        return (t.year, t.month, t.day, t.hour)
    if kind == "daily":
        return (t.year, t.month, t.day)
    if kind == "weekly":
        return tuple(t.isocalendar()[:2])
    return (t.year, t.month)


def keep(snaps: list[tuple[int, int, tuple]], policy: Policy, now_ns: int) -> dict[int, list[str]]:
    """The ids kept, each with why, of (id, time_ns, group) snapshots."""
    why: dict[int, list[str]] = {}
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for snap, time_ns, group in snaps:
        groups.setdefault(group, []).append((snap, time_ns))
    for members in groups.values():
        newest = sorted(members, key=lambda m: (m[1], m[0]), reverse=True)
        for snap, _t in newest[: policy.last]:
            why.setdefault(snap, []).append("last")
        for kind in BUCKETS:
            wanted = getattr(policy, kind)
            seen: set[tuple] = set()
            for snap, time_ns in newest:
                if len(seen) >= wanted:
                    break
                b = bucket(kind, time_ns)
                if b not in seen:
                    seen.add(b)
                    why.setdefault(snap, []).append(kind)
        for snap, time_ns in newest:
            if now_ns - time_ns < policy.min_age_ns:
                why.setdefault(snap, []).append("younger than the minimum age")
    return why
