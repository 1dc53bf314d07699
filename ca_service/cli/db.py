"""``ca-service db upgrade``."""

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
