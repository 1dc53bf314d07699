"""Verify an AWS Nitro Enclaves attestation document.

Steps (AWS "Nitro Enclaves attestation process", aws-nitro-enclaves-nsm-api
docs/attestation_process.md section 3.2 "Attestation document validation"), each raising its own
:class:`~ca_service.errors.EvidenceError` leaf:

1. Syntax: a COSE_Sign1 (RFC 9052 section 4.2, tagged or not), ES384 in the protected header,
   a 96-byte signature; the payload is the attestation document map (``parse.py``).
2. Signature: ECDSA P-384/SHA-384 (RFC 9053 section 2.1, r || s) by the key of ``certificate``
   over Sig_structure ``["Signature1", protected, b"", payload]`` (RFC 9052 section 4.4). Checked
   before the chain: one verification settles every byte of the payload, cabundle included.
3. Chain: ``cabundle[0]`` pinned (AWS Nitro Enclaves Root-G1) -> ``cabundle[1:]`` ->
   ``certificate``, every certificate valid at ``at`` (``chain.py``, cached).
4. The document's ``timestamp`` falls inside the attestation certificate's window (the NSM signs
   with a certificate it has just been issued, ~3 h long).
5. Vendor baseline: PCR0, PCR1 and PCR2 not all zero (all zero is how Nitro marks an enclave started
   in debug mode, whose memory the parent instance can read).

Report data: ``user_data``. The ca-service binding (docs/adr/0001-binding.md) is 64 bytes
``SHA-512(label || nonce || SHA-256(SPKI))``; it binds the challenge *and* the key, so it is not a
bare nonce, and the NSM's ``user_data`` field (up to 512 bytes, signed, free for the application)
is where an agent puts it. ``nonce`` and ``public_key`` are reported as claims for policies and
relying parties that use them; an absent ``user_data`` gives empty report data, which no binding
or nonce check accepts. Revocation: AWS publishes CRLs for the intermediates online only; none are
checked offline (recorded in ``checks``).

Collateral: none is fetched (``needs.py``): the root is pinned and the document carries its chain.
Expiries (``expires_at``, what a certificate issued on this evidence never outlives):
``nitro.certificate`` = the attestation certificate's notAfter (the NSM's, hours long), and
``nitro.cabundle`` = the earliest notAfter in the cabundle (root and intermediates).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service.clock import require_aware
from ca_service.errors import CertificateExpired, DebugEnabled, EvidenceMalformed, SignatureInvalid
from ca_service.evidence.base import Check, VerifiedEvidence, sha256_hex
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nitro.chain import load_der, verify_chain
from ca_service.evidence.nitro.parse import AttestationDocument, CoseSign1, parse_evidence
from ca_service.evidence.trust import TrustRoots

KIND = "nitro"


def _verify_signature(cose: CoseSign1, key: ec.EllipticCurvePublicKey) -> None:
    r = int.from_bytes(cose.signature[:48], "big")
    s = int.from_bytes(cose.signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), cose.sig_structure(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureInvalid("COSE_Sign1 signature does not verify with the attestation certificate") from exc


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _claims(doc: AttestationDocument, cose: CoseSign1) -> dict[str, Any]:
    ts = datetime.fromtimestamp(doc.timestamp_ms / 1000, UTC)
    return {
        "module_id": doc.module_id,
        "digest": doc.digest,
        "timestamp": ts.isoformat().replace("+00:00", "Z"),
        "timestamp_ms": doc.timestamp_ms,
        "pcrs": {str(i): v.hex() for i, v in doc.pcrs},
        "public_key": _hex(doc.public_key),
        "user_data": _hex(doc.user_data),
        "nonce": _hex(doc.nonce),
        "debug": doc.debug,
        "cose_tagged": cose.tagged,
    }


def verify_genuine(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Steps 1-4: everything cryptographic, without the vendor baseline (a debug enclave passes
    with a failed ``nitro.debug`` check). For diagnostics and tests; use :func:`verify_nitro`.

    ``collateral`` is not used: the document carries its chain, and only the pin decides the root.

    Raises:
        EvidenceMalformed (``evidence.malformed``): not a COSE_Sign1 attestation document, or a
            certificate that does not parse.
        EvidenceUnsupported (``evidence.unsupported``): another COSE algorithm or PCR digest.
        SignatureInvalid (``evidence.signature_invalid``): the COSE signature does not verify.
        RootUntrusted, ChainInvalid, CertificateExpired: see ``chain.verify_chain``.
    """
    del collateral
    at = require_aware(at)
    checks: list[Check] = []

    # 1. Syntax.
    parsed = parse_evidence(evidence)
    cose, doc = parsed.cose, parsed.document
    checks.append(Check("nitro.cose_parsed", True,
                        f"COSE_Sign1 ({'tag 18' if cose.tagged else 'untagged'}), ES384, document of {doc.module_id}"))

    # 2. Signature by the attestation certificate's key.
    leaf = load_der(doc.certificate, "attestation certificate")
    try:
        key = leaf.public_key()
    except Exception as exc:  # ValueError (bad point), UnsupportedAlgorithm: one family here
        raise EvidenceMalformed("attestation certificate key cannot be loaded") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise SignatureInvalid("attestation certificate key is not ECDSA P-384, as ES384 requires")
    _verify_signature(cose, key)
    checks.append(Check("nitro.signature", True, "ES384 over Sig_structure by the attestation certificate"))

    # 3. Chain to the pinned root.
    chain = verify_chain(leaf, doc.cabundle, roots.nitro, at)
    checks.append(Check("nitro.root_pinned", True, f"cabundle[0] SHA-256 {chain.fingerprints[0]}"))
    checks.append(Check("nitro.chain", True, f"{len(chain.certificates)} certificates, every link ECDSA, "
                                             f"valid at {at.isoformat()}"))
    checks.append(Check.skip("nitro.revocation", "not checked: AWS Nitro CRLs are online only"))

    # 4. The signed timestamp lies in the attestation certificate's window.
    ts = datetime.fromtimestamp(doc.timestamp_ms / 1000, UTC)
    if not leaf.not_valid_before_utc <= ts <= leaf.not_valid_after_utc:
        raise CertificateExpired(f"document timestamp {ts.isoformat()} is outside the attestation certificate")
    checks.append(Check("nitro.timestamp", True, f"{ts.isoformat()} inside the attestation certificate window"))

    # 5. Recorded here, enforced by verify_nitro.
    checks.append(Check("nitro.debug", not doc.debug, "PCR0..2 all zero (debug enclave)" if doc.debug
                        else "PCR0..2 not all zero"))

    return VerifiedEvidence(
        kind=KIND,
        report_data=doc.user_data or b"",
        claims=_claims(doc, cose),
        checks=tuple(checks),
        evidence_sha256=sha256_hex(evidence),
        tcb_status=None,
        collateral_sha256={f"cert{i}": fp for i, fp in enumerate(chain.fingerprints)},
        expires_at={"nitro.certificate": chain.certificates[-1].not_valid_after_utc,
                    "nitro.cabundle": min(c.not_valid_after_utc for c in chain.certificates[:-1])},
    )


def verify_nitro(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify a Nitro attestation document as of ``at``: :func:`verify_genuine`, then the vendor
    baseline (not a debug enclave).

    Raises:
        DebugEnabled (``evidence.debug_enabled``): PCR0, PCR1 and PCR2 are all zero.
        EvidenceError: every leaf :func:`verify_genuine` raises.
    """
    result = verify_genuine(evidence, collateral, at, roots)
    if result.claims["debug"]:
        raise DebugEnabled("PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode")
    return result
