"""Loader-signed integrity reports (DESIGN.md flow 2), kept byte-exact as signed and logged.

``report`` holds the RFC 8785 bytes the loader signed; ``sha256`` (their digest) is the report's
identity, unique, so a resubmission returns the stored record instead of logging twice. The parsed
fields next to the bytes (serial, order id, issued_at) are for lookups only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db.base import Base, UTCDateTime


class IntegrityReport(Base):
    __tablename__ = "integrity_reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    report: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    alg: Mapped[str] = mapped_column(String(32))
    serial: Mapped[str] = mapped_column(String(42), index=True)
    order_id: Mapped[str] = mapped_column(String(128), index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    log_index: Mapped[int] = mapped_column(BigInteger, unique=True)
