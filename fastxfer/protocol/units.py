"""Sizes as people read them (pure): what every message and report shows."""

from __future__ import annotations


def human(n: float) -> str:
    """1536 -> '1.50 KiB'; bytes below 1 KiB as a whole number of B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)
