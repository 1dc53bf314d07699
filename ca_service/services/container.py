"""The per-process service container handed to api/ and cli/."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ca_service.clock import Clock, SystemClock
from ca_service.config import Settings
from ca_service.db.session import Database, DbTimeouts
from ca_service.services.group_commit import GroupCommitter
from ca_service.services.keys import KeyStore


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    keys: KeyStore
    # Vendor collateral fetcher (Intel PCS, AMD KDS): None = cache only (CA_SERVICE_COLLATERAL=offline,
    # the default; fill the cache with `ca-service collateral import|refresh`).
    collateral_fetcher: Any = None
    # batches the final issuance transaction of concurrent requests (services/group_commit.py)
    group_commit: GroupCommitter = field(default_factory=GroupCommitter)
    # the read side's check that final anchors are on chain (services/anchor_confirm.py), made on first use
    anchor_confirmer: Any = None

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> Services:
        db = Database(settings.database_url, DbTimeouts(
            lock_ms=settings.db_lock_timeout_ms, statement_ms=settings.db_statement_timeout_ms,
            idle_in_transaction_ms=settings.db_idle_in_transaction_timeout_ms,
            connect_s=settings.db_connect_timeout_seconds, keepalives_idle_s=settings.db_keepalives_idle_seconds))
        fetcher = None
        if settings.collateral_mode == "online":
            from ca_service.collateral.fetchers import RequestsFetcher

            fetcher = RequestsFetcher(mirrors=dict(settings.collateral_mirrors))
        return cls(settings=settings, db=db, clock=clock or SystemClock(), keys=KeyStore(settings, db),
                   collateral_fetcher=fetcher)

    def close(self) -> None:
        self.db.dispose()
