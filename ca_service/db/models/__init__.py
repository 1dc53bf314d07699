"""All mapped tables. Alembic's env.py imports this package, so every model module is listed here."""

from ca_service.db.base import Base
from ca_service.db.models.anchor import Anchor, AnchorContract, AnchorWorkerLease  # noqa: F401
from ca_service.db.models.collateral import CollateralItem, DutyState  # noqa: F401
from ca_service.db.models.core import (
    ApiToken,
    AuditEvent,
    CAKey,
    CARevocationList,
    Certificate,
    Challenge,
    EvidenceBlob,
    Policy,
    PolicyVersion,
)
from ca_service.db.models.integrity import IntegrityReport  # noqa: F401
from ca_service.db.models.tlog import TlogCheckpoint, TlogEntry, TlogTile

__all__ = [
    "Base",
    "ApiToken",
    "AuditEvent",
    "CAKey",
    "CARevocationList",
    "Certificate",
    "Challenge",
    "EvidenceBlob",
    "Policy",
    "PolicyVersion",
    "TlogCheckpoint",
    "TlogEntry",
    "TlogTile",
]
