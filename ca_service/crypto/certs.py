"""Small certificate facts every verifier needs (PURE)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

# What pyca/cryptography raises for malformed certificate or CRL content besides ValueError. It parses
# most fields lazily, so without :func:`parse_fully` these surface wherever a verifier first reads one.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError,  # TypeError: a name attribute of the wrong ASN.1 type (pyca x509/name.py)
    UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
)


def der_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex: the form of every pin and cache key."""
    return cert.fingerprint(hashes.SHA256()).hex()


def is_ca(cert: x509.Certificate) -> bool:
    """A usable CA: basicConstraints cA and keyUsage keyCertSign, both present and parseable."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except Exception:  # missing, duplicate or unparsable extension: not a usable CA
        return False
    return bool(bc.ca and ku.key_cert_sign)


class FullyRead(NamedTuple):
    """The lazily parsed fields of a certificate, as :func:`read_certificate` read them."""

    subject: x509.Name
    issuer: x509.Name
    not_before: datetime
    not_after: datetime
    serial: int
    public_key: CertificatePublicKeyTypes
    extensions: x509.Extensions


def read_certificate(cert: x509.Certificate) -> FullyRead:
    """Read every lazily parsed field of a certificate once, at the edge, and keep what was read
    (pyca builds a new Name or key on every access).

    Raises:
        ValueError: a field does not parse (whatever pyca raised is chained as the cause).
    """
    try:
        _ = (cert.version, cert.signature_hash_algorithm)
        return FullyRead(cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc,
                         cert.serial_number, cert.public_key(), cert.extensions)
    except PARSE_ERRORS as exc:
        raise ValueError(f"malformed {type(cert).__name__}: {type(exc).__name__}") from exc


def parse_fully(obj: x509.Certificate | x509.CertificateRevocationList) -> None:
    """Read every lazily parsed field of a certificate or CRL once, at the edge.

    Raises:
        ValueError: a field does not parse (whatever pyca raised is chained as the cause).
    """
    if isinstance(obj, x509.Certificate):
        read_certificate(obj)
        return
    try:
        _ = (obj.issuer, obj.last_update_utc, obj.next_update_utc, obj.extensions, obj.signature_hash_algorithm)
        for revoked in obj:
            _ = (revoked.serial_number, revoked.revocation_date_utc, revoked.extensions)
    except PARSE_ERRORS as exc:
        raise ValueError(f"malformed {type(obj).__name__}: {type(exc).__name__}") from exc
