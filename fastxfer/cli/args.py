"""Argument types and texts every command shares."""

from __future__ import annotations

import argparse

import re


EPILOG = """exit codes: 0 verified, 2 usage, 3 trust, 4 connection, 5 verification,
6 refused by server, 7 local file, 8 protocol, 9 partial, 10 server busy, 11 a server worker
could not start, 1 unexpected."""


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4M, 512K, 1G)")
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")


BWLIMIT_HELP = ("at most RATE bytes a second over all streams, with binary suffixes: 8M = 8 MiB/s, 500K, "
                "1G (default: none, as 0); bursts of at most 1 MiB")


def parse_rate(text: str) -> int:
    """A bandwidth limit: a size a second (parse_size's suffixes); 0 is no limit."""
    try:
        return parse_size(text.removesuffix("/s").removesuffix("/S"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (examples: 8M for 8 MiB/s, 500K, 1G)") from None


def pacer_for(rate: int):
    """The one Pacer of a command's --bwlimit (None: no limit)."""
    from fastxfer.net.pace import Pacer

    return Pacer(rate) if rate else None
