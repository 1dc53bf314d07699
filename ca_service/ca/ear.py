"""IETF EAR (EAT Attestation Results) claims, draft-ietf-rats-ear, profile ``#03``.

Trustworthiness vector values follow AR4SI (draft-ietf-rats-ar4si): 2 affirming, 32 warning,
96 contraindicated; 0 no claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ca_service.evidence.base import VerifiedEvidence
from ca_service.policy.appraise import Appraisal

EAR_PROFILE = "tag:ietf.org,2026:rats/ear#03"
VERIFIER_ID = {"developer": "ca-service", "build": "ca-service 0.1.0"}

AFFIRMING = 2
WARNING = 32
CONTRAINDICATED = 96

_MEASUREMENT_CLAIMS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig",
                       "mrseam", "mrenclave", "mrsigner", "measurement", "host_data", "vmpl", "product",
                       "driver_version", "vbios_version", "pcrs")


def _status(tier: int) -> str:
    return {AFFIRMING: "affirming", WARNING: "warning", CONTRAINDICATED: "contraindicated"}.get(tier, "none")


def submod(ve: VerifiedEvidence, appraisal: Appraisal, policy_id: str) -> dict[str, Any]:
    item_checks = [c for c in appraisal.checks if c.evidence == ve.kind]
    passed = bool(item_checks) and all(c.passed for c in item_checks)
    hardware = WARNING if ve.insecure else AFFIRMING
    executables = AFFIRMING if passed else CONTRAINDICATED
    tier = max(hardware, executables)
    return {
        "ear.status": _status(tier),
        "ear.trustworthiness-vector": {
            "hardware": hardware,
            "executables": executables,
            "configuration": AFFIRMING if passed else CONTRAINDICATED,
            "instance-identity": AFFIRMING,
        },
        "ear.appraisal-policy-id": policy_id,
        "ca-service.tee": ve.kind,
        "ca-service.insecure": ve.insecure,
        "ca-service.tcb-status": ve.tcb_status,
        "ca-service.advisory-ids": list(ve.advisory_ids),
        "ca-service.evidence-sha256": ve.evidence_sha256,
        "ca-service.collateral-sha256": dict(ve.collateral_sha256),
        "ca-service.measurements": {k: ve.claims[k] for k in _MEASUREMENT_CLAIMS if k in ve.claims},
    }


def build_ear(
    items: Sequence[VerifiedEvidence],
    appraisal: Appraisal,
    *,
    policy_id: str,
    issued_at: datetime,
    nonce: bytes | None = None,
    log_index: int | None = None,
    profile: str = "production",
) -> dict[str, Any]:
    """The EAR claims set for one composite appraisal."""
    submods = {ve.kind: submod(ve, appraisal, policy_id) for ve in items}
    worst = "affirming"
    order = ["affirming", "warning", "contraindicated", "none"]
    for sm in submods.values():
        if order.index(sm["ear.status"]) > order.index(worst):
            worst = sm["ear.status"]
    if not appraisal.passed:
        worst = "contraindicated"
    ear: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": int(issued_at.timestamp()),
        "ear.verifier-id": VERIFIER_ID,
        "ear.status": worst,
        "ear.appraisal-policy-id": policy_id,
        "submods": submods,
        "ca-service.profile": profile,
    }
    if nonce is not None:
        ear["eat_nonce"] = nonce.hex()
    if log_index is not None:
        ear["ca-service.log-index"] = log_index
    return ear
