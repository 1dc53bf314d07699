"""Core tables: challenges, CA keys, policies, certificates, evidence, tokens, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ca_service.db.base import Base, UTCDateTime


class Challenge(Base):
    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CAKey(Base):
    """A key the service holds: the issuing CA, the log key, the EAR key; the root's certificate only.

    Private keys are stored encrypted (MultiFernet); ``encrypted_private_key`` is NULL for the
    offline root, whose key lives in a file the operator moves away.
    """

    __tablename__ = "ca_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    certificate_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    public_key_der: Mapped[bytes] = mapped_column(LargeBinary)
    encrypted_private_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Policy(Base):
    __tablename__ = "policies"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyVersion(Base):
    """An immutable, content-addressed policy version (SHA-256 of RFC 8785 canonical JSON)."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="name_version"),
        UniqueConstraint("name", "digest", name="name_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), ForeignKey("policies.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(64))
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class EvidenceBlob(Base):
    """Evidence as received, content-addressed, kept for audit and policy dry runs."""

    __tablename__ = "evidence_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Certificate(Base):
    __tablename__ = "certificates"

    serial: Mapped[str] = mapped_column(String(42), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    subject: Mapped[str] = mapped_column(Text)
    spki_sha256: Mapped[str] = mapped_column(String(64), index=True)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    policy_name: Mapped[str] = mapped_column(String(64), index=True)
    policy_version: Mapped[int] = mapped_column(Integer)
    policy_digest: Mapped[str] = mapped_column(String(64))
    appraisal: Mapped[dict[str, Any]] = mapped_column(JSON)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="valid")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # SHA-256 of the TEE instance the evidence attests (evidence/instance.py): a loader certificate
    # links to a CVM certificate of the same instance
    instance_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # a loader certificate: the serial of the CVM certificate it links to (NULL for every other)
    cvm_serial: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)


class ApiToken(Base):
    """Bearer tokens, stored as SHA-256 of the secret, never the secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditEvent(Base):
    """Append-only record of administrative actions."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[str | None] = mapped_column(String(64), nullable=True)
    after: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CARevocationList(Base):
    """CRLs the offline root signs (the ARL, RFC 5280 section 5: revoked CA certificates), stored so
    every replica serves the same signed bytes. Each new one carries a higher CRL number."""

    __tablename__ = "ca_revocation_lists"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    issuer_role: Mapped[str] = mapped_column(String(16), index=True)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
