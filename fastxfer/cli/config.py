"""The server's configuration file: `serve --config FILE` (or FASTXFER_CONFIG).

One TOML file names the server's root, its state folder (identity.key,
clients.json) and every `serve` option, so that `serve`, `trust`, `staging`,
`check` and `forget --root` all find the same server whoever runs them.

Keys are the long names of `serve`'s options without the dashes, written
with dashes or underscores (`keep-daily` or `keep_daily`); a `[quotas]` table
maps client names to sizes.  Relative paths are taken from the file's
folder, not from the current one: the file means the same from anywhere.
An option given on the command line wins over the file, the file over the
option's default.  The key table is read from `serve`'s own parser, so a new
option is a new key without a change here.
"""

from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxfer.errors import FxError, UsageError

ENV = "FASTXFER_CONFIG"
PATH_KEYS = {"root", "state-dir"}
NOT_KEYS = {"help", "config"}  # options of serve that a file cannot set


class Unset:
    """An option's default, marked as not given on the command line, so that
    the file's value can take its place.  It prints as the default for
    `--help`'s %(default)s and %(default)g."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)


def defer_defaults(parser: argparse.ArgumentParser) -> None:
    """Mark every default of *parser* as Unset (call once its options are added)."""
    for action in parser._actions:
        if action.option_strings and action.dest not in NOT_KEYS and action.default is not argparse.SUPPRESS:
            action.default = Unset(action.default)


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"the server's configuration file (TOML; default: ${ENV} if set), "
                             "to find its root and state folder")


@dataclass(frozen=True)
class ServerConfig:
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # option dest -> value, as the option would hold it
    quotas: dict[str, int] = field(default_factory=dict)

    def get(self, dest: str, default: Any = None) -> Any:
        return self.values.get(dest, default)

    def state_dir(self, given: str | None = None) -> Path:
        """Where the server's identity and client list are: the option, the
        file's state-dir, else FASTXFER_HOME or ~/.config/fastxfer."""
        from fastxfer.trust.identity import home

        chosen = given or self.values.get("state_dir")
        return Path(chosen) if chosen else home()


def find(explicit: str | None) -> str | None:
    return explicit or os.environ.get(ENV) or None


def load(path: str | None) -> ServerConfig:
    """The file at *path* checked against serve's options (None: no file).
    Raises UsageError (exit 2) naming the file and the key."""
    if path is None:
        return ServerConfig()
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read the configuration {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    options = serve_options()
    values: dict[str, Any] = {}
    quotas: dict[str, int] = {}
    seen: dict[str, str] = {}
    for raw, value in data.items():
        key = raw.replace("_", "-")
        if key in seen:
            raise UsageError(f"{path}: {raw!r} and {seen[key]!r} are the same key")
        seen[key] = raw
        if key == "quotas":
            quotas = _quotas(path, value)
            continue
        action = options.get(key)
        if action is None:
            raise UsageError(f"{path}: unknown key {raw!r} (the keys are serve's options: "
                             f"{', '.join(sorted(options))}; and [quotas])")
        value = convert(action, value, f"{path}: {raw}")
        if key in PATH_KEYS:
            value = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(value)))
        values[action.dest] = value
    return ServerConfig(path, values, quotas)


def serve_options() -> dict[str, argparse.Action]:
    """Key -> the serve option it sets, read from serve's parser."""
    from fastxfer.cli.server import add_serve

    sub = argparse.ArgumentParser().add_subparsers()
    add_serve(sub)
    table = {}
    for action in sub.choices["serve"]._actions:
        if action.dest in NOT_KEYS:
            continue
        for opt in action.option_strings:
            if opt.startswith("--"):
                table[opt[2:]] = action
    return table


def convert(action: argparse.Action, value: Any, where: str) -> Any:
    """*value* as the option would hold it had its text been given; numbers
    are not text, text is not a number (`port = "4455"` is refused)."""
    kind = action.type
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, not {_kind(value)}")
        return value
    if kind is int:
        if not (number and isinstance(value, int)):
            raise UsageError(f"{where} must be an integer, not {_kind(value)}")
    elif kind is float:
        if not number:
            raise UsageError(f"{where} must be a number, not {_kind(value)}")
        value = float(value)
    elif kind is None:
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, not {_kind(value)}")
    else:  # a size, a percentage, an age: its text, or a number written as such
        if not (isinstance(value, str) or number):
            raise UsageError(f"{where} must be a string or a number, not {_kind(value)}")
        try:
            value = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError, FxError) as exc:
            raise UsageError(f"{where}: {getattr(exc, 'message', exc)}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: f"the string {value!r}",
            dict: "a table", list: "an array"}.get(type(value), type(value).__name__)


def _quotas(path: str, table: Any) -> dict[str, int]:
    from fastxfer.cli.args import parse_size
    from fastxfer.trust.clients import check_name

    if not isinstance(table, dict):
        raise UsageError(f"{path}: quotas must be a table of client name = size, not {_kind(table)}")
    out = {}
    for name, size in table.items():
        where = f"{path}: quotas.{name}"
        try:
            check_name(name)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}") from None
        if isinstance(size, bool) or not isinstance(size, (str, int)):
            raise UsageError(f"{where} must be a size (\"500G\" or bytes), not {_kind(size)}")
        try:
            out[name] = parse_size(str(size))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{where}: {exc}") from None
    return out


def apply(args: argparse.Namespace, config: ServerConfig) -> None:
    """Every option not given on the command line takes the file's value, else its default."""
    for dest, value in vars(args).items():
        if isinstance(value, Unset):
            setattr(args, dest, config.values.get(dest, value.value))


def for_command(args: argparse.Namespace) -> ServerConfig:
    """The configuration a server-side command (trust, staging, check, forget
    --root) was pointed to, by --config or FASTXFER_CONFIG."""
    return load(find(getattr(args, "config", None)))


def root_of(args: argparse.Namespace) -> str:
    """--root, else the configuration's root."""
    if args.root:
        return args.root
    config = for_command(args)
    if config.path is None:
        raise UsageError(f"give --root DIR or --config FILE (or set {ENV}): the server's root folder")
    root = config.get("root")
    if root is None:
        raise UsageError(f"{config.path} sets no root: give --root DIR")
    return root


def warn_if_no_server(state: Path) -> None:
    """A trust change where no server has made its identity: it still works
    (scripts authorize clients before the first start), but the folder may
    not be the one the server will read."""
    import sys

    from fastxfer.trust.identity import KEY_FILE

    if not (state / KEY_FILE).exists():
        print(f"WARNING: no server has run with the state folder {state} yet (no {KEY_FILE} there): "
              f"a server reads these clients only if it runs with this folder (the same --config, "
              f"or FASTXFER_HOME={state})", file=sys.stderr)


def hand_over(state: Path, names: tuple[str, ...]) -> None:
    """Root changing the trust files of a server that runs as its own user
    (the systemd unit's): the files it rewrote go back to the folder's owner,
    or that server could no longer read them."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(state)
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for name in names:
        # The folder is that account's: what it holds under *name* may be a
        # link, or a hard link to a file of root's; only a file of one link is
        # given, through the descriptor that was checked.
        try:
            fd = os.open(state / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                os.fchown(fd, owner.st_uid, owner.st_gid)
        finally:
            os.close(fd)
