"""``ca-service db upgrade|purge-challenges``."""

from __future__ import annotations

import click

from ca_service.cli.common import settings_from_env
from ca_service.services.bootstrap import upgrade_database


@click.group("db")
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
def upgrade() -> None:
    """Apply Alembic migrations up to head."""
    upgrade_database(settings_from_env())
    click.echo("database at head")


@db.command("purge-challenges")
def purge_challenges() -> None:
    """Delete expired challenges now (``serve`` does it every CA_SERVICE_CHALLENGE_PURGE_INTERVAL_SECONDS)."""
    from ca_service.cli.common import open_services
    from ca_service.services.challenges import purge_expired

    click.echo(f"purged {purge_expired(open_services())} expired challenge(s)")
