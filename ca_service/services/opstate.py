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
from ca_service.db.models.collateral import CollateralItem, DutyState
from ca_service.db.models.core import Challenge
from ca_service.db.models.tlog import TlogCheckpoint
from ca_service.services.container import Services
from ca_service.tlog.store import stored_size

# a checkpoint is due every few seconds under `serve`; an anchor every T (60 s) or N leaves
CHECKPOINT_STUCK_SECONDS = 120.0
ANCHOR_STUCK_FACTOR = 5.0
DUTY_STUCK_FACTOR = 3.0


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
    # the collateral duty's last run (services/collateral_duty.py): when, and its error if it failed
    collateral_duty_age_seconds: float | None = None
    collateral_duty_error: str | None = None

    def degraded(self, anchor_interval_seconds: float, anchoring: bool,
                 collateral_duty_interval: float | None = None) -> list[str]:
        out = []
        if (self.log_size > self.checkpoint_size and self.checkpoint_age_seconds is not None
                and self.checkpoint_age_seconds > CHECKPOINT_STUCK_SECONDS):
            out.append(f"checkpointing: {self.log_size - self.checkpoint_size} entries unpublished, newest "
                       f"checkpoint {self.checkpoint_age_seconds:.0f} s old")
        stuck = max(60.0, ANCHOR_STUCK_FACTOR * anchor_interval_seconds)
        if anchoring and self.anchor_lag_seconds is not None and self.anchor_lag_seconds > stuck:
            out.append(f"anchoring: {self.anchor_lag_leaves} leaves unanchored for {self.anchor_lag_seconds:.0f} s")
        if collateral_duty_interval is not None and self.collateral_duty_age_seconds is not None:
            if self.collateral_duty_error is not None:
                out.append(f"collateral duty: the last run failed ({self.collateral_duty_error})")
            elif self.collateral_duty_age_seconds > DUTY_STUCK_FACTOR * collateral_duty_interval + 300:
                out.append(f"collateral duty: last run {self.collateral_duty_age_seconds:.0f} s ago")
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
        duty = s.get(DutyState, "collateral")
        last_run = (duty.state.get("last_run") or {}) if duty is not None else {}
    duty_at = datetime.fromisoformat(last_run["at"].replace("Z", "+00:00")) if "at" in last_run else None
    return OpsState(now=now, log_size=size, checkpoint_size=latest.size if latest is not None else 0,
                    checkpoint_age_seconds=_age(now, latest.created_at if latest is not None else None),
                    anchored_size=anchored, anchor_lag_leaves=lag_leaves, anchor_lag_seconds=lag_seconds,
                    challenges=challenges, collateral_expiry_seconds=expiry,
                    collateral_duty_age_seconds=_age(now, duty_at), collateral_duty_error=last_run.get("error"))
