"""The binding of evidence to a challenge and a key (docs/adr/0001-binding.md).

report_data = SHA-512("ca-service/binding/v1" || nonce || SHA-256(SubjectPublicKeyInfo DER))

64 bytes fill a TDX/SNP report-data field; a 32-byte field (a GPU nonce) carries the first 32.
"""

from __future__ import annotations

import hashlib
import hmac

from ca_service.errors import BindingMismatch

BINDING_LABEL = b"ca-service/binding/v1"


def binding_value(nonce: bytes, spki_der: bytes) -> bytes:
    """The 64-byte value the evidence must carry for this nonce and key."""
    return hashlib.sha512(BINDING_LABEL + nonce + hashlib.sha256(spki_der).digest()).digest()


def check_binding(report_data: bytes, nonce: bytes, spki_der: bytes) -> None:
    """Check that ``report_data`` binds ``nonce`` and the key ``spki_der``.

    Raises:
        BindingMismatch (``binding.mismatch``): report data differs from the expected value.
    """
    expected = binding_value(nonce, spki_der)
    width = min(len(report_data), 64)
    if width < 32 or not hmac.compare_digest(report_data[:width], expected[:width]):
        raise BindingMismatch("report data does not equal SHA-512(label || nonce || SHA-256(SPKI))")
