"""Rendering for people: sizes, plurals, progress bars, notes."""

from __future__ import annotations

import sys

from fastxfer.protocol.units import human  # noqa: F401  (the CLI's commands import it from here)



def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def reopened_note(control) -> None:
    """Say so when the control connection had to be opened again (a network blip, a server restart)."""
    if control.reopened:
        times = "once" if control.reopened == 1 else f"{control.reopened} times"
        print(f"NOTE: the connection to the server was lost and opened again ({times})", file=sys.stderr)


def make_progress(total: int, show: bool, desc: str = "sending"):
    if not show or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, dynamic_ncols=True, desc=desc)


class Progress:
    """Renders the engine's events as one tqdm bar on standard error (a sink: client/events.py)."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar = None

    def __call__(self, event) -> None:
        from fastxfer.client import events

        if isinstance(event, events.Planned):
            self.bar = make_progress(event.total_bytes, self.show, event.verb)
        elif self.bar is None:
            return
        elif isinstance(event, events.Moved):
            self.bar.update(event.size)
        elif isinstance(event, events.Unneeded):
            if event.size:
                self.bar.total -= event.size
                self.bar.refresh()
        elif isinstance(event, events.FilesDone):
            if event.total > 1:
                self.bar.set_postfix_str(f"{event.done}/{event.total} files", refresh=False)
        elif isinstance(event, events.Finished):
            self.bar.close()
            self.bar = None
