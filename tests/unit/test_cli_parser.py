"""The command line builds only the parser of the command it runs."""

from __future__ import annotations

import argparse

from fastxfer.cli import main


def commands_of(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_is_defined_and_run_by_one_adder() -> None:
    assert set(main.DEFINED_BY) == set(main.COMMANDS) == commands_of(main.build_parser())
    assert set(main.DEFINED_BY.values()) == set(main.PARSERS)


def test_a_run_builds_its_own_commands_parser_and_no_other() -> None:
    for command, add in main.DEFINED_BY.items():
        built = commands_of(main.build_parser(command))
        assert command in built
        assert built == {c for c, a in main.DEFINED_BY.items() if a is add}, command


def test_an_unknown_or_missing_command_gets_every_choice() -> None:
    everything = commands_of(main.build_parser())
    assert commands_of(main.build_parser("sendx")) == everything
    assert commands_of(main.build_parser("--help")) == everything


def test_every_command_and_action_shows_examples_in_its_help() -> None:
    def parsers(parser: argparse.ArgumentParser, name: str):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in subs:
            for child_name, child in sub.choices.items():
                yield f"{name} {child_name}".strip(), child
                yield from parsers(child, f"{name} {child_name}")

    missing = sorted(name for name, p in parsers(main.build_parser(), "") if "example" not in (p.epilog or ""))
    assert missing == []
