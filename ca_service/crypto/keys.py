"""Key-type allowlist and CSR checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from ca_service.errors import CSRMalformed, CSRSignatureInvalid, KeyTypeNotAllowed

KEY_TYPES = ("ec-p256", "ec-p384", "ed25519", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPES = ("ec-p256", "ec-p384", "ed25519")
MAX_CSR_BYTES = 16 * 1024


def key_type(public_key: object) -> str:
    """Name the key type, or raise KeyTypeNotAllowed (``csr.key_type_not_allowed``)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return "ec-p256"
        if isinstance(public_key.curve, ec.SECP384R1):
            return "ec-p384"
        raise KeyTypeNotAllowed(f"EC curve {public_key.curve.name} is not allowed")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size in (3072, 4096):
            return f"rsa-{public_key.key_size}"
        raise KeyTypeNotAllowed(f"RSA-{public_key.key_size} is not allowed (3072 or 4096 only)")
    raise KeyTypeNotAllowed(f"key type {type(public_key).__name__} is not allowed")


def spki_der(public_key: CertificateIssuerPublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class ParsedCSR:
    """A CSR whose self-signature verified and whose key type is allowed."""

    csr: x509.CertificateSigningRequest
    key_type: str
    spki_der: bytes

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki_der).hexdigest()

    def requested_dns_names(self) -> tuple[str, ...]:
        try:
            ext = self.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return ()
        return tuple(ext.value.get_values_for_type(x509.DNSName))

    def requested_other_names(self) -> int:
        try:
            ext = self.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return 0
        return len(list(ext.value)) - len(ext.value.get_values_for_type(x509.DNSName))


def parse_csr(pem: str | bytes, allowed: tuple[str, ...] = DEFAULT_KEY_TYPES) -> ParsedCSR:
    """Parse a PEM CSR, check its self-signature and key type.

    Raises:
        CSRMalformed (``csr.malformed``), CSRSignatureInvalid (``csr.signature_invalid``),
        KeyTypeNotAllowed (``csr.key_type_not_allowed``).
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_CSR_BYTES:
        raise CSRMalformed("CSR is larger than 16 KiB")
    try:
        csr = x509.load_pem_x509_csr(data)
        public_key = csr.public_key()
        csr.extensions  # noqa: B018 - force parsing of the extension list
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CSRMalformed("CSR is not a PEM PKCS#10 request that can be parsed") from exc
    except Exception as exc:  # pyca raises assorted errors on hostile DER; this is the wrapper
        raise CSRMalformed("CSR cannot be parsed") from exc
    kt = key_type(public_key)
    if kt not in allowed:
        raise KeyTypeNotAllowed(f"key type {kt} is not allowed here", key_type=kt)
    if not csr.is_signature_valid:
        raise CSRSignatureInvalid("the CSR's self-signature does not verify with its own key")
    return ParsedCSR(csr=csr, key_type=kt, spki_der=spki_der(public_key))  # type: ignore[arg-type]
