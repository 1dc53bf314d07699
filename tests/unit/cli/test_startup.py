"""CLI start (issue 15): light commands must not import the chain, database or web stacks.

A module-presence check, not a timing one: ``--version`` and ``verify --help`` run in a fresh
interpreter and the modules it loaded are compared against the heavy ones.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from ca_service.cli.main import COMMANDS, cli

# Top-level packages that cost seconds to import (web3 pulls eth_* and py-evm; flask and
# sqlalchemy are the server's) and that --version / verify --help never use.
HEAVY = ("web3", "eth", "eth_account", "eth_abi", "py_ecc", "sqlalchemy", "flask", "gunicorn",
         "psycopg2", "pyasn1", "signxml", "ca_service.anchor", "ca_service.services", "ca_service.db")

_PROBE = """
import json, sys
from ca_service.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="ca-service")
except SystemExit as exc:
    code = exc.code
print("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run(*args: str) -> tuple[str, int, set[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    text, _, last = out.rstrip("\n").rpartition("\n")
    probe = json.loads(last)
    return text, probe["code"], set(probe["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [("--version",), ("verify", "--help")])
def test_light_commands_do_not_import_heavy_modules(args: tuple[str, ...]) -> None:
    text, code, modules = _run(*args)
    assert code == 0
    assert ("version" in text) if args == ("--version",) else ("Usage: ca-service verify" in text)
    assert _heavy(modules) == []


def test_a_heavy_command_still_loads_its_module() -> None:
    # The probe sees a heavy import when one happens: `anchor --help` loads the anchor command
    # module, which imports web3 (what an eager `verify` would look like).
    _, code, modules = _run("anchor", "--help")
    assert code == 0
    assert "ca_service.cli.anchor" in modules
    assert "web3" in _heavy(modules)


def test_every_listed_command_resolves() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert sorted(names) == sorted(attr for _, attr in COMMANDS)
    for name in names:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command)
        assert command.name == name
