"""Loader certificates (DESIGN.md flow 2; docs/loader.md): the link to the CVM's certificate.

A certificate issued under a loader policy (one whose evidence section lists ``loader_digests``)
links to a CVM certificate of this CA for the same TEE instance (``evidence/instance.py``):

1. before the issuing transaction, :func:`prepare` finds the newest valid, unrevoked, unexpired
   CVM certificate (not itself a loader's) with the loader evidence's instance id, or refuses
   (``loader.cvm_certificate_missing``); the request may name one (``cvm_serial``);
2. in the issuing transaction, :meth:`LoaderContext.hold` locks that CVM row (``FOR UPDATE``, the
   lock revocation takes first) and checks it is still valid, so a loader certificate is never
   committed beside a revoked CVM certificate: a revocation either waits for the issuance and then
   revokes the new loader certificate too, or wins and the issuance is refused;
3. the EAR names the CVM certificate (``ca-service.cvm-serial``), the certificate carries it in an
   extension (``ca/loader_ext.py``), the row keeps it (``certificates.cvm_serial``), and the loader
   certificate never outlives the CVM's.

:func:`revoke_loaders_in` is the cascade: revoking a CVM certificate revokes its loaders' in the
same transaction, each with an audit record and a ``revocation`` log leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca_service.ca.loader_ext import CvmReference, encode_extensions
from ca_service.db.models import Certificate
from ca_service.errors import LoaderCvmCertificateMissing, LoaderInstanceUnknown
from ca_service.evidence.base import VerifiedEvidence
from ca_service.evidence.instance import InstanceId, instance_of_items
from ca_service.policy.model import Policy
from ca_service.services import audit
from ca_service.services.container import Services
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf


@dataclass(frozen=True)
class CvmLink:
    """The CVM certificate a loader certificate links to."""

    serial: str
    sha256: str
    not_after: datetime
    policy: str


@dataclass(frozen=True)
class LoaderContext:
    """What issuance adds for one request: the TEE instance, and the CVM link under a loader policy."""

    instance: InstanceId | None
    link: CvmLink | None = None

    @property
    def instance_id(self) -> str | None:
        return self.instance.digest if self.instance is not None else None

    def cap_lifetime(self, lifetime: timedelta, now: datetime) -> timedelta:
        """A loader certificate never outlives its CVM certificate."""
        if self.link is None:
            return lifetime
        return min(lifetime, self.link.not_after - now)

    def hold(self, session: Session, now: datetime) -> None:
        """In the issuing transaction, before the log lock: share-lock the CVM row and re-check it.

        Raises:
            LoaderCvmCertificateMissing (``loader.cvm_certificate_missing``): revoked or expired meanwhile.
        """
        if self.link is None:
            return
        # FOR SHARE: issuances of loaders of one CVM do not wait on each other; a revocation (FOR
        # UPDATE of the same row) waits for this transaction, then revokes what it committed
        row = session.execute(select(Certificate.status, Certificate.not_after)
                              .where(Certificate.serial == self.link.serial).with_for_update(read=True)).one_or_none()
        if row is None or row.status != "valid" or row.not_after <= now:
            raise LoaderCvmCertificateMissing(
                "the CVM certificate was revoked or expired while the loader's was issued", cvm_serial=self.link.serial)

    def ear_claims(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.instance is not None:
            out["ca-service.instance-id"] = self.instance.digest
        if self.link is not None:
            out["ca-service.cvm-serial"] = self.link.serial
            out["ca-service.cvm-certificate-sha256"] = self.link.sha256
        return out

    def extensions(self) -> list[x509.UnrecognizedExtension]:
        if self.link is None:
            return []
        return encode_extensions(CvmReference(self.link.serial, self.link.sha256))

    def row_fields(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "cvm_serial": self.link.serial if self.link else None}


def prepare(svc: Services, policy: Policy, verified: Sequence[VerifiedEvidence], now: datetime,
            *, cvm_serial: str | None = None) -> LoaderContext:
    """The instance of the verified evidence and, under a loader policy, the CVM certificate it links to.

    Raises:
        LoaderInstanceUnknown (``loader.instance_unknown``): a loader policy, but the evidence names
            no TEE instance.
        LoaderCvmCertificateMissing (``loader.cvm_certificate_missing``): no valid CVM certificate
            of this CA for that instance (or not the one the request named).
    """
    instance = instance_of_items(verified)
    if not policy.is_loader:
        return LoaderContext(instance)
    if instance is None:
        raise LoaderInstanceUnknown("a loader certificate needs evidence that names its TEE instance "
                                    "(TDX/sim: MRTD and RTMR0-2; SNP: measurement and chip id)")
    with svc.db.read() as session:
        q = (select(Certificate).where(Certificate.instance_id == instance.digest, Certificate.cvm_serial.is_(None),
                                       Certificate.status == "valid", Certificate.not_before <= now,
                                       Certificate.not_after > now))
        if cvm_serial is not None:
            from ca_service.services.issuance import normalise_serial

            q = q.where(Certificate.serial == normalise_serial(cvm_serial))
        row = session.execute(q.order_by(Certificate.issued_at.desc()).limit(1)).scalar_one_or_none()
        if row is None:
            raise LoaderCvmCertificateMissing(
                "no valid, unrevoked CVM certificate of this CA attests this TEE instance"
                + (f" as certificate {cvm_serial}" if cvm_serial else "")
                + "; the CVM gets its certificate first (flow 1)", instance=instance.describe())
        link = CvmLink(serial=row.serial, sha256=hashlib.sha256(row.der).hexdigest(), not_after=row.not_after,
                       policy=row.policy_name)
    return LoaderContext(instance, link)


def revoke_loaders_in(session: Session, cvm_serial: str, *, now: datetime, actor: str, reason: str) -> list[str]:
    """Revoke every valid loader certificate linked to ``cvm_serial``, in the caller's transaction
    (which holds the CVM row's lock); an audit record and a revocation leaf each. Returns their serials."""
    rows = session.execute(select(Certificate).where(Certificate.cvm_serial == cvm_serial,
                                                     Certificate.status == "valid")
                           .order_by(Certificate.issued_at).with_for_update()).scalars().all()
    serials = []
    for row in rows:
        row.status = "revoked"
        row.revoked_at = now
        row.revocation_reason = reason
        serials.append(row.serial)
        audit.record(session, at=now, actor=actor, action="certificate.revoke", target=row.serial,
                     detail={"reason": reason, "cvm_serial": cvm_serial,
                             "why": "its CVM certificate was revoked"})
    if serials:
        session.flush()
    for serial in serials:
        append_leaf(session, tlog_leaves.revocation_leaf(at=now, serial=serial, reason=reason))
    return serials


def loaders_of(svc: Services, cvm_serial: str) -> list[tuple[str, str]]:
    """(serial, status) of every loader certificate linked to ``cvm_serial``, oldest first."""
    with svc.db.read() as session:
        rows = session.execute(select(Certificate.serial, Certificate.status)
                               .where(Certificate.cvm_serial == cvm_serial).order_by(Certificate.issued_at)).all()
    return [(r.serial, r.status) for r in rows]
