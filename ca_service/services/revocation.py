"""Revocation: revoke (audit + log leaf in one transaction), the CRL, OCSP answers."""

from __future__ import annotations

import threading
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import func, select

from ca_service.ca.ocsp import OcspMalformed, SingleAnswer, build_response, parse_request
from ca_service.ca.revocation import (
    REASONS,
    RevokedEntry,
    build_crl,
    ocsp_error,
)
from ca_service.db.lease import Fence
from ca_service.db.models import Certificate
from ca_service.errors import Conflict, NotFound, SchemaViolation
from ca_service.services import audit
from ca_service.services.container import Services
from ca_service.services.issuance import normalise_serial
from ca_service.services.loaders import revoke_loaders_in
from ca_service.tlog import leaves as tlog_leaves
from ca_service.tlog.sequencer import append_leaf

_crl_cache: dict[str, tuple[tuple[int, datetime | None], datetime, bytes]] = {}
_crl_lock = threading.Lock()


def revoke(svc: Services, serial: str, *, reason: str, actor: str,
           fence: Fence | None = None) -> Certificate:
    """Revoke one certificate: status, audit record and revocation leaf commit together. Revoking
    a CVM certificate revokes its loaders' certificates in the same transaction (services/loaders.py).
    ``fence`` (a single-replica lease's, db/lease.py) runs first in that transaction and raises to
    write nothing once the caller lost its lease.

    Raises:
        SchemaViolation (``request.schema``): unknown reason; NotFound; Conflict (already revoked).
    """
    if reason not in REASONS:
        raise SchemaViolation(f"reason must be one of {', '.join(REASONS)}", field="reason")
    now = svc.clock.now()
    with svc.db.transaction() as session:
        if fence is not None:
            fence(session)
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
        revoke_loaders_in(session, cert.serial, now=now, actor=actor, reason=reason)
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
    """An OCSP response (DER) for a DER OCSPRequest naming one or several certificates (RFC 6960
    section 4.1.1), one answer per certificate in request order; malformed requests get
    malformedRequest. A certificate of another issuer, or a serial this CA never issued, is unknown."""
    try:
        req = parse_request(request_der)
    except OcspMalformed:
        return ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(Encoding.DER)
    issuer = svc.keys.certificate("issuing")
    now: datetime = svc.clock.now()
    ours = {format(c.serial, "x") for c in req.cert_ids if c.serial > 0 and c.names(issuer)}
    rows = {}
    if ours:
        with svc.db.read() as session:
            rows = {r.serial: r for r in session.execute(
                select(Certificate.serial, Certificate.status, Certificate.revoked_at, Certificate.revocation_reason)
                .where(Certificate.serial.in_(sorted(ours)))).all()}
    answers = []
    for cid in req.cert_ids:
        row = rows.get(format(cid.serial, "x")) if cid.serial > 0 and cid.names(issuer) else None
        if row is None:
            answers.append(SingleAnswer(cid, "unknown"))
        elif row.status == "revoked":
            answers.append(SingleAnswer(cid, "revoked", row.revoked_at, row.revocation_reason))
        else:
            answers.append(SingleAnswer(cid, "good"))
    return build_response(answers, nonce_extension=req.nonce_extension,
                          issuer_key=svc.keys.private_key("issuing"), issuer=issuer, now=now)


def load_certificate(row: Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(row.der)
