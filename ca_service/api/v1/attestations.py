"""``POST /v1/attestations``: appraise evidence without issuing -> ``{ear (JWT), appraisal}`` (public)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field

from ca_service.api.app import json_body
from ca_service.api.context import services
from ca_service.api.schemas import POLICY_NAME_PATTERN, EvidenceItemIn, parse_model
from ca_service.services.attestation import AttestationRequest, attest

_NONCE = r"^([0-9a-f]{2}){8,64}$"


class AttestationEvidenceIn(EvidenceItemIn):
    eat_nonce: str | None = Field(default=None, pattern=_NONCE, description="hex nonce leading the report data")


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str = Field(min_length=1, max_length=63, pattern=POLICY_NAME_PATTERN)
    evidence: list[AttestationEvidenceIn] = Field(min_length=1, max_length=9)
    eat_nonce: str | None = Field(default=None, pattern=_NONCE,
                                  description="hex nonce for every item that names none of its own")


bp = Blueprint("attestations", __name__, url_prefix="/v1/attestations")


@bp.post("")
def post_attestation() -> ResponseReturnValue:
    body: AttestationIn = parse_model(AttestationIn, json_body())
    req = AttestationRequest(
        policy=body.policy,
        evidence=tuple(e.to_item() for e in body.evidence),
        item_nonces=tuple(bytes.fromhex(e.eat_nonce) if e.eat_nonce else None for e in body.evidence),
        nonce=bytes.fromhex(body.eat_nonce) if body.eat_nonce else None,
    )
    return jsonify(attest(services(), req).to_json())


@bp.get("/needs")
def evidence_needs() -> ResponseReturnValue:
    """What evidence the active version of ``?policy=NAME`` needs (types, event logs); public, no reference values.

    The agent asks before it collects evidence, so it sends the TD's event log only when a rule needs it.
    """
    import re

    from flask import request

    from ca_service.errors import SchemaViolation
    from ca_service.policy.appraise import evidence_needs as needs
    from ca_service.services import policies

    name = request.args.get("policy", "")
    if not re.fullmatch(POLICY_NAME_PATTERN, name):
        raise SchemaViolation("give ?policy=<name> (a policy name: lowercase letters, digits, '-')", field="policy")
    svc = services()
    with svc.db.read() as session:
        ref = policies.active_policy(session, name)
    return jsonify({"policy": {"name": ref.policy.name, "version": ref.version, "digest": ref.policy.digest},
                    **needs(ref.policy)})
