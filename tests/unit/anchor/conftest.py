"""Embedded-chain fixtures: a fresh in-process chain and a throwaway SQLite database per test."""

from __future__ import annotations

import warnings

import pytest

from ca_service.anchor.chain import ChainClient, InsecureEmbeddedChainWarning
from ca_service.db.models import Base
from ca_service.db.session import Database


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
