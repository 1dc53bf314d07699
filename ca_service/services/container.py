"""The per-process service container handed to api/ and cli/."""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> Services:
        db = Database(settings.database_url)
        return cls(settings=settings, db=db, clock=clock or SystemClock(), keys=KeyStore(settings, db))

    def close(self) -> None:
        self.db.dispose()
