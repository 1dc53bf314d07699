"""The collateral cache in the database: insert (verified items only, never a rollback), select as of
a time, list what is about to expire.

Selection as of ``at`` (what a verifier at ``at`` should have known): among the rows issued no later
than ``at``, the highest TCB evaluation data number, then the latest issue date. A row with a lower
TCB evaluation data number is never chosen over a higher one issued by then, even if the higher one
has expired (the verifier then refuses as expired: fail closed, never fall back to superseded TCB
data). Recorded evidence from before a TCB recovery still finds the collateral of its own time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ca_service.collateral.endpoints import Kind
from ca_service.collateral.errors import RollbackRefused
from ca_service.collateral.verify import VerifiedItem
from ca_service.db.models.collateral import CollateralItem


def insert(session: Session, item: VerifiedItem, now: datetime) -> bool:
    """Add a verified item; False if the same bytes are already cached under its kind and key.

    Raises:
        RollbackRefused (``collateral.rollback_refused``): its TCB evaluation data number is lower than
            one already cached for the same kind and key (the newer one is kept).
    """
    if session.get_bind().dialect.name == "postgresql":
        # serialise writers of the same (kind, key) so two replicas cannot both pass the rollback
        # check (SQLite's BEGIN IMMEDIATE already serialises every writer)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": int.from_bytes(hashlib.sha256(f"{item.kind.value}|{item.key}".encode()).digest()[:8],
                                             "big", signed=True)})
    existing = session.scalar(select(CollateralItem.id).where(
        CollateralItem.kind == item.kind.value, CollateralItem.key == item.key, CollateralItem.sha256 == item.sha256))
    if existing is not None:
        return False
    if item.tcb_evaluation_data_number is not None:
        newest = session.scalar(select(func.max(CollateralItem.tcb_evaluation_data_number)).where(
            CollateralItem.kind == item.kind.value, CollateralItem.key == item.key))
        if newest is not None and item.tcb_evaluation_data_number < newest:
            raise RollbackRefused(
                f"{item.kind.value} {item.key}: tcbEvaluationDataNumber {item.tcb_evaluation_data_number} is older "
                f"than the cached {newest}", url=item.url, cached=newest, offered=item.tcb_evaluation_data_number)
    session.add(CollateralItem(
        kind=item.kind.value, key=item.key, url=item.url, body=item.body, headers=dict(item.headers),
        issue_date=item.issue_date, next_update=item.next_update,
        tcb_evaluation_data_number=item.tcb_evaluation_data_number, fetched_at=item.fetched_at, created_at=now,
        sha256=item.sha256))
    session.flush()
    return True


def select_at(session: Session, kind: Kind, key: str, at: datetime) -> CollateralItem | None:
    """The row a verifier at ``at`` should use (module docstring), or None if none was issued by then."""
    stmt = (select(CollateralItem)
            .where(CollateralItem.kind == kind.value, CollateralItem.key == key, CollateralItem.issue_date <= at)
            .order_by(CollateralItem.tcb_evaluation_data_number.desc(), CollateralItem.issue_date.desc(),
                      CollateralItem.next_update.desc(), CollateralItem.id.desc())
            .limit(1))
    return session.scalar(stmt)


def bodies(session: Session, kind: Kind, key: str) -> list[bytes]:
    """Every cached body of a kind and key (newest first): e.g. the cert_chains of a product line."""
    rows = session.scalars(select(CollateralItem.body).where(
        CollateralItem.kind == kind.value, CollateralItem.key == key).order_by(CollateralItem.issue_date.desc()))
    return list(rows)


def newest_per_key(session: Session, kinds: Sequence[Kind] | None = None) -> list[CollateralItem]:
    """For each (kind, key), its newest row (latest issue date): what a refresh looks at."""
    stmt = select(CollateralItem)
    if kinds is not None:
        stmt = stmt.where(CollateralItem.kind.in_([k.value for k in kinds]))
    best: dict[tuple[str, str], CollateralItem] = {}
    for row in session.scalars(stmt):
        cur = best.get((row.kind, row.key))
        if cur is None or (row.tcb_evaluation_data_number or 0, row.issue_date, row.next_update) > (
                cur.tcb_evaluation_data_number or 0, cur.issue_date, cur.next_update):
            best[(row.kind, row.key)] = row
    return sorted(best.values(), key=lambda r: (r.kind, r.key))
