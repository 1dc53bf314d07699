"""CRL (RFC 5280 section 5) and OCSP responses (RFC 6960), signed by the issuing CA (PURE)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from ca_service.ca.profile import _sign_hash

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
# The root is offline: its ARL is signed at `init` and by `ca-service root sign-arl`, rarely, so it
# is valid for long (CA/B Forum BR 4.9.7 allows up to 12 months for CA certificates' CRLs).
ARL_LIFETIME = timedelta(days=365)
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


def _add_entries(builder: x509.CertificateRevocationListBuilder,
                 entries: Iterable[RevokedEntry]) -> x509.CertificateRevocationListBuilder:
    for e in entries:
        rc = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        reason = _reason(e.reason)
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            rc = rc.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(rc.build())
    return builder


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
    builder = _add_entries(builder, entries)
    return builder.sign(issuer_key, hashes.SHA256())


def build_arl(entries: Iterable[RevokedEntry], *, root_key: Any, root: x509.Certificate, now: datetime,
              number: int, lifetime: timedelta = ARL_LIFETIME) -> x509.CertificateRevocationList:
    """The root's ARL (RFC 5280 section 5.2.5): a CRL of revoked CA certificates, published where the issuing
    CA's CDP says, its issuing distribution point saying onlyContainsCACerts.

    The IDP names no distribution point: `openssl verify -crl_check_all` also checks the root
    itself against this ARL, and a root has no CDP, so a named IDP would be out of its scope
    (X509_V_ERR_DIFFERENT_CRL_SCOPE)."""
    if not timedelta(0) < lifetime <= timedelta(days=3660):
        raise ValueError("an ARL lifetime is positive and at most ten years")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.subject)
        .last_update(now)
        .next_update(min(now + lifetime, root.not_valid_after_utc))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .add_extension(x509.IssuingDistributionPoint(
            full_name=None, relative_name=None, only_contains_user_certs=False,
            only_contains_ca_certs=True, only_some_reasons=None, indirect_crl=False,
            only_contains_attribute_certs=False), critical=True)
    )
    builder = _add_entries(builder, entries)
    return builder.sign(root_key, _sign_hash(root_key))


def ocsp_error(status: ocsp.OCSPResponseStatus) -> ocsp.OCSPResponse:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status)
