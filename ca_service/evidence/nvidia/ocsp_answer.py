"""One NVIDIA OCSP answer, checked on its own before the CA keeps it as collateral (PURE).

The verifier (``ocsp.py``) judges the answers it is given against the device chain of the evidence,
as of the verification time. A CA that keeps answers in its cache checks each one first, as it checks
every vendor response before it is stored (``ca_service/collateral/verify.py``): what does not depend
on time must already hold. For one certificate, named by its CertID (RFC 6960 section 4.1.1):

1. The issuer chain (DER, root first, down to the certificate's issuer) chains from a pinned NVIDIA
   Device Identity CA, each certificate signed by the one before, every issuer a CA. The pin decides
   the root; a root carried anywhere else proves nothing.
2. The CertID's issuerNameHash and issuerKeyHash are those of that issuer (SHA-384, as NVIDIA's
   verifiers ask; a response may answer with SHA-1 or another SHA-2: it is matched by its own).
3. The response is ``successful``, holds a single response for that certificate, signed by the issuer
   or a responder it designated with id-kp-OCSPSigning, valid at ``thisUpdate`` (RFC 6960 section
   4.2.2.2), and has a ``nextUpdate``.
4. Its status is ``good`` or ``revoked`` (a revocation is worth keeping: the verifier refuses by it);
   ``unknown`` is no answer to keep.

The validity window (``thisUpdate..nextUpdate``) is the cache's issue date and next update; whether
it covers a verification time is the verifier's question, every time the answer is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from ca_service.crypto.certs import is_ca
from ca_service.errors import ChainInvalid, CollateralInvalid, CollateralMismatch, RootUntrusted
from ca_service.evidence.nvidia.chain import links
from ca_service.evidence.nvidia.ocsp import signed_by_issuer_or_delegate
from ca_service.evidence.trust import is_pinned

_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


@dataclass(frozen=True)
class OcspAnswer:
    """A checked answer: its window and the certificate status it gives."""

    this_update: datetime
    next_update: datetime
    produced_at: datetime
    status: str  # "good" | "revoked"


def _bit_string_contents(spki_der: bytes) -> bytes:
    """The subjectPublicKey bits of a DER SubjectPublicKeyInfo (RFC 5280 4.1: SEQUENCE { AlgorithmIdentifier,
    BIT STRING }), without the unused-bits octet: what issuerKeyHash hashes (RFC 6960 4.1.1)."""

    def tlv(pos: int) -> tuple[int, int, int]:
        tag, first = spki_der[pos], spki_der[pos + 1]
        pos += 2
        if first & 0x80:
            n = first & 0x7F
            length = int.from_bytes(spki_der[pos:pos + n], "big")
            pos += n
        else:
            length = first
        return tag, pos, pos + length

    _, start, _ = tlv(0)
    _, _, alg_end = tlv(start)
    tag, bits, end = tlv(alg_end)
    if tag != 0x03:
        raise ValueError("SubjectPublicKeyInfo holds no BIT STRING")
    return spki_der[bits + 1:end]


def cert_id(issuer: x509.Certificate, algorithm: str = "sha384") -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) for certificates ``issuer`` issued, with ``algorithm``."""
    h = _HASHES[algorithm]
    spki = issuer.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return h(issuer.subject.public_bytes()).digest(), h(_bit_string_contents(spki)).digest()


def verify_issuer_chain(chain_der: Sequence[bytes], pins: frozenset[str]) -> x509.Certificate:
    """Step 1: the issuer at the end of ``chain_der`` (root first), verified to a pinned root.

    Raises:
        CollateralInvalid: no chain, or a certificate that does not parse.
        RootUntrusted (``evidence.root_untrusted``): the first certificate is not pinned.
        ChainInvalid (``evidence.chain_invalid``): a link that does not verify, or an issuer that is no CA.
    """
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain_der]
    except (ValueError, x509.InvalidVersion) as exc:
        raise CollateralInvalid("the OCSP answer's issuer chain does not parse") from exc
    if not certs:
        raise CollateralInvalid("an OCSP answer is kept only with the issuer chain it was asked for")
    if not is_pinned(certs[0], pins):
        raise RootUntrusted("the OCSP answer's issuer chain does not start at a pinned NVIDIA root")
    for parent, child in zip(certs, certs[1:], strict=False):
        if not is_ca(parent) or not links(child, parent):
            raise ChainInvalid("the OCSP answer's issuer chain does not verify link by link")
    if not is_ca(certs[-1]):
        raise ChainInvalid("the OCSP answer's issuer is no CA")
    return certs[-1]


def check_answer(der: bytes, issuer: x509.Certificate, name_hash: bytes, key_hash: bytes,
                 serial: int) -> OcspAnswer:
    """Steps 2-4 for the certificate ``serial`` issued by ``issuer`` (verified by
    :func:`verify_issuer_chain`), named by its SHA-384 CertID hashes.

    Raises:
        CollateralMismatch (``evidence.collateral_mismatch``): the CertID is not the issuer's, or the
            response does not answer for this certificate.
        CollateralInvalid (``evidence.collateral_invalid``): not a successful, correctly signed answer
            with a nextUpdate and a good or revoked status.
    """
    if (name_hash, key_hash) != cert_id(issuer):
        raise CollateralMismatch("the CertID does not name the issuer the answer is checked with")
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise CollateralInvalid("NVIDIA OCSP response does not parse") from exc
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise CollateralInvalid(f"NVIDIA OCSP response is {resp.response_status.name}, not successful")
    single = None
    try:
        for s in resp.responses:
            try:
                alg = s.hash_algorithm.name
            except UnsupportedAlgorithm:
                continue
            if alg in _HASHES and (s.issuer_name_hash, s.issuer_key_hash) == cert_id(issuer, alg) \
                    and s.serial_number == serial:
                single = s
                break
        if single is None:
            raise CollateralMismatch(f"NVIDIA OCSP response does not answer for serial {serial:x}")
        this_update, next_update, status = single.this_update_utc, single.next_update_utc, single.certificate_status
        produced_at = resp.produced_at_utc
    except CollateralMismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - pyca parses lazily: a mangled field surfaces on access, any type
        raise CollateralInvalid("NVIDIA OCSP response has a field that cannot be read") from exc
    if not signed_by_issuer_or_delegate(resp, issuer, this_update):
        raise CollateralInvalid("NVIDIA OCSP response is not signed by the issuer or a responder it designated "
                                "(RFC 6960 4.2.2.2)")
    if next_update is None:
        raise CollateralInvalid("NVIDIA OCSP response has no nextUpdate")
    if status is ocsp.OCSPCertStatus.UNKNOWN:
        raise CollateralInvalid("NVIDIA OCSP response says unknown")
    return OcspAnswer(this_update, next_update, produced_at,
                      "good" if status is ocsp.OCSPCertStatus.GOOD else "revoked")
