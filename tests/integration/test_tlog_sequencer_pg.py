"""Dense sequencing under concurrent writers from several processes on real PostgreSQL."""

from __future__ import annotations

import multiprocessing
import random

import pytest
from sqlalchemy import select

from ca_service.db.models import Base, TlogEntry
from ca_service.db.session import Database
from ca_service.tlog import merkle
from ca_service.tlog.sequencer import append_leaf, append_leaves
from ca_service.tlog.store import TileStore, stored_size
from tests.integration.tlog_pg import pg_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.postgres

WORKERS = 4
PER_WORKER = 200


def _writer(url: str, worker: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    db = Database(url)
    rng = random.Random(worker)
    got: list[tuple[int, bytes]] = []
    done = 0
    while done < PER_WORKER:
        leaf = b'{"w":%d,"n":%d}' % (worker, done)
        fail = rng.random() < 0.1
        try:
            with db.transaction() as s:
                idx = append_leaf(s, leaf)
                if fail:
                    raise RuntimeError("rolled back after sequencing")
        except RuntimeError:
            continue
        got.append((idx, leaf))
        done += 1
    db.dispose()
    out.put(got)


@pytest.fixture(scope="module")
def pg_db(pg_url: str) -> Database:  # noqa: F811
    db = Database(pg_url)
    Base.metadata.drop_all(db.engine)
    Base.metadata.create_all(db.engine)
    return db


def test_parallel_processes_dense(pg_db: Database, pg_url: str) -> None:  # noqa: F811
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    pg_db.engine.dispose()
    procs = [ctx.Process(target=_writer, args=(pg_url, w, q)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = sorted(i for r in results for i, _ in r)
    total = WORKERS * PER_WORKER
    assert claimed == list(range(total))  # no gap, no duplicate, rollbacks reused
    by_index = {i: leaf for r in results for i, leaf in r}
    with pg_db.read() as s:
        rows = list(s.execute(select(TlogEntry.idx, TlogEntry.leaf).order_by(TlogEntry.idx)))
        assert [(i, leaf) for i, leaf in rows] == sorted(by_index.items())
        assert stored_size(s) == total
        hashes = [merkle.leaf_hash(by_index[i]) for i in range(total)]
        store = TileStore(s, total)
        assert store.root() == merkle.root_of_leaf_hashes(hashes)
        ref = merkle.hashes_source(hashes)
        for m in (0, 255, 256, total - 1):
            assert store.inclusion_proof(m) == merkle.inclusion_proof(m, total, ref)


def test_bulk_then_single_pg(pg_db: Database) -> None:
    with pg_db.transaction() as s:
        start = stored_size(s)
        first = append_leaves(s, [b"bulk-%d" % i for i in range(300)])
        assert first == start
    with pg_db.transaction() as s:
        assert append_leaf(s, b"after-bulk") == start + 300
    with pg_db.read() as s:
        n = stored_size(s)
        leaves = list(s.scalars(select(TlogEntry.leaf).order_by(TlogEntry.idx)))
        assert TileStore(s, n).root() == merkle.root_of_leaves(leaves)


def test_lock_held_until_commit(pg_db: Database) -> None:
    from sqlalchemy import text

    from ca_service.tlog.sequencer import LOG_LOCK_KEY

    with pg_db.transaction() as s:
        append_leaf(s, b"locked")
        with pg_db.engine.connect() as other:
            held = other.execute(
                # advisory locks are per database; other tests on the same server hold the same key in theirs
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :lo "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
                {"lo": LOG_LOCK_KEY & 0xFFFFFFFF},
            ).scalar_one()
            assert held == 1
            try_lock = text("SELECT pg_try_advisory_xact_lock(:k)")
            assert other.execute(try_lock, {"k": LOG_LOCK_KEY}).scalar_one() is False
