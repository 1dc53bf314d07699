"""CRL (RFC 5280 section 5) and OCSP responses (RFC 6960), signed by the issuing CA (PURE)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

# RFC 5280 CRLReason names accepted from administrators (certificateHold is not offered: a
# revocation here is final).
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}
CRL_LIFETIME = timedelta(hours=1)
OCSP_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: str | None


def _reason(name: str | None) -> x509.ReasonFlags | None:
    if name is None:
        return None
    return REASONS.get(name, x509.ReasonFlags.unspecified)


def build_crl(entries: Iterable[RevokedEntry], *, issuer_key: Any, issuer: x509.Certificate, now: datetime,
              number: int) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for e in entries:
        rc = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        reason = _reason(e.reason)
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            rc = rc.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(rc.build())
    return builder.sign(issuer_key, hashes.SHA256())


def build_ocsp_response(request: ocsp.OCSPRequest, *, status: str, revoked_at: datetime | None,
                        reason: str | None, issuer_key: Any, issuer: x509.Certificate,
                        now: datetime) -> ocsp.OCSPResponse:
    """A signed response for the requested serial (good, revoked or unknown); the CA answers as its
    own responder (RFC 6960 section 4.2.2.2, the CA itself)."""
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number, algorithm=request.hash_algorithm, cert_status=cert_status,
        this_update=now, next_update=now + OCSP_LIFETIME,
        revocation_time=revoked_at if status == "revoked" else None,
        revocation_reason=_reason(reason) if status == "revoked" and reason not in (None, "unspecified") else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
        builder = builder.add_extension(nonce.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(issuer_key, hashes.SHA256())


def issued_by(request: ocsp.OCSPRequest, issuer: x509.Certificate) -> bool:
    """Whether the request's issuer name/key hashes name ``issuer`` (RFC 6960 CertID)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    algo = request.hash_algorithm
    h1 = hashes.Hash(algo)
    h1.update(issuer.subject.public_bytes())
    spki = issuer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    # the key hash is over the BIT STRING value of subjectPublicKey (without tag/length/unused bits)
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = issuer.public_key()
    raw = (pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
           if isinstance(pub, ec.EllipticCurvePublicKey) else spki)
    h2 = hashes.Hash(algo)
    h2.update(raw)
    return h1.finalize() == request.issuer_name_hash and h2.finalize() == request.issuer_key_hash


def ocsp_error(status: ocsp.OCSPResponseStatus) -> ocsp.OCSPResponse:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status)
