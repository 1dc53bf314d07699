"""What an operator watches: log size, checkpoint age, anchor lag, collateral expiry, challenges.

Read from the database at scrape time, so every worker and replica reports the same figures
(gauges kept in one process would differ between scrapes). ``degraded()`` names the duties that
are stuck past their thresholds, for ``/readyz``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from ca_service.db.models.anchor import Anchor, AnchorContract
from ca_service.db.models.collateral import CollateralItem
from ca_service.db.models.core import Challenge
from ca_service.db.models.tlog import TlogCheckpoint
from ca_service.services.container import Services
from ca_service.tlog.store import stored_size

# a checkpoint is due every few seconds under `serve`; an anchor every T (60 s) or N leaves
CHECKPOINT_STUCK_SECONDS = 120.0
ANCHOR_STUCK_FACTOR = 5.0


@dataclass(frozen=True)
class OpsState:
    now: datetime
    log_size: int
    checkpoint_size: int
    checkpoint_age_seconds: float | None
    anchored_size: int | None            # newest final anchor of the active contract (None: no contract)
    anchor_lag_leaves: int | None
    anchor_lag_seconds: float | None     # age of the oldest checkpoint no final anchor covers
    challenges: int
    collateral_expiry_seconds: dict[tuple[str, str], float] = field(default_factory=dict)

    def degraded(self, anchor_interval_seconds: float, anchoring: bool) -> list[str]:
        out = []
        if (self.log_size > self.checkpoint_size and self.checkpoint_age_seconds is not None
                and self.checkpoint_age_seconds > CHECKPOINT_STUCK_SECONDS):
            out.append(f"checkpointing: {self.log_size - self.checkpoint_size} entries unpublished, newest "
                       f"checkpoint {self.checkpoint_age_seconds:.0f} s old")
        stuck = max(60.0, ANCHOR_STUCK_FACTOR * anchor_interval_seconds)
        if anchoring and self.anchor_lag_seconds is not None and self.anchor_lag_seconds > stuck:
            out.append(f"anchoring: {self.anchor_lag_leaves} leaves unanchored for {self.anchor_lag_seconds:.0f} s")
        return out


def _age(now: datetime, t: datetime | None) -> float | None:
    return None if t is None else max(0.0, (now - t).total_seconds())


def operational_state(svc: Services) -> OpsState:
    now = svc.clock.now()
    with svc.db.read() as s:
        size = stored_size(s)
        latest = s.scalars(select(TlogCheckpoint).order_by(TlogCheckpoint.size.desc()).limit(1)).first()
        contract = s.scalars(select(AnchorContract).where(AnchorContract.retired_at.is_(None))
                             .order_by(AnchorContract.id.desc())).first()
        anchored: int | None = None
        lag_leaves = lag_seconds = None
        if contract is not None:
            anchored = int(s.scalar(select(func.max(Anchor.size)).where(Anchor.contract_id == contract.id,
                                                                       Anchor.state == "final")) or 0)
            cp_size = latest.size if latest is not None else 0
            lag_leaves = max(0, cp_size - anchored)
            oldest = s.scalar(select(func.min(TlogCheckpoint.created_at)).where(TlogCheckpoint.size > anchored))
            lag_seconds = _age(now, oldest) if lag_leaves else 0.0
        challenges = int(s.scalar(select(func.count()).select_from(Challenge)) or 0)
        expiry = {(k, key): (nu - now).total_seconds() for k, key, nu in s.execute(
            select(CollateralItem.kind, CollateralItem.key, func.max(CollateralItem.next_update))
            .group_by(CollateralItem.kind, CollateralItem.key))}
    return OpsState(now=now, log_size=size, checkpoint_size=latest.size if latest is not None else 0,
                    checkpoint_age_seconds=_age(now, latest.created_at if latest is not None else None),
                    anchored_size=anchored, anchor_lag_leaves=lag_leaves, anchor_lag_seconds=lag_seconds,
                    challenges=challenges, collateral_expiry_seconds=expiry)
