"""What a send leaves out of its walk: patterns as rsync reads them, cache
folders (CACHEDIR.TAG) and other filesystems.

Rules are tried in the order given, --exclude-from lines where that option
stands; the first that matches decides (rsync's "first match wins"), and an
entry no rule matches is sent.  A folder left out is not entered, so nothing
below it can be brought back by a later --include: to send only ``*.c``,
``--include '*/' --include '*.c' --exclude '*'``.

A pattern without a '/' (a trailing one aside) is matched against the name
alone, at any depth; with one (or with ``**``) against the path from the
top of what is sent (the top's own name first, unless the top was named as
``DIR/``), ending there: ``build/tmp`` matches ``a/build/tmp`` too, while
``/build/tmp`` is anchored at the top.  ``*`` and ``?`` stop at '/', ``**``
does not, ``dir/***`` is dir and everything in it; a trailing '/' matches
folders only; a backslash makes the next character literal.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass, field

from fastxfer.errors import UsageError

TAG_NAME = "CACHEDIR.TAG"
TAG_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"  # bford.info/cachedir: the first 43 bytes


@dataclass(frozen=True)
class Rule:
    include: bool
    pattern: str  # as given
    regex: re.Pattern
    folders_only: bool
    whole_path: bool  # matched against the path from the top, not the name alone


def _translate(body: str) -> str:
    """A glob *body* as a regular expression (no anchors)."""
    out, i, n = [], 0, len(body)
    while i < n:
        c = body[i]
        if body.startswith("/***", i) and i + 4 == n:
            out.append("(?:/.*)?")
            i = n
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
            while i < n and body[i] == "*":
                i += 1
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(body[i + 1]))
            i += 2
        elif c == "[":
            i = _bracket(body, i, out)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _bracket(body: str, i: int, out: list[str]) -> int:
    """A character class at body[i] == '[' (appended to *out*); an unclosed one is a literal '['."""
    j = i + 1
    if j < len(body) and body[j] in "!^":
        j += 1
    if j < len(body) and body[j] == "]":
        j += 1
    j = body.find("]", j)
    if j < 0:
        out.append(re.escape("["))
        return i + 1
    inner = body[i + 1 : j]
    negate = inner[:1] in ("!", "^")
    inner = inner[1:] if negate else inner
    inner = re.sub(r"([\\\[&~|])", r"\\\1", inner)  # literal inside the class, no set operations
    out.append(f"[^/{inner}]" if negate else f"(?!/)[{inner}]")
    return j + 1


def rule(pattern: str, include: bool) -> Rule:
    if not pattern.strip("/"):
        raise UsageError(f"empty pattern {pattern!r}")
    body = pattern
    folders_only = body.endswith("/") and not body.endswith("\\/")
    body = body.rstrip("/") if folders_only else body
    anchored = body.startswith("/")
    body = body.lstrip("/")
    whole = anchored or "/" in body or "**" in body
    regex = ("^" if anchored or not whole else "(?:^|/)") + _translate(body) + "$"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # '[a--z]': a possible set operation in later Pythons
        try:
            compiled = re.compile(regex, re.DOTALL)
        except re.error as exc:  # '[z-a]'
            raise UsageError(f"pattern {pattern!r}: {exc.msg}") from None
    return Rule(include, pattern, compiled, folders_only, whole)


def read_rules(path: str) -> list[Rule]:
    """The rules of an --exclude-from FILE: one pattern a line, excluded unless it
    starts with '+ ' (included; '- ' says excluded); blank lines and lines whose
    first non-blank character is '#' are ignored; spaces around a pattern are dropped."""
    try:
        with open(path, "rb") as f:
            text = os.fsdecode(f.read())
    except OSError as exc:
        raise UsageError(f"--exclude-from {path}: {exc.strerror}") from None
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("+ ")
        if include or line.startswith("- "):
            line = line[2:].strip()
        try:
            rules.append(rule(line, include))
        except UsageError as exc:
            raise UsageError(f"--exclude-from {path}, line {number}: {exc.message}") from None
    return rules


@dataclass
class Filters:
    rules: list[Rule] = field(default_factory=list)
    exclude_caches: bool = False
    one_file_system: bool = False

    def excluded(self, rel: str, name: str, is_folder) -> bool:
        """Whether the entry at *rel* (its last part *name*) is left out; *is_folder*
        is called only when a folders-only rule needs it."""
        for r in self.rules:
            if r.folders_only and not is_folder():
                continue
            if r.regex.search(rel if r.whole_path else name):
                return not r.include
        return False


def is_cache_tag(entry: os.DirEntry, follow: bool) -> bool:
    """Whether *entry* is a CACHEDIR.TAG that marks its folder a cache: a regular
    file whose first 43 bytes are the standard's signature."""
    try:
        if entry.name != TAG_NAME or not entry.is_file(follow_symlinks=follow):
            return False
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        fd = os.open(entry.path, flags)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = b""
        while len(head) < len(TAG_SIGNATURE) and (more := os.read(fd, len(TAG_SIGNATURE) - len(head))):
            head += more
        return head == TAG_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)
