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


def ocsp_error(status: ocsp.OCSPResponseStatus) -> ocsp.OCSPResponse:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status)
