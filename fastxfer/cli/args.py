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
