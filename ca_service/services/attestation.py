"""Appraise evidence without issuing (DESIGN.md flow 3): verified claims x active policy -> signed EAR.

A relying party sends evidence and, to make the result fresh, a nonce that must lead the
evidence's report data (``eat_nonce`` per item, or one for all items). Cryptographic failures are
refusals (problem+json, no result); a failed appraisal is a result: an EAR whose status is
``contraindicated``, listing every failed check. Nothing is written.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from ca_service.ca.ear import build_ear, sign_ear
from ca_service.ca.lifetime import result_expiry
from ca_service.errors import ReportDataMismatch, RequestError
from ca_service.policy.appraise import Appraisal, appraise
from ca_service.services import collateral as collateral_service
from ca_service.services import policies
from ca_service.services.collateral_used import used_items
from ca_service.services.container import Services
from ca_service.services.issuance import EvidenceItem, refuse_unchecked_revocation, verify_one
from ca_service.services.roots import trust_roots

MIN_NONCE, MAX_NONCE = 8, 64  # EAT nonce sizes (RFC 9711 section 4.1)


@dataclass(frozen=True)
class AttestationRequest:
    policy: str
    evidence: tuple[EvidenceItem, ...]
    item_nonces: tuple[bytes | None, ...] = ()
    nonce: bytes | None = None


@dataclass(frozen=True)
class AttestationResult:
    ear_jwt: str
    claims: dict[str, Any]
    appraisal: Appraisal
    policy: policies.PolicyRef
    collateral: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ear": self.ear_jwt, "ear_claims": self.claims,
                "appraisal": self.appraisal.to_json() | {"collateral": self.collateral},
                "policy": {"name": self.policy.policy.name, "version": self.policy.version,
                           "digest": self.policy.policy.digest, "id": self.policy.id}}


def _check_nonce(nonce: bytes) -> bytes:
    if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise RequestError(f"a nonce is {MIN_NONCE}..{MAX_NONCE} bytes")
    return nonce


def attest(svc: Services, req: AttestationRequest) -> AttestationResult:
    """Verify every item as of now, appraise against the active policy, sign the EAR.

    Raises:
        PolicyNotFound / PolicyInactive, EvidenceError leaves (``evidence.*``), ReportDataMismatch
        (``evidence.report_data_mismatch``: a nonce does not lead the report data), RequestError.
    """
    now = svc.clock.now()
    if len(req.item_nonces) not in (0, len(req.evidence)):
        raise RequestError("one nonce slot per evidence item")
    nonces = req.item_nonces or (None,) * len(req.evidence)
    kinds = [item.kind for item in req.evidence]
    if len(set(kinds)) != len(kinds):
        raise RequestError("at most one evidence item of each type")
    with svc.db.read() as session:
        ref = policies.active_policy(session, req.policy)
    roots = trust_roots(svc)
    verified = []
    item_nonces: dict[str, bytes] = {}
    used: dict[str, list[dict[str, Any]]] = {}
    cache_listing: dict[str, list[dict[str, Any]]] = {}
    for item, item_nonce in zip(req.evidence, nonces, strict=True):
        ve, resolved = verify_one(svc, item, now, roots, ref.policy.revocation_rule)
        used[item.kind] = resolved.to_json()
        if not item.collateral and item.kind in collateral_service.SUPPLIED_KINDS:
            cache_listing[item.kind] = used_items(svc, item.kind, item.data, now)
        expected = item_nonce if item_nonce is not None else req.nonce
        if expected is not None:
            _check_nonce(expected)
            if len(expected) > len(ve.report_data) or not hmac.compare_digest(ve.report_data[: len(expected)],
                                                                               expected):
                raise ReportDataMismatch(f"the {item.kind} report data does not start with the nonce",
                                         evidence_type=item.kind)
            if item_nonce is not None:
                item_nonces[item.kind] = item_nonce
        verified.append(ve)
    refuse_unchecked_revocation(ref.policy, verified)
    appraisal = appraise(ref.policy, verified, insecure_allowed=svc.settings.insecure)
    claims = build_ear(verified, appraisal, policy_id=ref.id, issued_at=now, nonce=req.nonce,
                       profile=svc.settings.profile, bound=req.nonce is not None, item_nonces=item_nonces,
                       collateral=used, expires_at=result_expiry(ref.policy, now, [ve.expires_at for ve in verified]))
    for kind, items in cache_listing.items():  # the cache items, as `evidence verify` lists them
        claims["submods"][kind]["ca-service.collateral-used"] = items
    first = min((e for ve in verified if (e := ve.earliest_expiry) is not None), key=lambda e: e[1], default=None)
    if first is not None:
        claims["ca-service.collateral-expires-at"] = first[1].isoformat()
        claims["ca-service.collateral-expires-item"] = first[0]
    token = sign_ear(claims, svc.keys.private_key("ear"))
    return AttestationResult(ear_jwt=token, claims=claims, appraisal=appraisal, policy=ref, collateral=used)


def jwks(svc: Services) -> dict[str, Any]:
    """The JWK Set of the EAR verification key(s)."""
    from ca_service.ca.ear import public_jwk

    return {"keys": [public_jwk(svc.keys.public_key("ear"))]}
