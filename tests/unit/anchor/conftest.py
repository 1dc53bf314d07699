"""Embedded-chain fixtures: a fresh in-process chain and a throwaway SQLite database per test."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from ca_service.anchor.chain import ChainClient, InsecureEmbeddedChainWarning
from ca_service.anchor.worker import Checkpoint
from ca_service.db.models import Base
from ca_service.db.session import Database


@dataclass
class StepClock:
    at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class ListSource:
    """An in-memory CheckpointSource: the test appends checkpoints as the log would publish them."""

    checkpoints: list[Checkpoint] = field(default_factory=list)

    def publish(self, size: int) -> Checkpoint:
        cp = Checkpoint(size=size, root=size.to_bytes(32, "big"), note=f"origin\n{size}\nroot\n".encode())
        self.checkpoints.append(cp)
        return cp

    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None


@pytest.fixture
def embedded_chain() -> ChainClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureEmbeddedChainWarning)
        return ChainClient.in_process()


@pytest.fixture
def sqlite_db(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'anchor.db'}")
    Base.metadata.create_all(db.engine)
    yield db
    db.dispose()
