"""``/v1/anchors``: the chain anchors of the log's checkpoints, for relying parties and auditors."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ca_service.api.context import services
from ca_service.errors import RequestError
from ca_service.services.anchoring import AnchorView, anchor_covering, latest_anchor, list_anchors

bp = Blueprint("anchors", __name__, url_prefix="/v1/anchors")


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit() accepts other scripts' digits; the bound: sizes are BIGINT/uint64
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > 2**63 - 1:
        raise RequestError(f"query parameter {name!r} must be an integer in 0..2^63-1", parameter=name)
    return int(raw)


@bp.get("")
def index() -> dict[str, Any]:
    """Anchors of the active contract, newest first; ``?limit=`` (1..1000), ``?before=SIZE`` to page."""
    limit = _int_arg("limit", 100)
    views = list_anchors(services(), limit=100 if limit is None else limit, before_size=_int_arg("before", None))
    return {"anchors": [v.to_json() for v in views]}


@bp.get("/latest")
def latest() -> dict[str, Any]:
    """The newest final anchor (404 ``anchor.not_found`` before the first one)."""
    return latest_anchor(services()).to_json()


def anchor_for_log_index(index: int) -> dict[str, Any] | None:
    """For the certificate proof route: the final anchor covering ``index``, or None (not yet).

    ``{chain_id, contract, tx_hash, block_number, size, root, checkpoint_hash, state}``.
    """
    view: AnchorView | None = anchor_covering(services(), index)
    return None if view is None else view.to_json()
