"""Verify an NVIDIA Hopper GPU attestation report, with its device chain, OCSP and RIMs.

Steps, each raising its own :class:`~ca_service.errors.EvidenceError` leaf or recording a check:

1. Parse the SPDM 1.1 GET_MEASUREMENTS request || MEASUREMENTS response (``parse.py``); zero
   padding after the signature (the NVML buffer) is accepted and its length is a claim.
2. Device chain: the collateral certificates must chain from the pinned NVIDIA Device Identity CA to
   the attestation key certificate (GSP FMC), every certificate valid at ``at`` (``chain.py``).
3. Signature: ECDSA P-384/SHA-384 by the attestation key over request || response without the
   signature (DSP0274 1.1 section 10.11.2; nvtrust ``verify_measurement_signature``), r || s.
4. Nonce: the 32-byte requester nonce is the report data (what the ca-service binding and
   ``verify(..., nonce=...)`` compare); the responder nonce is a claim.
5. Revocation (``ocsp.py``): OCSP responses given as collateral, for every certificate of the
   chain but the root and the leaf. None given: the check ``nvidia.ocsp`` is skipped (state
   ``missing``); given but expired, unusable or wrongly signed: the check fails with
   ``revocation.nvidia_ocsp_<state>`` (a policy with ``revocation.allow_unchecked`` accepts it, with
   a warning); a revoked certificate is ``evidence.certificate_revoked``.
6. RIMs, one at a time (``collateral.xml_documents``): each verified (``rim.py``) and assigned by its
   ``colloquialVersion`` to the report's driver version or VBIOS version. Each gives its own check
   (``nvidia.rim.driver``, ``nvidia.rim.vbios``: pass, fail with ``evidence.nvidia.rim_mismatch``,
   or skipped when that RIM was not given) and its own ``mismatched_indexes``. Every active golden
   measurement is compared with the report's block (RIM index i = SPDM block i + 1): equal size and
   one of the alternatives. When both are given they must not both claim an index. Which RIMs are
   required is the policy's (``nvidia-gpu.rims``).

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
    evidence_error_for,
)
from ca_service.evidence.base import Check, VerifiedEvidence, sha256_hex
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nvidia import ocsp as nv_ocsp
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


def _assign_rims(report: AttestationReport, rims: list[Rim]) -> tuple[Rim | None, Rim | None]:
    """The driver RIM and the VBIOS RIM given (either may be absent).

    Raises:
        CollateralMismatch: a RIM is for neither the report's driver nor its VBIOS version.
        CollateralInvalid: two driver RIMs or two VBIOS RIMs.
    """
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
    return (driver[0] if driver else None), (vbios[0] if vbios else None)


def compare_one(report: AttestationReport, rim: Rim) -> dict[str, Any]:
    """One RIM's golden measurements against the report (RIM numbering of indexes)."""
    runtime = {b.index - 1: b.value for b in report.blocks}
    golden = [g for g in rim.measurements if g.active]
    mismatched = sorted(g.index for g in golden if g.index not in runtime or runtime[g.index] not in g.values)
    return {**rim.to_json(), "measurements_match": not mismatched, "mismatched_indexes": mismatched,
            "matched_count": len(golden) - len(mismatched), "indexes": sorted(g.index for g in golden)}


def compare(report: AttestationReport, driver: Rim | None, vbios: Rim | None) -> dict[str, Any]:
    """Step 6's comparison: each given RIM on its own, and the union (``mismatched_indexes``).

    Raises:
        CollateralInvalid: the driver and VBIOS RIMs both claim an active index.
    """
    if driver is not None and vbios is not None:
        both = {g.index for g in driver.measurements if g.active} & {g.index for g in vbios.measurements if g.active}
        if both:
            raise CollateralInvalid(f"driver and VBIOS RIMs both hold an active measurement {min(both)}")
    one = {name: compare_one(report, rim) if rim is not None else None
           for name, rim in (("driver", driver), ("vbios", vbios))}
    given = [r for r in one.values() if r is not None]
    mismatched = sorted(i for r in given for i in r["mismatched_indexes"])
    covered = {i for r in given for i in r["indexes"]}
    return {
        "driver": one["driver"],
        "vbios": one["vbios"],
        "driver_rim": one["driver"],
        "vbios_rim": one["vbios"],
        "measurements_match": bool(given) and not mismatched,
        "mismatched_indexes": mismatched,
        "matched_count": sum(r["matched_count"] for r in given),
        "unchecked_indexes": sorted(b.index - 1 for b in report.blocks if b.index - 1 not in covered),
    }


