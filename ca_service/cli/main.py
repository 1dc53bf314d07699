"""Entry point: ``ca-service``."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ca_service.errors import CAServiceError

# (module, attribute) of each command or group, one module per group.
COMMANDS = (
    ("ca_service.cli.init", "init"),
    ("ca_service.cli.serve", "serve"),
    ("ca_service.cli.db", "db"),
    ("ca_service.cli.demo", "demo"),
    ("ca_service.cli.agent", "agent"),
    ("ca_service.cli.evidence", "evidence"),
    ("ca_service.cli.policy", "policy"),
    ("ca_service.cli.verify", "verify"),
    ("ca_service.cli.verify_ca", "verify-ca"),
    ("ca_service.cli.verify", "seal"),
    ("ca_service.cli.verify", "unseal"),
    ("ca_service.cli.log", "log"),
    ("ca_service.cli.anchor", "anchor"),
    ("ca_service.cli.token", "token"),
    ("ca_service.cli.revoke", "revoke"),
    ("ca_service.cli.collateral", "collateral"),
    ("ca_service.cli.integrity", "integrity"),
    ("ca_service.cli.reappraise", "reappraise"),
    ("ca_service.cli.root", "root"),
)




class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs (or its help is shown).

    Importing every command module at start pulled in web3, py-evm, SQLAlchemy and Flask for
    ``ca-service --version`` (2.5-4.5 s, issue 15); a command's module now loads on first use.
    """

    def __init__(self, *args: Any, lazy: tuple[tuple[str, str], ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = {attr: module for module, attr in lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self._lazy:
            return command
        # the attribute is the command's name in Python ("verify-ca" -> verify_ca)
        command = getattr(importlib.import_module(self._lazy[cmd_name]), cmd_name.replace("-", "_"))
        if not isinstance(command, click.Command):
            raise TypeError(f"{self._lazy[cmd_name]}.{cmd_name} is not a click command")
        self.add_command(command)
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="ca-service")
def cli() -> None:
    """ca-service: attestation-backed certificate authority."""


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CAServiceError as exc:
        click.echo(f"error [{exc.code}]: {exc.detail}", err=True)
        sys.exit(1)
    except Exception as exc:
        # A CA database that cannot be opened or reached (no `init` yet, a wrong CA_SERVICE_HOME or
        # CA_SERVICE_DATABASE_URL, PostgreSQL down) is the operator's to fix: one line, not a traceback.
        # SQLAlchemy is not imported here (CLI start time); its errors are told by their module.
        if not type(exc).__module__.startswith("sqlalchemy") or not _is_database_unavailable(exc):
            raise
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        click.echo(f"error [service.database_unavailable]: the CA database cannot be used ({cause}); "
                   "is the CA initialised (ca-service init), and are CA_SERVICE_HOME and "
                   "CA_SERVICE_DATABASE_URL the CA's?", err=True)
        sys.exit(1)


def _is_database_unavailable(exc: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))
