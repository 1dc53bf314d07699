"""Small certificate facts every verifier needs (PURE)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes


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
