"""Wire codes are one table (error class -> code), separate from exit codes,
with both inverses derived from it."""

from __future__ import annotations

import pytest

from fastxfer import errors
from fastxfer.errors import (
    BusyError,
    ConnectError,
    FxError,
    LocalFileError,
    ProtocolError,
    RefusedError,
    TrustError,
    VerifyError,
)

# What the first version of the protocol put on the wire: these must not change.
ON_THE_WIRE = {
    TrustError: ("trust", 3),
    VerifyError: ("verify", 5),
    RefusedError: ("refused", 6),
    ProtocolError: ("protocol", 8),
    BusyError: ("busy", 10),
}


@pytest.mark.parametrize("cls", list(ON_THE_WIRE))
def test_each_class_round_trips_by_name_and_by_number(cls: type[FxError]) -> None:
    code = errors.wire_code(cls("m"))
    assert (code.name, code.number) == ON_THE_WIRE[cls]
    by_name = errors.from_wire_name(code.name, "told")
    by_number = errors.from_wire_number(code.number, "told")
    assert type(by_name) is cls and type(by_number) is cls
    assert by_name.message == by_number.message == "told"


def test_the_table_is_exactly_the_first_versions() -> None:
    assert {cls: tuple(code) for cls, code in errors.WIRE_CODES.items()} == ON_THE_WIRE


def test_names_and_numbers_are_unique() -> None:
    codes = list(errors.WIRE_CODES.values())
    assert len({c.name for c in codes}) == len({c.number for c in codes}) == len(codes)


@pytest.mark.parametrize("cls", [FxError, ConnectError, LocalFileError, errors.PartialError, errors.UsageError])
def test_an_unlisted_class_is_told_as_a_refusal(cls: type[FxError]) -> None:
    assert errors.wire_code(cls("m")) == errors.WIRE_CODES[RefusedError]


def test_a_subclass_is_told_as_its_listed_base() -> None:
    class Revoked(TrustError):
        pass

    assert errors.wire_code(Revoked("m")).name == "trust"


def test_unknown_codes() -> None:
    assert type(errors.from_wire_name("no-such-code", "m")) is FxError
    assert type(errors.from_wire_number(0, "m")) is ProtocolError
    assert type(errors.from_wire_number(255, "m")) is ProtocolError


def test_wire_codes_are_not_exit_codes_by_construction() -> None:
    # Changing an exit code must not change the wire: the table does not read exit_code.
    saved = RefusedError.exit_code
    try:
        RefusedError.exit_code = 99
        assert errors.wire_code(RefusedError("m")).number == 6
    finally:
        RefusedError.exit_code = saved


def test_exit_codes_are_distinct_and_documented_in_the_epilog() -> None:
    import fastxfer.errors as errors
    from fastxfer.cli.args import EPILOG

    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.FxError) and c is not errors.FxError]
    codes = [c.exit_code for c in classes if "exit_code" in vars(c)]
    assert len(codes) == len(set(codes)), sorted(codes)
    for code in codes:
        assert f" {code} " in EPILOG.replace("\n", " ").replace(",", " "), code
