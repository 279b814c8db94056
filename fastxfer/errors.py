"""One error tree for fastxfer.

Each class's docstring is what the user reads when nothing more specific is
said; ``exit_code`` is what the CLI exits with.  Only the CLI prints and exits.
What a peer is told is a wire code (``WIRE_CODES``), a separate table.
Two families, as in h11: the local side could not do what was asked
(``UsageError``, ``LocalFileError``), or the peer did something wrong
(``ProtocolError``, ``TrustError``, ``RefusedError``...).
"""

from __future__ import annotations

from typing import NamedTuple


class FxError(Exception):
    """fastxfer failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(FxError):
    """The command line is not valid."""

    exit_code = 2


class TrustError(FxError):
    """The peer's identity is not trusted."""

    exit_code = 3


class ConnectError(FxError):
    """Could not reach the server, or the connection was lost."""

    exit_code = 4


class ResetError(ConnectError):
    """The server refused or closed the connection without a word (it may be starting, or full)."""


class VerifyError(FxError):
    """What the server stored does not match what was sent."""

    exit_code = 5


class RefusedError(FxError):
    """The server refused the request."""

    exit_code = 6


class GoneError(RefusedError):
    """The file's transfer is no longer on the server: another send of the same
    file committed it, or it was removed."""


class LocalFileError(FxError):
    """A local file could not be read, or changed while it was sent."""

    exit_code = 7


class ChangedError(LocalFileError):
    """A local file changed while it was read: what was read may mix its old and new bytes."""


class ProtocolError(FxError):
    """The peer broke the fastxfer protocol."""

    exit_code = 8


class BootError(FxError):
    """A server worker could not start; the server stopped instead of retrying."""

    exit_code = 11


class PartialError(FxError):
    """Not every file was stored."""

    exit_code = 9


class BusyError(FxError):
    """The server is busy or shutting down; try again later."""

    exit_code = 10


class WireCode(NamedTuple):
    """How the peer is told of an error: by name in a control message's
    ``code``, by number in a stream frame's code byte (ERROR, NAK,
    BUNDLE_ACK, DATAS).  Separate from exit codes, which are the CLI's; the
    numbers are those of the first version of the protocol, which happened
    to be the exit codes, and must not change."""

    name: str
    number: int


# The one table, error class -> wire code; both inverses are derived from it.
# The server never sends exception text it did not write itself.
WIRE_CODES: dict[type[FxError], WireCode] = {
    TrustError: WireCode("trust", 3),
    VerifyError: WireCode("verify", 5),
    RefusedError: WireCode("refused", 6),
    ProtocolError: WireCode("protocol", 8),
    BusyError: WireCode("busy", 10),
}
_BY_NAME = {code.name: cls for cls, code in WIRE_CODES.items()}
_BY_NUMBER = {code.number: cls for cls, code in WIRE_CODES.items()}


def wire_code(exc: FxError) -> WireCode:
    """The code a peer is told *exc* by; an error of no listed class is told as a refusal."""
    for cls in type(exc).__mro__:
        if cls in WIRE_CODES:
            return WIRE_CODES[cls]
    return WIRE_CODES[RefusedError]


def from_wire_name(name: str, message: str) -> FxError:
    """The error a control message's ``code`` names; an unknown name is a plain FxError."""
    return _BY_NAME.get(name, FxError)(message)


def from_wire_number(number: int, message: str) -> FxError:
    """The error a stream frame's code byte names; an unknown number is a ProtocolError."""
    return _BY_NUMBER.get(number, ProtocolError)(message)


def aggregate(failures: list[FxError], total: int) -> FxError | None:
    """What a command that handled *total* items, of which *failures* failed,
    ends with: nothing when none failed; the one cause when every item failed
    for it (exit with its code); otherwise PartialError (exit 9)."""
    if not failures:
        return None
    codes = {f.exit_code for f in failures}
    if len(failures) >= total and len(codes) == 1:
        return failures[0]
    return PartialError(f"{len(failures)} of {total} not stored" if total else PartialError.__doc__)
