"""Flow 2: a trusted loader's signed integrity report in, a log entry out. Owns its transaction.

Order (docs/integrity-report.md): (1) parse the report bytes (canonical RFC 8785, schema v1);
(2) the report is not dated in the future; (3) the certificate it names was issued by this CA
(row in ``certificates``, signature by the issuing key), is a signing end entity, valid at the
report's time and now, not revoked, and by default a loader certificate (docs/loader.md); (4)
the signature by that certificate's key; (5) what the report lists against what the loader
measured, where its policy asks; then in ONE transaction: lock the certificate row (a concurrent
revocation waits or wins), check a loader's CVM certificate is still valid, take the log's
sequencing lock, return the stored record if the same report (SHA-256) is already there, else
insert the record and append its ``integrity-report`` leaf. Nothing is written on any refusal.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import select

from ca_service.ca import integrity as pure
from ca_service.config import Settings
from ca_service.db.models import Certificate
from ca_service.db.models.integrity import IntegrityReport as IntegrityRow
from ca_service.errors import (
    CAServiceError,
    IntegrityCertificateRevoked,
    IntegrityCertificateUnknown,
    IntegrityPolicyNotAllowed,
    IntegrityReportNotFound,
    IntegrityReportTimeInvalid,
    LogInconsistent,
)
from ca_service.services.container import Services
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf, lock_and_next_index

log = logging.getLogger("ca_service.integrity")

# A loader's clock may run a little ahead of ours; a report dated further ahead is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)
POLICIES_ENV = "CA_SERVICE_INTEGRITY_POLICIES"


class _Configured(enum.Enum):
    CONFIGURED = "configured"


CONFIGURED = _Configured.CONFIGURED


class _LoaderPolicies(enum.Enum):
    LOADERS = "loader policies"


# The default bar: the signing certificate is a loader certificate (issued under a loader policy,
# linked to its CVM's certificate; services/loaders.py).
LOADER_POLICIES = _LoaderPolicies.LOADERS
Allowed = Collection[str] | None | _LoaderPolicies


@dataclass(frozen=True)
class IntegrityRecord:
    """A stored report; ``created`` is False when the same report was already logged."""

    id: str
    sha256: str
    serial: str
    order_id: str
    alg: str
    issued_at: datetime
    received_at: datetime
    log_index: int
    report: bytes
    signature: bytes
    created: bool = False

    @classmethod
    def of(cls, row: IntegrityRow, *, created: bool = False) -> IntegrityRecord:
        return cls(id=row.id, sha256=row.sha256, serial=row.serial, order_id=row.order_id, alg=row.alg,
                   issued_at=row.issued_at, received_at=row.received_at, log_index=row.log_index,
                   report=bytes(row.report), signature=bytes(row.signature), created=created)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "log_index": self.log_index, "serial": self.serial}


def configured_loader_policies(settings: Settings, env: Mapping[str, str] | None = None) -> frozenset[str] | None | \
        _LoaderPolicies:
    """The certificates that may sign reports: ``CA_SERVICE_INTEGRITY_POLICIES``.

    Unset (the default, in every profile): :data:`LOADER_POLICIES`, loader certificates only (a
    certificate issued under a policy with ``loader_digests``, linked to its CVM's certificate).
    Comma-separated policy names: certificates issued under those. ``*``: any certificate of this CA
    (``None``). It is a deployment setting, never a request field: the submitter must not choose
    its own bar.
    """
    value = (settings.integrity_policies or "" if env is None else env.get(POLICIES_ENV, "")).strip()
    if value == "*":
        return None
    if not value:
        return LOADER_POLICIES
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def submit_report(svc: Services, body: bytes, signature: bytes, alg: str, *,
                  allowed_policies: Allowed | _Configured = CONFIGURED) -> IntegrityRecord:
    """Verify and log one report; idempotent on the report's SHA-256.

    ``allowed_policies``: policy names the signing certificate must have been issued under;
    ``None`` for any, :data:`LOADER_POLICIES` for loader certificates; by default from
    :func:`configured_loader_policies`.

    Raises:
        IntegrityReportMalformed (``integrity.malformed``), IntegrityReportNotCanonical
        (``integrity.not_canonical``), IntegrityReportTimeInvalid (``integrity.time_invalid``),
        IntegrityCertificateUnknown (``integrity.certificate_unknown``),
        IntegrityCertificateUntrusted (``integrity.certificate_untrusted``),
        IntegrityCertificateRevoked (``integrity.certificate_revoked``),
        IntegrityCertificateExpired (``integrity.certificate_expired``),
        IntegrityPolicyNotAllowed (``integrity.policy_not_allowed``),
        IntegrityComponentNotMeasured (``integrity.component_not_measured``): the loader policy's
            ``integrity_reports.measured`` names a role whose report entry is not what the loader measured,
        IntegrityAlgMismatch (``integrity.alg_mismatch``),
        IntegritySignatureInvalid (``integrity.signature_invalid``).
    """
    try:
        record = _submit(svc, body, signature, alg, allowed_policies)
    except CAServiceError as exc:
        log.info("integrity report refused", extra={"code": exc.code})
        raise
    log.info("integrity report %s", "logged" if record.created else "already logged",
             extra={"id": record.id, "sha256": record.sha256, "serial": record.serial,
                    "order_id": record.order_id, "log_index": record.log_index})
    return record


def _submit(svc: Services, body: bytes, signature: bytes, alg: str,
            allowed_policies: Allowed | _Configured) -> IntegrityRecord:
    now = svc.clock.now()
    # (1)
    report = pure.parse_report(body)
    # (2)
    if report.issued_at > now + MAX_CLOCK_SKEW:
        raise IntegrityReportTimeInvalid("the report is dated in the future", issued_at=report.issued_at.isoformat())
    # (3)
    with svc.db.read() as session:
        row = session.execute(select(Certificate).where(
            Certificate.serial == report.loader_certificate_serial)).scalar_one_or_none()
    if row is None:
        raise IntegrityCertificateUnknown("no certificate of this CA has the serial the report names",
                                          serial=report.loader_certificate_serial)
    cert = x509.load_der_x509_certificate(row.der)
    pure.check_signing_certificate(cert, svc.keys.certificate("issuing"), times=(report.issued_at, now))
    if row.status != "valid":
        raise IntegrityCertificateRevoked("the signing certificate is revoked", serial=row.serial)
    allowed = (configured_loader_policies(svc.settings) if isinstance(allowed_policies, _Configured)
               else allowed_policies)
    if allowed is LOADER_POLICIES:
        if row.cvm_serial is None:
            raise IntegrityPolicyNotAllowed("the signing certificate is not a loader certificate (only loader "
                                            "certificates sign reports unless CA_SERVICE_INTEGRITY_POLICIES says "
                                            "otherwise)", policy=row.policy_name)
    elif allowed is not None and row.policy_name not in allowed:
        raise IntegrityPolicyNotAllowed("the signing certificate's policy is not an allowed loader policy",
                                        policy=row.policy_name)
    # (4)
    pure.verify_report_signature(report, signature, alg, cert.public_key())
    # (5) what the report lists against what the loader measured, where its policy asks
    _check_measured(svc, row, cert, report)

    with svc.db.transaction() as session:
        # Certificate row first, log lock second: the order revocation takes them in.
        status = session.execute(select(Certificate.status).where(Certificate.serial == row.serial)
                                 .with_for_update()).scalar_one()
        if status != "valid":
            raise IntegrityCertificateRevoked("the signing certificate is revoked", serial=row.serial)
        if row.cvm_serial is not None:  # revocation cascades; this also holds for rows revoked by hand
            cvm_status = session.execute(select(Certificate.status).where(Certificate.serial == row.cvm_serial)
                                         ).scalar_one_or_none()
            if cvm_status != "valid":
                raise IntegrityCertificateRevoked("the loader's CVM certificate is revoked", serial=row.serial,
                                                  cvm_serial=row.cvm_serial)
        log_index = lock_and_next_index(session)
        # Under the log lock, so a concurrent submission of the same report has committed or not started.
        existing = session.execute(select(IntegrityRow).where(IntegrityRow.sha256 == report.sha256)
                                   ).scalar_one_or_none()
        if existing is not None:
            return IntegrityRecord.of(existing)
        stored = IntegrityRow(id=str(uuid.uuid4()), sha256=report.sha256, report=report.raw, signature=signature,
                              alg=alg, serial=report.loader_certificate_serial, order_id=report.order_id,
                              issued_at=report.issued_at, received_at=now, log_index=log_index)
        session.add(stored)
        session.flush()
        leaf = tlog_leaves.integrity_report_leaf(
            at=now, report_sha256=report.sha256, loader_serial=report.loader_certificate_serial,
            order_id=report.order_id, components_sha256=report.components_sha256)
        if append_leaf(session, leaf) != log_index:  # the lock makes this impossible; never log if it happens
            raise LogInconsistent("log index moved while the sequencing lock was held")
        return IntegrityRecord.of(stored, created=True)


def _check_measured(svc: Services, row: Certificate, cert: x509.Certificate, report: pure.IntegrityReport) -> None:
    """Step (5): the roles the signing certificate's policy version lists under
    ``integrity_reports.measured`` must match what the loader measured, as its certificate's EAR says.

    Raises:
        IntegrityComponentNotMeasured (``integrity.component_not_measured``).
    """
    from ca_service.ca.profile import ear_from_certificate
    from ca_service.services.policies import get_version

    roles = get_version(svc, row.policy_name, row.policy_version).policy.integrity_reports.get("measured", [])
    if not roles:
        return
    try:
        ear = ear_from_certificate(cert)
    except (ValueError, x509.ExtensionNotFound):
        ear = {}
    pure.check_measured(report, pure.measured_components(ear), roles)


def get_report(svc: Services, report_id: str) -> IntegrityRecord:
    """The stored report with this id.

    Raises:
        IntegrityReportNotFound (``integrity.not_found``).
    """
    try:
        key = str(uuid.UUID(report_id))
    except ValueError:
        raise IntegrityReportNotFound("no integrity report with this id") from None
    with svc.db.read() as session:
        row = session.get(IntegrityRow, key)
        if row is None:
            raise IntegrityReportNotFound("no integrity report with this id")
        return IntegrityRecord.of(row)
