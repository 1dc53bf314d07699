"""POST /v1/integrity-reports, GET /v1/integrity-reports/{id} (DESIGN.md flow 2)."""

from __future__ import annotations

import base64
import json
from typing import Literal

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ca_service.api.app import json_body
from ca_service.api.context import services
from ca_service.api.schemas import b64_schema, b64decode_strict, parse_model
from ca_service.ca.integrity import MAX_REPORT_BYTES, MAX_SIGNATURE_BYTES
from ca_service.errors import NotCheckpointed
from ca_service.services import integrity as integrity_service

bp = Blueprint("integrity", __name__, url_prefix="/v1/integrity-reports")


class IntegrityReportIn(BaseModel):
    """``report``: base64 of the exact RFC 8785 bytes signed; ``signature``: base64 (DER for ECDSA)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    report: str = Field(min_length=4, max_length=(MAX_REPORT_BYTES + 2) // 3 * 4,
                        json_schema_extra=b64_schema("the exact RFC 8785 bytes the loader signed, base64"))
    signature: str = Field(min_length=4, max_length=(MAX_SIGNATURE_BYTES + 2) // 3 * 4,
                           json_schema_extra=b64_schema("the signature (DER for ECDSA), base64"))
    alg: Literal["ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519"]

    @field_validator("report", "signature")
    @classmethod
    def _is_b64(cls, v: str) -> str:
        b64decode_strict(v, "value")
        return v


@bp.post("")
def post_report() -> ResponseReturnValue:
    """Submit a loader-signed integrity report: 201 when logged, 200 when the same report already was."""
    body: IntegrityReportIn = parse_model(IntegrityReportIn, json_body())
    record = integrity_service.submit_report(services(), b64decode_strict(body.report, "report"),
                                             b64decode_strict(body.signature, "signature"), body.alg)
    resp = jsonify(record.summary())
    resp.status_code = 201 if record.created else 200
    resp.headers["Location"] = url_for("integrity.get_report", report_id=record.id)
    return resp


@bp.get("/<report_id>")
def get_report(report_id: str) -> ResponseReturnValue:
    """A stored report, with its tlog-proof@v1 bundle once a checkpoint covers it (else null)."""
    from ca_service.services.log import proof_bundle_for_index

    svc = services()
    record = integrity_service.get_report(svc, report_id)
    proof: str | None
    try:
        proof = proof_bundle_for_index(svc, record.log_index)
    except NotCheckpointed:
        proof = None
    return jsonify(
        id=record.id, sha256=record.sha256, serial=record.serial, order_id=record.order_id, alg=record.alg,
        issued_at=record.issued_at.isoformat(), received_at=record.received_at.isoformat(),
        log_index=record.log_index, report=base64.b64encode(record.report).decode(),
        signature=base64.b64encode(record.signature).decode(), document=json.loads(record.report), proof=proof,
    )
