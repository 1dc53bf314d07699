"""Cached vendor collateral (Intel PCS, AMD KDS): each row one verified HTTP response, as served.

The raw body (and the issuer-chain headers it was verified with) is kept byte for byte, so it can be
verified again and replayed into an offline bundle; the parsed view (window, TCB evaluation data
number) is what selection and refresh read. Rows are only added: a newer response for the same
(kind, key) is a new row, and selection picks by time and TCB evaluation data number
(``ca_service/collateral/store.py``), which is what makes a rollback visible and refusable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, LargeBinary, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db.base import Base, UTCDateTime


class CollateralItem(Base):
    __tablename__ = "collateral_items"
    __table_args__ = (
        Unique("kind", "key", "sha256", name="uq_collateral_items_kind_key_sha256"),
        Index("ix_collateral_items_kind_key", "kind", "key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # ca_service.collateral.endpoints.Kind
    key: Mapped[str] = mapped_column(String(200))  # FMSPC, PCK CA, product[/hwid/SPLs]...
    url: Mapped[str] = mapped_column(Text)  # the vendor URL (canonical form), whatever mirror served it
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    issue_date: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tcb_evaluation_data_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sha256: Mapped[str] = mapped_column(String(64))  # of body


class DutyState(Base):
    """Where a background duty left off, shared by every process and replica: for the collateral
    re-appraisal duty (``services/collateral_worker.py``) the collateral high-water mark it has judged
    and its last run. Written by the lock holder only."""

    __tablename__ = "duty_states"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
