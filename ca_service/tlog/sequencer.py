"""Append leaves to the log inside the caller's transaction, with dense indexes.

Dense means: indexes 0, 1, 2, ... with no gap and no duplicate, under any number of concurrent
writers on any number of hosts. The writer holds a transaction-scoped lock from the moment it
picks ``max(idx) + 1`` until its transaction ends:

- PostgreSQL: ``pg_advisory_xact_lock`` (released at COMMIT/ROLLBACK, after the commit is
  visible). The INSERT runs as a *separate statement after* the lock, so under READ COMMITTED it
  takes a fresh snapshot that sees the previous holder's row. (Callers must not run the
  transaction at REPEATABLE READ or SERIALIZABLE: the primary key would then refuse the
  duplicate index instead of sequencing it.) Lock and insert travel in one round trip.
- SQLite: the transaction began with ``BEGIN IMMEDIATE`` (``db/session.py``), which serialises writers.

A rolled-back transaction takes its index with it; the next writer reuses it, so no gap appears.
When a leaf completes a 256-leaf tile, the tile's hashes are stored, and its root is appended to
the tile one level up (cascading), so proofs never recompute the tree (``tlog/store.py``).

The lock is held until the caller commits: call :func:`append_leaf` as the last statement
before COMMIT to keep the serialised section short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.orm import Session

from ca_service.db import rawsql
from ca_service.db.models.tlog import TlogEntry, TlogTile
from ca_service.errors import LeafInvalid, LogInconsistent
from ca_service.tlog.merkle import HASH_SIZE, leaf_hash, root_of_leaf_hashes
from ca_service.tlog.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, split_hashes

LOG_LOCK_KEY = 0x6361_7376_746C_6F67  # "casvtlog"

_INSERT_NEXT = (
    "INSERT INTO tlog_entries (idx, leaf, leaf_hash) "
    "SELECT COALESCE(MAX(idx) + 1, 0), :leaf, :leaf_hash FROM tlog_entries RETURNING idx"
)
# Two statements, one round trip: each statement gets its own snapshot under READ COMMITTED.
_PG_LOCK_AND_INSERT = "SELECT pg_advisory_xact_lock(:lock_key); " + _INSERT_NEXT


_ENTRIES = rawsql.RawInsert(cast(Table, TlogEntry.__table__))


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _check_leaf(leaf: bytes) -> None:
    if not leaf or len(leaf) > MAX_ENTRY_SIZE:
        raise LeafInvalid("a leaf must be 1..65535 bytes", size=len(leaf))


def lock_log(session: Session) -> None:
    """Take the sequencing lock for the rest of the caller's transaction (PostgreSQL)."""
    if _is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOG_LOCK_KEY})


def lock_and_next_index(session: Session) -> int:
    """Take the sequencing lock and read the index the next leaf will get, in one round trip.

    For callers that must know the index before building the leaf (a certificate that names its
    log index); the lock holds until the caller's transaction ends, so the index cannot move.
    """
    next_sql = "SELECT COALESCE(MAX(idx) + 1, 0) FROM tlog_entries"
    # on PostgreSQL two statements, one round trip; the second sees every commit made before the lock
    return int(rawsql.scalar(session, f"SELECT pg_advisory_xact_lock({LOG_LOCK_KEY:d}); " + next_sql, next_sql, ()))


def append_leaf(session: Session, leaf: bytes) -> int:
    """Append ``leaf`` in the caller's transaction (never commits) and return its index.

    Raises:
        LeafInvalid (``log.leaf_invalid``): empty or over 65535 bytes (C2SP entry bundle limit).
    """
    _check_leaf(leaf)
    h = leaf_hash(leaf)
    params = {"leaf": leaf, "leaf_hash": h, "lock_key": LOG_LOCK_KEY}
    sql = _PG_LOCK_AND_INSERT if _is_postgres(session) else _INSERT_NEXT
    index: int = session.execute(text(sql), params).scalar_one()
    if (index + 1) % TILE_WIDTH == 0:
        _complete_tiles(session, index, [h])
    return index


