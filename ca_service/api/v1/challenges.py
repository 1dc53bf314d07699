"""POST /v1/challenges."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ca_service.api.context import services
from ca_service.services.challenges import create_challenge

bp = Blueprint("challenges", __name__, url_prefix="/v1/challenges")


@bp.post("")
def post_challenge() -> ResponseReturnValue:
    ch = create_challenge(services())
    return jsonify(id=ch.id, nonce=ch.nonce.hex(), expires_at=ch.expires_at.isoformat()), 201
