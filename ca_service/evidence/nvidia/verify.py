"""Verify an NVIDIA Hopper GPU attestation report, with its device chain and (optionally) RIMs.

Steps, each raising its own :class:`~ca_service.errors.EvidenceError` leaf:

1. Parse the SPDM 1.1 GET_MEASUREMENTS request || MEASUREMENTS response (``parse.py``).
2. Device chain: the collateral certificates must chain from the pinned NVIDIA Device Identity CA to
   the attestation key certificate (GSP FMC), every certificate valid at ``at`` (``chain.py``).
3. Signature: ECDSA P-384/SHA-384 by the attestation key over request || response without the
   signature (DSP0274 1.1 section 10.11.2; nvtrust ``verify_measurement_signature``), r || s.
4. Nonce: the 32-byte requester nonce is the report data (what the ca-service binding and
   ``verify(..., nonce=...)`` compare); the responder nonce is a claim.
5. Revocation: NVIDIA's OCSP responder is online only; not checked offline (recorded in ``checks``).
6. RIMs, when given (``collateral.xml_documents``): each verified (``rim.py``) and assigned by its
   ``colloquialVersion`` to the report's driver version or VBIOS version; both are then required,
   and they must not both claim an index. Every active golden measurement is compared with the
   report's block (RIM index i = SPDM block i + 1): equal size and one of the alternatives.
   Indexes that match no golden value go to ``claims.rim.mismatched_indexes``; the policy rule
   ``measurements: match_rim`` refuses them. The comparison is a claim, not a refusal here, so a
   relying party sees which measurements differ.

``debug`` is ``None``: a Hopper MEASUREMENTS response carries no debug or devtools flag a verifier
can read, so a policy asking ``debug: false`` fails closed for this type until one is defined.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca_service.clock import require_aware
from ca_service.errors import (
    CertificateExpired,
    CollateralInvalid,
    CollateralMismatch,
    CollateralMissing,
    NvidiaRimMismatch,
    SignatureInvalid,
)
from ca_service.evidence.base import Check, VerifiedEvidence, sha256_hex
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nvidia.chain import Chain, build_chain
from ca_service.evidence.nvidia.parse import SIGNATURE_LEN, AttestationReport, parse_report
from ca_service.evidence.nvidia.rim import Rim, verify_rim
from ca_service.evidence.trust import TrustRoots

KIND = "nvidia-gpu"


def _verify_signature(report: AttestationReport, chain: Chain) -> None:
    key = chain.leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise SignatureInvalid("attestation key certificate does not hold a P-384 key")
    half = SIGNATURE_LEN // 2
    r = int.from_bytes(report.signature[:half], "big")
    s = int.from_bytes(report.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureInvalid("MEASUREMENTS signature does not verify with the attestation key") from exc


def _assign_rims(report: AttestationReport, rims: list[Rim]) -> tuple[Rim, Rim]:
    driver = [r for r in rims if r.version.lower() == report.driver_version.lower()]
    vbios = [r for r in rims if r.version.lower() == report.vbios_version.lower()]
    for r in rims:
        if r not in driver and r not in vbios:
            raise CollateralMismatch(
                f"RIM for version {r.version!r} is for neither driver {report.driver_version!r} "
                f"nor VBIOS {report.vbios_version!r}"
            )
    if len(driver) > 1 or len(vbios) > 1:
        raise CollateralInvalid("more than one driver RIM or VBIOS RIM given")
    if not driver or not vbios:
        raise CollateralMissing(f"RIMs given, but no {'driver' if not driver else 'VBIOS'} RIM for this report")
    return driver[0], vbios[0]


def compare(report: AttestationReport, driver: Rim, vbios: Rim) -> dict[str, Any]:
    """Step 6's comparison (RIM numbering of indexes).

    Raises:
        CollateralInvalid: the driver and VBIOS RIMs both claim an index.
    """
    golden = {}
    for rim in (driver, vbios):
        for g in rim.measurements:
            if not g.active:
                continue
            if g.index in golden:
                raise CollateralInvalid(f"driver and VBIOS RIMs both hold an active measurement {g.index}")
            golden[g.index] = g
    runtime = {b.index - 1: b.value for b in report.blocks}
    mismatched = sorted(i for i, g in golden.items() if i not in runtime or runtime[i] not in g.values)
    return {
        "driver_rim": driver.to_json(),
        "vbios_rim": vbios.to_json(),
        "measurements_match": not mismatched,
        "mismatched_indexes": mismatched,
        "matched_count": len(golden) - len(mismatched),
        "unchecked_indexes": sorted(set(runtime) - set(golden)),
    }


def verify_nvidia(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify a Hopper attestation report as of ``at`` (steps 1-6 above).

    ``collateral``: the device certificate chain (PEM or DER, any order) and, optionally, the
    driver and VBIOS RIMs (SWID tag XML).

    Raises:
        EvidenceMalformed / EvidenceUnsupported (``evidence.malformed`` / ``evidence.unsupported``):
            not a signed SPDM 1.1 GET_MEASUREMENTS exchange.
        CollateralMissing (``evidence.collateral_missing``): no device certificates; RIMs given but
            the driver or the VBIOS one missing.
        RootUntrusted, ChainInvalid, CertificateExpired: the device chain.
        SignatureInvalid (``evidence.signature_invalid``): the report signature does not verify.
        CollateralInvalid, CollateralExpired, CollateralMismatch: a RIM's signature, signer window,
            or version.
    """
    at = require_aware(at)
    checks: list[Check] = []

    # 1. Parse.
    report = parse_report(evidence)
    checks.append(Check("nvidia.report_parsed", True,
                        f"SPDM 1.1 GET_MEASUREMENTS, {len(report.blocks)} measurement blocks"))

    # 2. Device chain.
    if not collateral.certificates:
        raise CollateralMissing("no device certificate chain given (nvtrust gpuAkCertChain)")
    chain = build_chain(collateral.certificates, roots.nvidia_device, at, "device", CertificateExpired)
    checks.append(Check("nvidia.root_pinned", True, f"NVIDIA Device Identity CA SHA-256 {chain.fingerprints[0]}"))
    checks.append(Check("nvidia.chain", True, f"{len(chain.certificates)} certificates to "
                                              f"{chain.leaf.subject.rfc4514_string()}, valid at {at.isoformat()}"))

    # 3. Signature.
    _verify_signature(report, chain)
    checks.append(Check("nvidia.signature", True,
                        "ECDSA P-384/SHA-384 over request || response by the attestation key"))

    # 4. Nonce: reported; compared by the caller (binding or --nonce).
    checks.append(Check("nvidia.nonce", True, f"requester nonce {report.requester_nonce.hex()} is the report data"))

    # 5. Revocation.
    checks.append(Check.skip("nvidia.ocsp", "no OCSP response given: revocation of the device chain not checked"))

    claims: dict[str, Any] = {
        "nonce": report.requester_nonce.hex(),
        "responder_nonce": report.responder_nonce.hex(),
        "driver_version": report.driver_version,
        "vbios_version": report.vbios_version,
        "vbios_version_raw": (report.opaque_value("vbios_version") or b"").hex(),
        "spdm_version": f"{report.spdm_version >> 4}.{report.spdm_version & 0xF}",
        "slot_id": report.slot_id,
        "measurements": report.measurement_list(),
        "n_measurement_blocks": len(report.blocks),
        "opaque": report.opaque_claims(),
        "device_certificate": chain.leaf.subject.rfc4514_string(),
        "debug": None,
        "ocsp_checked": False,
    }

    # 6. RIMs.
    digests = {f"device{i}": fp for i, fp in enumerate(chain.fingerprints)}
    if collateral.xml_documents:
        rims = [verify_rim(doc, roots.nvidia_rim, at) for doc in collateral.xml_documents]
        driver, vbios = _assign_rims(report, rims)
        checks.append(Check("nvidia.rim.signatures", True,
                            f"driver RIM {driver.version} and VBIOS RIM {vbios.version}: XML-DSig to the pinned "
                            f"NVIDIA RIM root, valid at {at.isoformat()}"))
        rim = compare(report, driver, vbios)
        mism = rim["mismatched_indexes"]
        checks.append(Check("nvidia.rim.measurements", not mism,
                            f"{rim['matched_count']} golden measurements match"
                            + (f"; indexes {mism} match no golden value" if mism else ""),
                            code=NvidiaRimMismatch.code if mism else None))
        claims["rim"] = rim
        digests["driver_rim"], digests["vbios_rim"] = driver.sha256, vbios.sha256
    else:
        checks.append(Check.skip("nvidia.rim", "no RIMs given: measurements not compared"))
        claims["rim"] = None

    return VerifiedEvidence(
        kind=KIND,
        report_data=report.requester_nonce,
        claims=claims,
        checks=tuple(checks),
        evidence_sha256=sha256_hex(evidence),
        tcb_status=None,
        collateral_sha256=digests,
    )
