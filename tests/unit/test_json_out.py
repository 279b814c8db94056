"""cli/json_out: failures grouped by cause, and the documents of commands
that end before they run (usage errors) or in an error."""

from __future__ import annotations

import json

import pytest

from fastxfer.cli import json_out, main
from fastxfer.errors import LocalFileError, RefusedError


def test_a_cause_loses_the_path_it_starts_with_so_many_files_group_under_it() -> None:
    full = [("a/x.bin", RefusedError("a/x.bin: No space left on device")),
            ("b/y.bin", RefusedError("b/y.bin: No space left on device")),
            ("c.txt", LocalFileError("c.txt: Permission denied")),
            ("d.txt", RefusedError("No space left on device"))]
    groups = json_out.groups([(path, json_out.cause(exc.message, path), exc) for path, exc in full])
    assert groups == [
        {"cause": "No space left on device", "kind": "refused", "exit_code": 6, "count": 3,
         "paths": ["a/x.bin", "b/y.bin", "d.txt"]},
        {"cause": "Permission denied", "kind": "local_file", "exit_code": 7, "count": 1, "paths": ["c.txt"]}]


def test_a_name_shown_escaped_is_stripped_too() -> None:
    odd = "caf\udce9.txt"  # not UTF-8 on disk: shown escaped and quoted in messages
    from fastxfer.client.walk import display

    assert json_out.cause(f"{display(odd)}: Input/output error", odd) == "Input/output error"
    assert json_out.cause("other.txt: Input/output error", odd) == "other.txt: Input/output error"


def test_a_usage_error_with_json_is_a_document_too(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main.main(["send", "--json", "--to", "backup"])  # no PATH
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"fastxfer_json": 1, "command": "send", "exit_code": 2,
                               "error": {"code": 2, "kind": "usage",
                                         "message": "the following arguments are required: PATH"}}
    assert "error: the following arguments are required: PATH" in err  # argparse's own words still said


def test_without_a_json_flag_nothing_is_printed_on_stdout(capsys) -> None:
    with pytest.raises(SystemExit):
        main.main(["send", "--to", "backup"])
    assert capsys.readouterr().out == ""
    # A file named --json, after "--": no document (and this send stops at its usage error).
    assert main.main(["send", "--to", "backup", "--streams", "99", "--", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--streams" in err


def test_an_error_the_command_ends_in_is_one_document(capsys) -> None:
    code = main.main(["ls", "--from", "backup", "--at", "1", "--versions", "--json"])  # refused before connecting
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert code == body["exit_code"] == body["error"]["code"] == 2 and body["command"] == "ls"
    assert body["error"]["kind"] == "usage" and err == f"ERROR: {body['error']['message']}\n"
