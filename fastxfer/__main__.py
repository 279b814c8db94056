from fastxfer.cli.main import entry

entry()
