"""The per-process service container handed to api/ and cli/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ca_service.clock import Clock, SystemClock
from ca_service.config import Settings
from ca_service.db.session import Database
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

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> Services:
        db = Database(settings.database_url)
        fetcher = None
        if settings.collateral_mode == "online":
            from ca_service.collateral.fetchers import RequestsFetcher

            fetcher = RequestsFetcher()
        return cls(settings=settings, db=db, clock=clock or SystemClock(), keys=KeyStore(settings, db),
                   collateral_fetcher=fetcher)

    def close(self) -> None:
        self.db.dispose()
