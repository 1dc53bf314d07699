"""Chain anchors of the log's checkpoints, the deployed anchor contract, the worker's lease.

An anchor row moves planned -> sent -> included -> final (or -> failed); a reorg moves it from
included back to planned. The signed transaction is written *before* it is broadcast (write-ahead),
so a worker killed between send and confirmation finds it again on restart; every hash ever
broadcast for the row (fee bumps replace the same nonce) is kept in ``tx_hashes``, because any one
of them may be the one mined. ``(contract_id, size)`` is unique: a size is planned once, and the
contract refuses a size that does not grow, so it is anchored at most once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db.base import Base, UTCDateTime

ANCHOR_STATES = ("planned", "sent", "included", "final", "failed")
OPEN_STATES = ("planned", "sent", "included")


class AnchorContract(Base):
    """A deployed CheckpointAnchor; the active one has ``retired_at`` NULL for its chain."""

    __tablename__ = "anchor_contracts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # Identifies the chain instance: a fresh embedded or dev chain reuses the chain id.
    genesis_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    address: Mapped[str] = mapped_column(String(42))
    publisher: Mapped[str] = mapped_column(String(42))
    deploy_tx_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    deploy_block_number: Mapped[int] = mapped_column(BigInteger)
    compiler_version: Mapped[str] = mapped_column(String(80))
    embedded: Mapped[bool] = mapped_column(default=False)
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Anchor(Base):
    __tablename__ = "anchors"
    __table_args__ = (
        Unique("contract_id", "size", name="uq_anchors_contract_size"),
        CheckConstraint("state IN ('planned', 'sent', 'included', 'final', 'failed')", name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("anchor_contracts.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[str] = mapped_column(String(16), index=True)
    nonce: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    tx_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    raw_tx: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    fees: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    gas_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reorgs: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    included_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AnchorWorkerLease(Base):
    """Single-replica leases (db/lease.py), one row per duty: ``anchor-worker`` and ``collateral-duty``;
    the holder's token and when its lease expires unless renewed (PostgreSQL and SQLite alike)."""

    __tablename__ = "anchor_worker_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
