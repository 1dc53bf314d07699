"""``GET /v1/audit``: the append-only audit table (auditor or admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ca_service.api.auth import READERS, require_role, www_authenticate
from ca_service.api.context import services
from ca_service.errors import RequestError
from ca_service.services.audit_query import list_events

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")
bp.after_request(www_authenticate)


@bp.get("")
@require_role(READERS)
def list_audit() -> ResponseReturnValue:
    try:
        limit = int(request.args.get("limit", "100"))
        before = request.args.get("before_id")
        before_id = int(before) if before is not None else None
    except ValueError as exc:
        raise RequestError("limit and before_id are integers") from exc
    return jsonify(list_events(services(), limit=limit, before_id=before_id, action=request.args.get("action"),
                               target=request.args.get("target")))
