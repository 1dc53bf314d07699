"""OCSP (RFC 6960): POST /v1/ocsp with a DER request, or GET /v1/ocsp/{base64 request}."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from ca_service.api.context import services
from ca_service.services.revocation import ocsp_answer

bp = Blueprint("ocsp", __name__, url_prefix="/v1/ocsp")
MAX_OCSP_REQUEST = 8192


def _respond(der: bytes) -> Response:
    return Response(ocsp_answer(services(), der), mimetype="application/ocsp-response",
                    headers={"Cache-Control": "no-store"})


@bp.post("")
def post_ocsp() -> ResponseReturnValue:
    from ca_service.api.app import UnsupportedMediaType

    if request.mimetype != "application/ocsp-request":
        raise UnsupportedMediaType("send application/ocsp-request")
    return _respond(request.get_data(cache=False)[:MAX_OCSP_REQUEST + 1])


# RFC 6960 appendix A.1: GET {url}/{url-encoding of base64(DER)}. Base64 holds "/" (and "//"),
# so the rule must not merge slashes (that would redirect to a different request).
@bp.get("/<path:encoded>", merge_slashes=False)
def get_ocsp(encoded: str) -> ResponseReturnValue:
    if len(encoded) > MAX_OCSP_REQUEST * 2:
        encoded = ""
    try:
        der = base64.b64decode(unquote(encoded), validate=True)
    except (binascii.Error, ValueError):
        der = b""
    return _respond(der)
