"""Revocation: revoke (audit + log leaf in one transaction), the CRL, OCSP answers."""

from __future__ import annotations

import threading
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca_service.ca.revocation import (
    REASONS,
    RevokedEntry,
    build_crl,
    build_ocsp_response,
    issued_by,
    ocsp_error,
)
from ca_service.db.models import Certificate
from ca_service.errors import Conflict, NotFound, SchemaViolation
from ca_service.services import audit
from ca_service.services.container import Services
from ca_service.services.issuance import normalise_serial
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf

_crl_cache: dict[str, tuple[tuple[int, datetime | None], datetime, bytes]] = {}
_crl_lock = threading.Lock()


def revoke(svc: Services, serial: str, *, reason: str, actor: str) -> Certificate:
    """Revoke one certificate: status, audit record and revocation leaf commit together.

    Raises:
        SchemaViolation (``request.schema``): unknown reason; NotFound; Conflict (already revoked).
    """
    if reason not in REASONS:
        raise SchemaViolation(f"reason must be one of {', '.join(REASONS)}", field="reason")
    now = svc.clock.now()
    with svc.db.transaction() as session:
        cert = session.execute(select(Certificate).where(Certificate.serial == normalise_serial(serial))
                               .with_for_update()).scalar_one_or_none()
        if cert is None:
            raise NotFound("no certificate with this serial")
        if cert.status == "revoked":
            raise Conflict("certificate is already revoked", revoked_at=cert.revoked_at.isoformat()
                           if cert.revoked_at else None)
        cert.status = "revoked"
        cert.revoked_at = now
        cert.revocation_reason = reason
        audit.record(session, at=now, actor=actor, action="certificate.revoke", target=cert.serial,
                     detail={"reason": reason})
        session.flush()
        append_leaf(session, tlog_leaves.revocation_leaf(at=now, serial=cert.serial, reason=reason))
    return cert


def current_crl(svc: Services) -> bytes:
    """DER CRL of every revoked, unexpired certificate; regenerated when a revocation happens or
    half its lifetime has passed, so each process serves a fresh, signed CRL."""
    now = svc.clock.now()
    with svc.db.read() as session:
        state = session.execute(select(func.count(), func.max(Certificate.revoked_at))
                                .where(Certificate.status == "revoked")).one()
    key = (int(state[0]), state[1])
    with _crl_lock:
        hit = _crl_cache.get(svc.settings.database_url)
    if hit is not None and hit[0] == key and (now - hit[1]).total_seconds() < 1800:
        return hit[2]
    with svc.db.read() as session:
        rows = session.execute(select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason)
                               .where(Certificate.status == "revoked", Certificate.not_after > now)
                               .order_by(Certificate.revoked_at)).all()
    entries = [RevokedEntry(int(r.serial, 16), r.revoked_at, r.revocation_reason) for r in rows]
    crl = build_crl(entries, issuer_key=svc.keys.private_key("issuing"), issuer=svc.keys.certificate("issuing"),
                    now=now, number=int(now.timestamp() * 1000))
    der = crl.public_bytes(Encoding.DER)
    with _crl_lock:
        _crl_cache[svc.settings.database_url] = (key, now, der)
    return der


def ocsp_answer(svc: Services, request_der: bytes) -> bytes:
    """An OCSP response (DER) for a DER OCSPRequest; malformed requests get malformedRequest."""
    try:
        req = ocsp.load_der_ocsp_request(request_der)
    except ValueError:
        return ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(Encoding.DER)
    issuer = svc.keys.certificate("issuing")
    now: datetime = svc.clock.now()
    status, revoked_at, reason = "unknown", None, None
    if issued_by(req, issuer):
        with svc.db.read() as session:
            row = session.execute(select(Certificate.status, Certificate.revoked_at, Certificate.revocation_reason)
                                  .where(Certificate.serial == format(req.serial_number, "x"))).one_or_none()
        if row is not None:
            status = "revoked" if row.status == "revoked" else "good"
            revoked_at, reason = row.revoked_at, row.revocation_reason
    resp = build_ocsp_response(req, status=status, revoked_at=revoked_at, reason=reason,
                               issuer_key=svc.keys.private_key("issuing"), issuer=issuer, now=now)
    return resp.public_bytes(Encoding.DER)


def load_certificate(row: Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(row.der)
