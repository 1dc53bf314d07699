"""``GET /.well-known/jwks.json``: the keys that verify EAR JWTs (public, cacheable)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ca_service.api.context import services
from ca_service.services.attestation import jwks

bp = Blueprint("jwks", __name__)


@bp.get("/.well-known/jwks.json")
def get_jwks() -> ResponseReturnValue:
    resp = jsonify(jwks(services()))
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.mimetype = "application/jwk-set+json"
    return resp
