"""Alembic environment: the URL comes from CA_SERVICE_DATABASE_URL (or the caller's config).

On PostgreSQL the migration takes an advisory lock, so replicas starting together upgrade once,
and sets a lock timeout so a stuck migration fails instead of hanging the fleet.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from ca_service.db.models import Base
from ca_service.db.session import make_engine

MIGRATION_LOCK_KEY = 0x6361_7376_6D69_6772  # "casvmigr"

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from ca_service.config import Settings

        url = Settings.from_env().database_url
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET lock_timeout = '30s'"))
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
