"""``ca-service init``."""

from __future__ import annotations

import click

from ca_service.cli.common import settings_from_env
from ca_service.services.bootstrap import init_ca


@click.command("init")
def init() -> None:
    """Create the database, the offline root, the issuing CA and service keys (idempotent)."""
    settings = settings_from_env()
    result = init_ca(settings)
    click.echo(f"profile: {settings.profile}; home: {settings.home}; database: {settings.database_url.split('@')[-1]}")
    if settings.insecure:
        click.echo("WARNING: insecure-dev profile: not running in a TEE; certificates say so", err=True)
    for note in result.notes:
        click.echo(note)
    if result.root_passphrase_file:
        click.echo(f"root key passphrase: {result.root_passphrase_file}")
