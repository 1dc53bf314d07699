"""Entry point: ``ca-service``."""

from __future__ import annotations

import importlib
import sys

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
    ("ca_service.cli.verify", "seal"),
    ("ca_service.cli.verify", "unseal"),
    ("ca_service.cli.log", "log"),
    ("ca_service.cli.anchor", "anchor"),
    ("ca_service.cli.token", "token"),
    ("ca_service.cli.revoke", "revoke"),
    ("ca_service.cli.collateral", "collateral"),
    ("ca_service.cli.integrity", "integrity"),
    ("ca_service.cli.reappraise", "reappraise"),
)


@click.group()
@click.version_option(package_name="ca-service")
def cli() -> None:
    """ca-service: attestation-backed certificate authority."""


for _module, _attr in COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CAServiceError as exc:
        click.echo(f"error [{exc.code}]: {exc.detail}", err=True)
        sys.exit(1)
