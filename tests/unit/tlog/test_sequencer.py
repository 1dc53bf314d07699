"""Sequencer and stored tiles on SQLite: roots and proofs from the store match the pure tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from ca_service.db.models import Base, TlogEntry, TlogTile
from ca_service.db.session import Database
from ca_service.errors import LeafInvalid
from ca_service.tlog import merkle
from ca_service.tlog.sequencer import append_leaf, append_leaves
from ca_service.tlog.store import TileStore, stored_size


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'log.db'}")
    Base.metadata.create_all(d.engine)
    return d


def _leaf(i: int) -> bytes:
    return b'{"i":%d}' % i


def test_append_dense_and_tiles(db: Database) -> None:
    n = 256 * 2 + 37
    for i in range(n):
        with db.transaction() as s:
            assert append_leaf(s, _leaf(i)) == i
    hashes = [merkle.leaf_hash(_leaf(i)) for i in range(n)]
    with db.read() as s:
        assert stored_size(s) == n
        assert s.scalar(select(func.count()).select_from(TlogTile).where(TlogTile.level == 0)) == 2
        level1 = s.scalar(select(TlogTile.hashes).where(TlogTile.level == 1, TlogTile.idx == 0))
        roots = [merkle.root_of_leaf_hashes(hashes[:256]), merkle.root_of_leaf_hashes(hashes[256:512])]
        assert level1 == b"".join(roots)
        for size in (1, 255, 256, 257, 512, n):
            store = TileStore(s, size)
            assert store.root() == merkle.root_of_leaf_hashes(hashes[:size])
        store = TileStore(s, n)
        ref = merkle.hashes_source(hashes)
        for m in (0, 1, 255, 256, 300, 511, 512, n - 1):
            assert store.inclusion_proof(m) == merkle.inclusion_proof(m, n, ref)
        for old in (1, 2, 256, 257, 400, n):
            assert store.consistency_proof(old) == merkle.consistency_proof(old, n, ref)


def test_rollback_leaves_no_gap(db: Database) -> None:
    with db.transaction() as s:
        append_leaf(s, _leaf(0))
    with pytest.raises(RuntimeError), db.transaction() as s:
        assert append_leaf(s, _leaf(1)) == 1
        raise RuntimeError("issuance failed after the leaf")
    with db.transaction() as s:
        assert append_leaf(s, _leaf(2)) == 1
    with db.read() as s:
        assert list(s.scalars(select(TlogEntry.idx).order_by(TlogEntry.idx))) == [0, 1]


def test_bulk_matches_single(db: Database) -> None:
    n = 256 * 256 + 256 * 3 + 5  # completes a level-1 tile, so a level-2 hash exists
    leaves = [_leaf(i) for i in range(n)]
    with db.transaction() as s:
        append_leaf(s, leaves[0])
    with db.transaction() as s:
        assert append_leaves(s, leaves[1:1000]) == 1
    with db.transaction() as s:
        assert append_leaves(s, leaves[1000:]) == 1000
    hashes = [merkle.leaf_hash(x) for x in leaves]
    with db.read() as s:
        assert s.scalar(select(func.length(TlogTile.hashes)).where(TlogTile.level == 2)) == 32
        store = TileStore(s, n)
        assert store.root() == merkle.root_of_leaf_hashes(hashes)
        ref = merkle.hashes_source(hashes)
        for m in (0, 65535, 65536, n - 1):
            fresh = TileStore(s, n)
            assert fresh.inclusion_proof(m) == merkle.inclusion_proof(m, n, ref)
            assert fresh.reads <= 2 * 3  # at most two tiles per tile level
        assert TileStore(s, n).consistency_proof(60000) == merkle.consistency_proof(60000, n, ref)


def test_leaf_limits(db: Database) -> None:
    with db.transaction() as s, pytest.raises(LeafInvalid):
        append_leaf(s, b"")
    with db.transaction() as s, pytest.raises(LeafInvalid):
        append_leaf(s, b"x" * 65536)