def append_leaves(session: Session, leaves: Sequence[bytes]) -> int:
    """Bulk path (imports, benchmarks): append many leaves in the caller's transaction.

    Returns the index of the first one.
    """
    for leaf in leaves:
        _check_leaf(leaf)
    lock_log(session)
    start: int = session.execute(text("SELECT COALESCE(MAX(idx) + 1, 0) FROM tlog_entries")).scalar_one()
    if not leaves:
        return start
    hashes = [leaf_hash(x) for x in leaves]
    session.execute(
        insert(TlogEntry),
        [
            {"idx": start + i, "leaf": x, "leaf_hash": h}
            for i, (x, h) in enumerate(zip(leaves, hashes, strict=True))
        ],
    )
    _complete_tiles(session, start, hashes)
    return start


def append_leaves_at(session: Session, start: int, leaves: Sequence[bytes], *,
                     along: Sequence[tuple[rawsql.RawInsert, Sequence[Mapping[str, Any]]]] = ()) -> None:
    """Append ``leaves`` at indexes ``start, start + 1, ...`` in the caller's transaction.
    ``along``: the caller's other inserts of this transaction, sent before the leaves' in the same
    round trip (:func:`rawsql.execute_all`).

    For a caller that took the sequencing lock and read ``start`` with :func:`lock_and_next_index`
    in this same transaction (it signed certificates naming those indexes): the lock holds until
    its transaction ends, so ``start`` is still the next index. The primary key refuses a duplicate
    index, which would roll the whole transaction back rather than issue.

    Raises:
        LeafInvalid (``log.leaf_invalid``): an empty leaf or one over 65535 bytes.
    """
    for leaf in leaves:
        _check_leaf(leaf)
    if not leaves:
        rawsql.execute_all(session, along)
        return
    hashes = [leaf_hash(x) for x in leaves]
    rawsql.execute_all(session, [*along, (_ENTRIES, [{"idx": start + i, "leaf": x, "leaf_hash": h}
                                                     for i, (x, h) in enumerate(zip(leaves, hashes, strict=True))])])
    _complete_tiles(session, start, hashes)


def _complete_tiles(session: Session, start: int, hashes: list[bytes]) -> None:
    """Store the level-0 tiles that leaves ``[start, start + len(hashes))`` completed, cascade up."""
    end = start + len(hashes)
    first_tile = start // TILE_WIDTH
    done = end // TILE_WIDTH  # tiles [0, done) are full now
    if done <= first_tile:
        return
    head_start = first_tile * TILE_WIDTH
    head: list[bytes] = []
    if head_start < start:
        head = list(
            session.scalars(
                select(TlogEntry.leaf_hash)
                .where(TlogEntry.idx >= head_start, TlogEntry.idx < start)
                .order_by(TlogEntry.idx)
            )
        )
        if len(head) != start - head_start:
            raise LogInconsistent("log entries are not dense below the appended leaf", index=start)
    level0 = head + hashes
    rows = []
    roots = []
    for n in range(first_tile, done):
        chunk = level0[(n - first_tile) * TILE_WIDTH : (n - first_tile + 1) * TILE_WIDTH]
        rows.append({"level": 0, "idx": n, "hashes": b"".join(chunk)})
        roots.append(root_of_leaf_hashes(chunk))
    session.execute(insert(TlogTile), rows)
    _push(session, 1, first_tile, roots)


def _push(session: Session, level: int, first: int, hashes: list[bytes]) -> None:
    """Append hashes at positions ``first...`` to the (growing) tiles of ``level``; cascade full ones."""
    completed_first: int | None = None
    completed: list[bytes] = []
    pos = first
    i = 0
    while i < len(hashes):
        tile = pos // TILE_WIDTH
        offset = pos % TILE_WIDTH
        take = min(TILE_WIDTH - offset, len(hashes) - i)
        existing = session.scalar(
            select(TlogTile.hashes).where(TlogTile.level == level, TlogTile.idx == tile)
        )
        have = b"" if existing is None else existing
        if len(have) != offset * HASH_SIZE:
            raise LogInconsistent("stored tile does not end where the new hash goes", level=level, tile=tile)
        content = have + b"".join(hashes[i : i + take])
        if existing is None:
            session.execute(insert(TlogTile).values(level=level, idx=tile, hashes=content))
        else:
            session.execute(
                update(TlogTile).where(TlogTile.level == level, TlogTile.idx == tile).values(hashes=content)
            )
        if len(content) == TILE_WIDTH * HASH_SIZE:
            if completed_first is None:
                completed_first = tile
            completed.append(root_of_leaf_hashes(split_hashes(content)))
        pos += take
        i += take
    if completed_first is not None:
        _push(session, level + 1, completed_first, completed)
