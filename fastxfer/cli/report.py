"""Rendering for people: sizes, plurals, progress bars, itemized lists, failures by cause.

How much a command says (every command that moves or checks files):
  -q      errors only: nothing on standard output when all went well; the
          warnings go too, unless they explain a non-zero exit (then they are
          printed as the errors they are)
  (none)  the summary, warnings and errors, and a progress bar on a terminal
  -v      also one line per entry that changed (as rsync -i), a short code first
  -vv     one line per entry, the unchanged ones too
"""

from __future__ import annotations

import sys

from fastxfer.protocol.units import human  # noqa: F401  (the CLI's commands import it from here)

EXAMPLES = 3  # paths named in a group of failures of one cause (all of them with -v)
CODE_WIDTH = 9  # the itemized code's column: "unchanged" is the longest


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def verbosity(args) -> int:
    """-1 with -q, 0 by default, 1 with -v (or --itemize), 2 with -vv."""
    if getattr(args, "quiet", False):
        return -1
    return min(getattr(args, "verbose", 0) or 0, 2)


def add_verbosity(parser, quiet: str = "errors only: no progress bar, no summary, no warnings",
                  verbose: str = "one line per entry that changed, with a code (new, changed, touched, repaired, "
                                 "linked, deleted...), its path as `get` takes it; -vv lists the unchanged ones too"
                  ) -> None:
    """-q, -v/--itemize and -vv, the same on every command that moves or checks files."""
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet)
    parser.add_argument("-v", "--verbose", "--itemize", action="count", default=0, help=verbose)


def item(code: str, path: str, note: str = "") -> str:
    """One itemized line: the code in a fixed column, the path as `get` and `ls` take it."""
    return f"{code:<{CODE_WIDTH}} {path}" + (f"  ({note})" if note else "")


def reopened_note(control, level: int = 0) -> None:
    """Say so when the control connection had to be opened again (a network blip, a server restart)."""
    if control.reopened and level >= 0:
        times = "once" if control.reopened == 1 else f"{control.reopened} times"
        print(f"NOTE: the connection to the server was lost and opened again ({times})", file=sys.stderr)


def cause_of(message: str, path: str) -> str:
    """What a failure's message says once the path it names is taken out:
    files that failed for one reason share it."""
    for lead in (path, f"{path!r}"):
        if lead and message.startswith(lead):
            rest = message[len(lead):].lstrip(":; ")
            if rest:
                return rest
    return message


def print_failures(failures: list[tuple[str, str]], verbose: bool = False, prefix: str = "ERROR",
                   stream=None) -> None:
    """(path, message) pairs, one group per cause, the largest first, each with
    its count and a few of its paths (-v: all of them): 978 files refused for a
    full disk are one line, not lost behind 20 lines of other causes."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for path, message in failures:
        groups.setdefault(cause_of(message, path), []).append((path, message))
    print_groups(groups, verbose, prefix, stream)


def print_groups(groups: dict[str, list[tuple[str, str]]], verbose: bool, prefix: str, stream=None) -> None:
    """{cause: [(path, whole message)]}: a cause met once is its message, one met
    more often its count and a few of its paths (-v: all of them), the largest first."""
    stream = stream or sys.stderr
    for cause, members in sorted(groups.items(), key=lambda g: -len(g[1])):
        if len(members) == 1:
            print(f"{prefix}: {members[0][1]}", file=stream)
            continue
        named = [p for p, _ in members if p]
        if verbose:
            print(f"{prefix}: {cause} ({len(members)} entries):", file=stream)
            for p in named:
                print(f"  {p}", file=stream)
            continue
        shown = ", ".join(named[:EXAMPLES]) + (f" and {len(named) - EXAMPLES} more (-v lists them)"
                                               if len(named) > EXAMPLES else "")
        print(f"{prefix}: {cause} ({len(members)} entries" + (f": {shown})" if shown else ")"), file=stream)


# ------------------------------------------------------------------ progress


def rate_text(rate: float | None) -> str:
    """Bytes per second as the summaries write them: binary units."""
    return "? B/s" if not rate else f"{human(rate)}/s"


def bar_numbers(n: float, total: float | None, rate: float | None, unit: str = "B") -> str:
    """The numbers right of a bar: '1.00 GiB/2.00 GiB, 139.20 MiB/s' (or a count of files)."""
    if unit != "B":
        done = f"{n:,.0f}/{total:,.0f} {unit}" if total else f"{n:,.0f} {unit}"
        return done + (f", {rate:,.0f} {unit}/s" if rate else "")
    done = f"{human(n)}/{human(total)}" if total else human(n)
    return f"{done}, {rate_text(rate)}"


_BAR_CLASS = None


def _bar_class():
    """tqdm with its numbers in binary units: tqdm's own unit_scale writes 2.00G and 148MB/s."""
    global _BAR_CLASS
    if _BAR_CLASS is None:
        from tqdm import tqdm

        class Bar(tqdm):
            def __init__(self, *args, counted: str = "B", **kwargs) -> None:
                self.counted = counted  # before tqdm's __init__, which draws the bar once
                super().__init__(*args, **kwargs)

            @property
            def format_dict(self):
                d = super().format_dict
                total = d.get("total")
                n = min(d.get("n") or 0, total) if total else d.get("n") or 0
                # The last refresh has no recent rate: the average then.
                rate = d.get("rate") or (n / d["elapsed"] if d.get("elapsed") else None)
                d["numbers"] = bar_numbers(n, total, rate, getattr(self, "counted", "B"))
                return d

        _BAR_CLASS = Bar
    return _BAR_CLASS


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {numbers} [{elapsed}<{remaining}{postfix}]"
COUNT_FORMAT = "{desc}: {numbers} [{elapsed}{postfix}]"


def make_progress(total: int, show: bool, desc: str = "sending", unit: str = "B", always: bool = False):
    """A bar on standard error (None when not shown): *total* bytes, or things of *unit*
    ('files'); with *always*, also when the total is 0 or not known (a counter)."""
    if not show or (total == 0 and not always):
        return None
    return _bar_class()(total=total or None, file=sys.stderr, dynamic_ncols=True, desc=desc,
                        bar_format=BAR_FORMAT if total else COUNT_FORMAT, counted=unit)


class Progress:
    """Renders the engine's events as one bar on standard error (a sink: client/events.py)."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar = None

    def __call__(self, event) -> None:
        from fastxfer.client import events

        if isinstance(event, events.Planned):
            if self.bar is not None:
                self.bar.close()
            self.bar = make_progress(event.total_bytes, self.show, event.verb)
        elif self.bar is None:
            return
        elif isinstance(event, events.Moved):
            self.bar.update(event.size)
        elif isinstance(event, events.Requeued):
            # Counted once they move again: a lost stream's unacknowledged bytes are not counted twice.
            self.bar.update(-min(event.size, self.bar.n))
        elif isinstance(event, events.Unneeded):
            if event.size:
                self.bar.total = max(self.bar.total - event.size, 0)
                self.bar.refresh()
        elif isinstance(event, events.FilesDone):
            if event.total > 1:
                self.bar.set_postfix_str(f"{event.done}/{event.total} files", refresh=False)
        elif isinstance(event, events.Finished):
            self.bar.close()
            self.bar = None
