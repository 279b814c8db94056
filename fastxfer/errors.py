"""One error tree for fastxfer.

Each class's docstring is what the user reads when nothing more specific is
said; ``exit_code`` is what the CLI exits with.  Only the CLI prints and exits.
Two families, as in h11: the local side could not do what was asked
(``UsageError``, ``LocalFileError``), or the peer did something wrong
(``ProtocolError``, ``TrustError``, ``RefusedError``...).
"""

from __future__ import annotations


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


class VerifyError(FxError):
    """What the server stored does not match what was sent."""

    exit_code = 5


class RefusedError(FxError):
    """The server refused the request."""

    exit_code = 6


class LocalFileError(FxError):
    """A local file could not be read, or changed while it was sent."""

    exit_code = 7


class ProtocolError(FxError):
    """The peer broke the fastxfer protocol."""

    exit_code = 8


class PartialError(FxError):
    """Not every file was stored."""

    exit_code = 9


class BusyError(FxError):
    """The server is busy or shutting down; try again later."""

    exit_code = 10


# Codes the server puts in an error message on the wire, mapped back to the
# class the client raises.  The server never sends exception text it did not
# write itself.
WIRE_CODES: dict[str, type[FxError]] = {
    "trust": TrustError,
    "refused": RefusedError,
    "verify": VerifyError,
    "protocol": ProtocolError,
    "busy": BusyError,
}


def from_wire(code: str, message: str) -> FxError:
    return WIRE_CODES.get(code, FxError)(message)


def from_exit_code(code: int, message: str) -> FxError:
    """The error a stream ERROR frame names by its class's exit code."""
    for cls in (TrustError, VerifyError, RefusedError, ProtocolError, BusyError):
        if cls.exit_code == code:
            return cls(message)
    return ProtocolError(message)


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
