"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from ca_service.api.context import services
from ca_service.api.problems import problem
from ca_service.errors import CAServiceError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    svc = services()
    try:
        svc.db.ping()
        svc.keys.certificate("issuing")
        from ca_service.services.opstate import operational_state

        degraded = operational_state(svc).degraded(
            svc.settings.anchor_interval_seconds, anchoring=svc.settings.chain_rpc != "embedded",
            collateral_duty_interval=svc.settings.collateral_refresh_interval_seconds
            if svc.settings.collateral_refresh else None)
    except (SQLAlchemyError, CAServiceError):
        resp = problem(503, "service.not_ready", "Not ready", "database or CA keys are not available")
        resp.headers["Retry-After"] = "5"
        return resp
    if degraded:
        # still serving: issuance and reads work; the log's publication or anchoring is stuck
        return jsonify(status="degraded", degraded=degraded, profile=svc.settings.profile)
    return jsonify(status="ready", profile=svc.settings.profile)
