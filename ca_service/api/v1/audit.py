"""``GET /v1/audit``: the append-only audit table (auditor or admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ca_service.api.auth import READERS, require_role, www_authenticate
from ca_service.api.context import services
from ca_service.errors import RequestError
from ca_service.services.audit_query import MAX_PAGE, list_events

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")
bp.after_request(www_authenticate)


def _integer(name: str, raw: str, minimum: int, maximum: int) -> int:
    """A decimal minimum..maximum in ASCII digits (docs/openapi.json states the same bounds)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not minimum <= int(raw) <= maximum:
        raise RequestError(f"{name} is an integer in {minimum}..{maximum}", parameter=name)
    return int(raw)


@bp.get("")
@require_role(READERS)
def list_audit() -> ResponseReturnValue:
    limit = _integer("limit", request.args.get("limit", "100"), 1, MAX_PAGE)
    before = request.args.get("before_id")
    before_id = _integer("before_id", before, 0, 2**63 - 1) if before is not None else None
    return jsonify(list_events(services(), limit=limit, before_id=before_id, action=request.args.get("action"),
                               target=request.args.get("target")))
