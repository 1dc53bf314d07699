"""IETF EAR (EAT Attestation Results) claims, draft-ietf-rats-ear, profile ``#03``, and its JWT form.

JSON claim names are the draft's (section 3 "Attestation Result" and 3.2 "Appraisal"):
``eat_profile``, ``iat``, ``ear.verifier-id``, ``eat_nonce`` and ``submods`` at the top, one
appraisal per evidence item in ``submods`` with ``ear.status``, ``ear.trustworthiness-vector``
and ``ear.appraisal-policy-id``. The top level also repeats the composite ``ear.status`` and
``ear.appraisal-policy-id`` (the draft's pre-submods form, read by our relying-party CLI);
everything service-specific is under the ``ca-service.`` prefix (draft section 3: private claims).

Trustworthiness vector values follow AR4SI (draft-ietf-rats-ar4si section 2.3): 2 affirming,
32 warning, 96 contraindicated; 0 no claim.

The JWT form (RFC 7519) is signed ES256 (RFC 7518 section 3.4) with the service's ``ear`` key;
its ``kid`` is the key's RFC 7638 JWK thumbprint and the key is published as a JWK Set.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from ca_service.evidence.base import VerifiedEvidence
from ca_service.policy.appraise import Appraisal, AppraisalCheck

EAR_PROFILE = "tag:ietf.org,2026:rats/ear#03"
VERIFIER_ID = {"developer": "ca-service", "build": "ca-service 0.1.0"}

AFFIRMING = 2
WARNING = 32
CONTRAINDICATED = 96

_MEASUREMENT_CLAIMS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig",
                       "mrseam", "mrenclave", "mrsigner", "measurement", "host_data", "vmpl", "product",
                       "driver_version", "vbios_version", "pcrs", "loaded_digests", "event_log_sha256")


def _status(tier: int) -> str:
    return {AFFIRMING: "affirming", WARNING: "warning", CONTRAINDICATED: "contraindicated"}.get(tier, "none")


# Which AR4SI trustworthiness claim each policy rule speaks to.
_HARDWARE_RULES = frozenset({"tcb_status", "advisories", "min_tcb_evaluation_data_number", "min_tcb_date",
                             "min_tee_tcb_svn", "min_cpu_svn", "min_tcb", "min_launch_tcb", "min_committed_tcb",
                             "product", "signing_key", "insecure_profile", "present", "allowed_type",
                             "min_driver"})
_EXECUTABLE_PREFIXES = ("mrtd", "rtmr", "mrseam", "mrsignerseam", "mrenclave", "mrsigner", "measurement",
                        "loader_digests", "measurements", "pcr", "isv_prod_id", "min_isv_svn", "min_guest_svn",
                        "family_id", "image_id", "id_key_digest", "runtime_event")


def _claim_of(check: AppraisalCheck) -> str:
    if check.claim in _HARDWARE_RULES or check.claim.startswith("revocation."):  # the vendor chain's status
        return "hardware"
    if check.claim.startswith(_EXECUTABLE_PREFIXES):
        return "executables"
    return "configuration"  # debug, guest policy, VMPL, platform info, host data, config ids, unknown


def _tier(checks: Sequence[AppraisalCheck]) -> int:
    if not checks:
        return 0
    return AFFIRMING if all(c.passed for c in checks) else CONTRAINDICATED


def submod(ve: VerifiedEvidence, appraisal: Appraisal, policy_id: str, *, bound: bool = True,
           collateral: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The appraisal of one evidence item; ``bound``: its report data was checked against a nonce;
    ``collateral``: the records of the collateral it was judged by (``ca-service.collateral``: item,
    key, sha256, source cache|vendor|request, issue_date, next_update, url)."""
    item_checks = [c for c in appraisal.checks if c.evidence == ve.kind]
    vector = {
        name: _tier([c for c in item_checks if _claim_of(c) == name])
        for name in ("hardware", "executables", "configuration")
    }
    # what was accepted without being established (docs/revocation.md): the codes a policy rule accepted
    # at verification, and any revocation source still not good (only ever here when the policy accepts it)
    warnings = list(dict.fromkeys([*ve.warnings, *ve.unchecked_revocation]))
    if vector["hardware"] == AFFIRMING and (ve.insecure or ve.tcb_status not in (None, "UpToDate") or warnings):
        # genuine, but not up to date (or not hardware at all, or its revocation not established)
        vector["hardware"] = WARNING
    vector["instance-identity"] = AFFIRMING if bound else 0
    passed = bool(item_checks) and all(c.passed for c in item_checks)
    tier = CONTRAINDICATED if not passed else max(vector.values())
    return {
        "ear.status": _status(tier),
        "ear.trustworthiness-vector": {k: v for k, v in vector.items() if v != 0},
        "ear.appraisal-policy-id": policy_id,
        "ca-service.tee": ve.kind,
        "ca-service.insecure": ve.insecure,
        "ca-service.tcb-status": ve.tcb_status,
        "ca-service.advisory-ids": list(ve.advisory_ids),
        "ca-service.evidence-sha256": ve.evidence_sha256,
        "ca-service.collateral-sha256": dict(ve.collateral_sha256),
        "ca-service.collateral": [dict(c) for c in collateral],
        # each revocation source: "good", or the state a policy rule accepted (docs/revocation.md)
        "ca-service.revocation": dict(ve.revocation),
        "ca-service.measurements": {k: ve.claims[k] for k in _MEASUREMENT_CLAIMS if k in ve.claims},
        **({"ca-service.warnings": warnings} if warnings else {}),
        **_loaded_claims(ve),
    }


