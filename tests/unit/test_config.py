"""The server's configuration file: keys, types, precedence, and what each
server-side command reads from it (no server: the files and the parser)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastxfer.cli import config, main
from fastxfer.errors import UsageError
from fastxfer.trust.clients import ClientList


def write(tmp_path: Path, text: str, name: str = "server.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def serve_args(argv: list[str], path: str | None):
    args = main.build_parser("serve").parse_args(["serve", *argv])
    config.apply(args, config.load(path))
    return args


def test_each_kind_of_value_becomes_what_the_option_would_hold(tmp_path: Path) -> None:
    path = write(tmp_path, """
root = "backups"
state-dir = "/var/lib/fastxfer"
bind = "127.0.0.1"
port = 0
workers = 3
worker_timeout = 12            # an integer where a number is asked: fine
max-staging = "2G"
hash-per-reply = 1048576       # a size in bytes
client-share = 50
min-age = 0
keep-daily = 14
log-level = "warning"
[quotas]
laptop = "500G"
desk = 1024
""")
    loaded = config.load(path)
    assert loaded.values == {
        "root": str(tmp_path / "backups"), "state_dir": "/var/lib/fastxfer", "bind": "127.0.0.1", "port": 0,
        "workers": 3, "worker_timeout": 12.0, "max_staging": 2 << 30, "hash_per_reply": 1 << 20,
        "client_share": 0.5, "min_age": "0", "keep_daily": 14, "log_level": "warning"}
    assert loaded.quotas == {"laptop": 500 << 30, "desk": 1024}
    assert loaded.state_dir() == Path("/var/lib/fastxfer")


@pytest.mark.parametrize("line, words", [
    ('port = "4455"', ["port", "must be an integer", "'4455'"]),
    ("workers = true", ["workers", "must be an integer", "a boolean"]),
    ("port = 1.5", ["port", "must be an integer"]),
    ("worker-timeout = \"10\"", ["worker-timeout", "must be a number"]),
    ("bind = 127", ["bind", "must be a string"]),
    ("max-staging = \"lots\"", ["max-staging", "not a size"]),
    ("max-staging = [1]", ["max-staging", "a string or a number", "an array"]),
    ("client-share = 500", ["client-share", "percentage"]),
    ("min-age = \"soon\"", ["min-age", "not an age"]),
    ("log-level = \"loud\"", ["log-level", "one of debug, info, warning, error"]),
    ("prot = 4455", ["unknown key 'prot'", "port"]),
    ("config = \"other.toml\"", ["unknown key 'config'"]),
    ("[retention]\nkeep-daily = 1", ["unknown key 'retention'"]),
    ("quotas = \"1G\"", ["quotas must be a table"]),
    ("[quotas]\n\"../x\" = \"1G\"", ["quotas.../x", "not a valid client name"]),
    ("[quotas]\nlaptop = true", ["quotas.laptop", "must be a size"]),
    ("[quotas]\nlaptop = \"big\"", ["quotas.laptop", "not a size"]),
    ("keep-daily = 1\nkeep_daily = 2", ["'keep_daily' and 'keep-daily' are the same key"]),
    ("port = ", ["is not valid TOML", "line 1"]),
])
def test_a_wrong_key_or_type_is_a_usage_error_naming_the_file_and_key(tmp_path: Path, line: str,
                                                                      words: list[str]) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(UsageError) as err:
        config.load(path)
    assert err.value.exit_code == 2
    assert path in err.value.message
    for word in words:
        assert word in err.value.message


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the configuration .*nope.toml: No such file"):
        config.load(str(tmp_path / "nope.toml"))


def test_the_command_line_wins_over_the_file_and_the_file_over_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 5000\nworkers = 2\nroot = "/srv/b"\nkeep-last = 3\n')
    args = serve_args(["--port", "4455", "--keep-last", "0"], path)
    # 4455 and 0 are also the defaults: given, they still win
    assert (args.port, args.keep_last, args.workers, args.root) == (4455, 0, 2, "/srv/b")
    assert args.bind == "0.0.0.0" and args.max_staging == 1 << 40 and args.log_level == "info"
    plain = serve_args([], None)
    assert (plain.port, plain.workers, plain.root, plain.min_age) == (4455, None, "./fastxfer-backup", "7d")
    assert not any(isinstance(v, config.Unset) for v in vars(plain).values())


def test_help_still_shows_the_defaults() -> None:
    text = " ".join(main.build_parser("serve")._subparsers._group_actions[0].choices["serve"].format_help().split())
    assert "(default: 4455; 0 picks a free one)" in text and "(default: 10; at least" in text
    assert "Unset" not in text


def test_fastxfer_config_names_the_file_when_no_option_does(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(config.ENV, "/etc/fastxfer/server.toml")
    assert config.find(None) == "/etc/fastxfer/server.toml"
    assert config.find("mine.toml") == "mine.toml"
    monkeypatch.delenv(config.ENV)
    assert config.find(None) is None


def test_relative_paths_are_from_the_files_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", 'root = "../srv"\nstate-dir = "state"\n')
    monkeypatch.chdir("/")
    loaded = config.load(os.path.relpath(path, "/"))
    assert loaded.get("root") == str(tmp_path / "srv")
    assert loaded.state_dir() == tmp_path / "etc" / "state"


def test_without_state_dir_the_state_is_fastxfer_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FASTXFER_HOME", str(tmp_path / "home"))
    assert config.load(write(tmp_path, "port = 1\n")).state_dir() == tmp_path / "home"
    assert config.ServerConfig().state_dir("/given") == Path("/given")


def test_server_side_commands_find_the_root_through_the_file(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, 'root = "root"\n')
    assert main.main(["check", "--config", path]) == 2
    assert f"{tmp_path / 'root'} is not a fastxfer root" in capsys.readouterr().err
    assert main.main(["staging", "--config", path]) == 2
    assert f"{tmp_path / 'root'} is not a fastxfer root" in capsys.readouterr().err
    assert main.main(["forget", "--config", path, "--client", "x", "--keep-last", "1"]) == 2
    assert f"{tmp_path / 'root'} is not a fastxfer root" in capsys.readouterr().err
    assert main.main(["check", "--config", write(tmp_path, "port = 1\n", "noroot.toml")]) == 2
    assert "sets no root: give --root DIR" in capsys.readouterr().err


def test_a_bad_file_stops_serve_and_trust_with_exit_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "workers = \"two\"\n")
    assert main.main(["serve", "--config", path]) == 2
    assert f"ERROR: {path}: workers must be an integer" in capsys.readouterr().err
    assert main.main(["trust", "list", "--config", path]) == 2
    assert f"ERROR: {path}: workers must be an integer" in capsys.readouterr().err
    path = write(tmp_path, "workers = 0\n", "range.toml")  # of the right type, out of range
    assert main.main(["serve", "--config", path]) == 2
    assert f"--workers must be between 1 and 256 (what the command line does not give is from {path})" \
        in capsys.readouterr().err


def test_forget_on_the_server_needs_a_root_or_a_file(monkeypatch, capsys) -> None:
    monkeypatch.delenv(config.ENV, raising=False)
    assert main.main(["forget", "--client", "x", "--keep-last", "1"]) == 2
    assert "give --from HOST (from a client) or, on the server, --root DIR or --config FILE" in capsys.readouterr().err


def test_the_smaller_of_the_two_quotas_holds(tmp_path: Path) -> None:
    clients = ClientList(tmp_path, {"laptop": 100, "desk": 50})
    clients.set_quota("laptop", 200)
    clients.set_quota("phone", 10)
    assert [clients.quota_of(n) for n in ("laptop", "desk", "phone", "tv")] == [100, 50, 10, None]
    clients.set_quota("laptop", 20)
    assert clients.quota_of("laptop") == 20
    assert ClientList(tmp_path).quota_of("laptop") == 20  # without the file, what trust quota set


def test_journal_lines_carry_a_priority_and_no_time() -> None:
    from fastxfer.server.master import JournalFormatter

    fmt = JournalFormatter()
    record = logging.LogRecord("fastxfer.server", logging.WARNING, __file__, 1, "worker %d: slow\nsecond", (1,), None)
    assert fmt.format(record) == "<4>worker 1: slow\n<4>second"
    record.process = os.getpid() + 1  # a worker's line: the journal would give it the master's pid
    assert fmt.format(record) == f"<4>[{record.process}] worker 1: slow\n<4>[{record.process}] second"


@pytest.mark.parametrize("matching", [True, False])
def test_journal_format_only_when_stderr_is_the_journals_stream(tmp_path: Path, matching: bool) -> None:
    log = tmp_path / "stderr"
    log.touch()
    st = os.stat(log)
    stream = f"{st.st_dev}:{st.st_ino}" if matching else f"{st.st_dev}:{st.st_ino + 1}"
    code = ("import logging; from fastxfer.server.master import setup_logging; setup_logging('info'); "
            "logging.getLogger('fastxfer.server').info('hello'); logging.getLogger('x').debug('hidden')")
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JOURNAL_STREAM=stream),
                       stderr=err, check=True, cwd=Path(__file__).resolve().parents[2])
    text = log.read_text()
    if matching:
        assert text == "<6>hello\n"
    else:
        assert text.endswith(" INFO hello\n") and text.count("\n") == 1 and "fastxfer[" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_roots_trust_change_goes_back_to_the_state_folders_owner(tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service's user: it must still read what root wrote
    path = write(tmp_path, f'state-dir = "{state}"\n')
    fp = "a" * 64
    assert main.main(["trust", "add", fp, "--name", "laptop", "--quota", "1G", "--config", path]) == 0
    assert f"no server has run with the state folder {state} yet" in capsys.readouterr().err
    for name in ("clients.json", "quotas.json", "clients.lock"):  # the lock: the server's pairings take it
        st = os.stat(state / name)
        assert (st.st_uid, st.st_gid) == (65534, 65534), name
    assert main.main(["id", "--config", path]) == 0
    assert os.stat(state / "identity.key").st_uid == 65534


def sample(action) -> tuple[str, object] | None:
    """A value of *action*'s kind, as command-line text and as a TOML value."""
    from fastxfer.cli.args import parse_size

    if action.nargs == 0:
        return None
    if action.choices:
        return str(action.choices[-1]), action.choices[-1]
    kind = action.type
    if kind is int:
        return "3", 3
    if kind is float:
        return "12.5", 12.5
    if kind is None:
        return "/srv/x", "/srv/x"
    return ("64M", "64M") if kind is parse_size else ("3", 3)  # a percentage, an age, a count: a number


def test_every_key_means_what_its_option_means(tmp_path: Path) -> None:
    """Read from serve's parser, so an option added later is checked too."""
    import tomllib

    checked = 0
    for key, action in config.serve_options().items():
        given = sample(action)
        if given is None:
            continue
        text, value = given
        try:
            by_option = main.build_parser("serve").parse_args(["serve", f"--{key}", text])
        except SystemExit:
            continue  # an option whose text the sample does not fit
        toml = f"{key.replace('-', '_')} = {value!r}\n".replace("'", '"')
        assert tomllib.loads(toml)
        by_file = serve_args([], write(tmp_path, toml))
        expected = getattr(by_option, action.dest)
        if key in config.PATH_KEYS:
            expected = os.path.normpath(os.path.join(tmp_path, expected))
        assert getattr(by_file, action.dest) == expected, key
        checked += 1
    assert checked >= 18