def _rim_check(name: str, result: dict[str, Any] | None) -> Check:
    check = f"nvidia.rim.{name}"
    what = "driver" if name == "driver" else "VBIOS"
    if result is None:
        return Check.skip(check, f"no {what} RIM given: its golden measurements not compared")
    mism = result["mismatched_indexes"]
    detail = (f"{what} RIM {result['version']} (XML-DSig to the pinned NVIDIA RIM root): "
              f"{result['matched_count']} golden measurements match"
              + (f"; indexes {mism} match no golden value" if mism else ""))
    return Check(check, not mism, detail, code=NvidiaRimMismatch.code if mism else None)


def _ocsp_check(result: nv_ocsp.OcspResult) -> Check:
    if result.state == nv_ocsp.GOOD:
        return Check("nvidia.ocsp", True, result.detail)
    if result.state == nv_ocsp.MISSING:
        return Check.skip("nvidia.ocsp", f"revocation of the device chain not checked: {result.detail}")
    code = f"revocation.{nv_ocsp.ITEM}_{result.state}"
    return Check.fail("nvidia.ocsp", result.detail, evidence_error_for(code).code)


def verify_nvidia(evidence: bytes, collateral: Collateral, at: datetime, roots: TrustRoots) -> VerifiedEvidence:
    """Verify a Hopper attestation report as of ``at`` (steps 1-6 above).

    ``collateral``: the device certificate chain (PEM or DER, any order) and, optionally, DER
    OCSP responses for it and the driver and/or VBIOS RIM (SWID tag XML).

    Raises:
        EvidenceMalformed / EvidenceUnsupported (``evidence.malformed`` / ``evidence.unsupported``):
            not a signed SPDM 1.1 GET_MEASUREMENTS exchange.
        CollateralMissing (``evidence.collateral_missing``): no device certificates.
        CertificateRevoked (``evidence.certificate_revoked``): OCSP says a device certificate is revoked.
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
                        f"SPDM 1.1 GET_MEASUREMENTS, {len(report.blocks)} measurement blocks"
                        + (f", {report.padding} bytes of zero padding after the signature (unsigned)"
                           if report.padding else "")))

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

    # 5. Revocation (OCSP responses kept as collateral).
    ocsp_result = nv_ocsp.check_ocsp(chain, collateral.ocsp_responses, at, unparsed=collateral.ocsp_unparsed)
    checks.append(_ocsp_check(ocsp_result))

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
        "trailing_zero_padding": report.padding,
        "ocsp_checked": ocsp_result.state == nv_ocsp.GOOD,
        "ocsp": ocsp_result.to_json(),
    }
    expires: dict[str, datetime] = {"nvidia.device_chain": min(c.not_valid_after_utc for c in chain.certificates)}
    if ocsp_result.state == nv_ocsp.GOOD and ocsp_result.next_update is not None:
        expires["nvidia.ocsp"] = ocsp_result.next_update

    # 6. RIMs, one at a time.
    digests = {f"device{i}": fp for i, fp in enumerate(chain.fingerprints)}
    for i, resp in enumerate(collateral.ocsp_raw):
        digests[f"ocsp{i}"] = sha256_hex(resp)
    rims = [verify_rim(doc, roots.nvidia_rim, at) for doc in collateral.xml_documents]
    driver, vbios = _assign_rims(report, rims)
    rim = compare(report, driver, vbios) if rims else None
    checks.append(_rim_check("driver", rim["driver"] if rim else None))
    checks.append(_rim_check("vbios", rim["vbios"] if rim else None))
    claims["rim"] = rim
    for name, r in (("driver_rim", driver), ("vbios_rim", vbios)):
        if r is not None:
            digests[name] = r.sha256
            expires[f"nvidia.{name}_signer"] = min(c.not_valid_after_utc for c in r.chain.certificates)

    return VerifiedEvidence(
        kind=KIND,
        report_data=report.requester_nonce,
        claims=claims,
        checks=tuple(checks),
        evidence_sha256=sha256_hex(evidence),
        tcb_status=None,
        collateral_sha256=digests,
        expires_at=expires,
        revocation={nv_ocsp.ITEM: ocsp_result.state},
    )