def _loaded_claims(ve: VerifiedEvidence) -> dict[str, Any]:
    """What a trusted loader measured (the replayed event log's ``loaded`` / ``loaded_digests``,
    docs/event-log.md): ``ca-service.loaded-digests``, ``ca-service.loaded`` (role, digest) and, per
    role, ``ca-service.<role>`` (a digest, or a list when the role was loaded more than once), so a
    relying party can ``--expect engine=sha384:...``. A role never replaces another claim."""
    digests = ve.claims.get("loaded_digests")
    if not isinstance(digests, list):
        return {}
    out: dict[str, Any] = {"ca-service.loaded-digests": [d for d in digests if isinstance(d, str)]}
    loaded = ve.claims.get("loaded")
    if isinstance(loaded, list):
        pairs = [(e["role"], e["digest"]) for e in loaded if isinstance(e, dict)
                 and isinstance(e.get("role"), str) and isinstance(e.get("digest"), str)]
        out["ca-service.loaded"] = [{"role": r, "digest": d} for r, d in pairs]
        by_role: dict[str, list[str]] = {}
        for role, digest in pairs:
            by_role.setdefault(role, []).append(digest)
        for role, values in by_role.items():
            key = f"ca-service.{role}"
            if key not in _RESERVED_SUBMOD_KEYS:
                out[key] = values[0] if len(values) == 1 else values
    return out


_RESERVED_SUBMOD_KEYS = frozenset({
    "ca-service.tee", "ca-service.insecure", "ca-service.tcb-status", "ca-service.advisory-ids",
    "ca-service.evidence-sha256", "ca-service.collateral-sha256", "ca-service.collateral",
    "ca-service.measurements", "ca-service.loaded-digests", "ca-service.loaded", "ca-service.warnings",
})


def build_ear(
    items: Sequence[VerifiedEvidence],
    appraisal: Appraisal,
    *,
    policy_id: str,
    issued_at: datetime,
    nonce: bytes | None = None,
    log_index: int | None = None,
    profile: str = "production",
    bound: bool = True,
    item_nonces: Mapping[str, bytes] | None = None,
    collateral: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """The EAR claims set for one composite appraisal.

    ``expires_at``: the ``exp`` claim (RFC 7519 section 4.1.4; draft-ietf-rats-ear carries the JWT
    claims): a certificate's ``notAfter`` for the EAR inside it, and for a bare attestation result
    the ``notAfter`` a certificate issued on the same evidence would get (ca/lifetime.py).

    ``bound``: every item's report data was checked against ``nonce`` (issuance: the challenge
    binding). ``item_nonces``: per evidence type, a caller nonce its report data was checked
    against; it goes to that submod's ``eat_nonce`` and makes its instance identity affirming.
    """
    item_nonces = item_nonces or {}
    collateral = collateral or {}
    submods = {ve.kind: submod(ve, appraisal, policy_id, bound=bound or ve.kind in item_nonces,
                               collateral=collateral.get(ve.kind, ())) for ve in items}
    for kind, item_nonce in item_nonces.items():
        if kind in submods:
            submods[kind]["eat_nonce"] = item_nonce.hex()
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
    if expires_at is not None:
        ear["exp"] = int(expires_at.timestamp())
    if nonce is not None:
        ear["eat_nonce"] = nonce.hex()
    if log_index is not None:
        ear["ca-service.log-index"] = log_index
    return ear


# --- JWT form ----------------------------------------------------------------------------------------

EAR_JWT_ALG = "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _p256(public_key: Any) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("the EAR key must be ECDSA P-256 (ES256)")
    return public_key


def jwk_thumbprint(public_key: Any) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no whitespace."""
    nums = _p256(public_key).public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64url(nums.x.to_bytes(32, "big")),
               "y": _b64url(nums.y.to_bytes(32, "big"))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def public_jwk(public_key: Any) -> dict[str, str]:
    """The EAR verification key as a JWK (RFC 7517/7518), ``kid`` = RFC 7638 thumbprint."""
    nums = _p256(public_key).public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64url(nums.x.to_bytes(32, "big")),
            "y": _b64url(nums.y.to_bytes(32, "big")), "use": "sig", "alg": EAR_JWT_ALG,
            "kid": jwk_thumbprint(public_key)}


def sign_ear(claims: dict[str, Any], private_key: Any) -> str:
    """The EAR as a compact JWS (ES256), header ``{alg, typ, kid}``."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the EAR key must be ECDSA P-256 (ES256)")
    kid = jwk_thumbprint(private_key.public_key())
    return jwt.encode(claims, private_key, algorithm=EAR_JWT_ALG, headers={"kid": kid, "typ": "JWT"})
