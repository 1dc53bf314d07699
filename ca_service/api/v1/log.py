"""The transparency log under ``/v1/log``: C2SP tlog-tiles paths, JSON proofs, entries.

Errors are CAServiceError leaves (problem+json): malformed numbers and paths are 400, sizes
beyond the tree 400 (``log.proof_unavailable``), tiles and entries the log has not reached 404.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from ca_service.api.context import services
from ca_service.errors import LogEntryNotFound, ProofUnavailable
from ca_service.services import log as log_service

bp = Blueprint("log", __name__, url_prefix="/v1/log")

_UINT = re.compile(r"0|[1-9]\d{0,18}")
MAX_INDEX = (1 << 63) - 1
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=2"  # C2SP tlog-tiles: the checkpoint must not be cached beyond a few seconds
TEXT = "text/plain; charset=utf-8"


def _uint(value: str | None, name: str) -> int:
    if value is None or not _UINT.fullmatch(value) or int(value) > MAX_INDEX:
        raise ProofUnavailable(f"{name} must be a decimal integer in 0..2^63-1", parameter=name)
    return int(value)


@bp.get("/checkpoint")
def checkpoint() -> ResponseReturnValue:
    cp = log_service.get_checkpoint(services())
    return Response(cp.note, content_type=TEXT, headers={"Cache-Control": SHORT})


@bp.get("/vkey")
def vkey() -> ResponseReturnValue:
    return Response(log_service.vkey(services()) + "\n", content_type=TEXT, headers={"Cache-Control": SHORT})


@bp.get("/tile/<path:tile_path>")
def tile(tile_path: str) -> ResponseReturnValue:
    data, ref = log_service.tile(services(), tile_path)
    cache = IMMUTABLE if ref.full else SHORT
    return Response(data, content_type="application/octet-stream", headers={"Cache-Control": cache})


@bp.get("/entries/<index>")
def entry(index: str) -> ResponseReturnValue:
    if not _UINT.fullmatch(index) or int(index) > MAX_INDEX:
        raise LogEntryNotFound("log indexes are decimal integers in 0..2^63-1")
    resp = jsonify(log_service.entry(services(), int(index)))
    resp.headers["Cache-Control"] = IMMUTABLE
    return resp


@bp.get("/proof/inclusion")
def inclusion() -> ResponseReturnValue:
    index = _uint(request.args.get("index"), "index")
    size = _uint(request.args.get("size"), "size")
    return jsonify(log_service.inclusion_proof(services(), index, size))


@bp.get("/proof/consistency")
def consistency() -> ResponseReturnValue:
    old = _uint(request.args.get("from"), "from")
    new = _uint(request.args.get("to"), "to")
    return jsonify(log_service.consistency_proof(services(), old, new))
