"""Policy administration: ``/v1/policies`` (reads: auditor or admin; changes: admin)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ca_service.api.app import UnsupportedMediaType, json_body
from ca_service.api.auth import ADMIN, READERS, principal, require_role, www_authenticate
from ca_service.api.context import services
from ca_service.api.schemas import integral, parse_model
from ca_service.errors import RequestError
from ca_service.policy.model import MAX_POLICY_BYTES
from ca_service.services import dryrun, policies

bp = Blueprint("policies", __name__, url_prefix="/v1/policies")
bp.after_request(www_authenticate)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class RetireIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    revoke: bool = False
    reason: str = Field(default="superseded", max_length=32, json_schema_extra={"enum": list(policies.RETIRE_REASONS)})


class DryRunIn(BaseModel):
    # a candidate version or a document, not both (services/dryrun.py refuses both: request.invalid)
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"not": {
        "required": ["version", "document"],
        "properties": {"version": {"type": "integer"}, "document": {"type": ["string", "object"]}}}})

    version: int | None = Field(default=None, ge=1)
    document: str | dict[str, Any] | None = None
    serials: list[str] | None = Field(default=None, min_length=1, max_length=dryrun.MAX_LIMIT)
    limit: int = Field(default=dryrun.DEFAULT_LIMIT, ge=1, le=dryrun.MAX_LIMIT)

    _integers = field_validator("version", "limit", mode="before")(integral)


def _flag(name: str) -> bool:
    value = request.args.get(name, "false")
    if value not in ("true", "false", "1", "0"):
        raise RequestError(f"query parameter {name} is true, false, 1 or 0", parameter=name)
    return value in ("true", "1")


def _document_source() -> str:
    """The uploaded policy as text: YAML as sent, or a JSON document (YAML 1.2 is a JSON superset)."""
    if request.mimetype in YAML_TYPES:
        raw = request.get_data(cache=False)
        if len(raw) > MAX_POLICY_BYTES:
            raise RequestError("policy document is larger than 64 KiB")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("policy document is not UTF-8") from exc
    if request.mimetype == "application/json":
        import json

        return json.dumps(json_body())
    raise UnsupportedMediaType("send the policy as application/yaml or application/json")


@bp.post("")
@require_role(ADMIN)
def apply() -> ResponseReturnValue:
    svc = services()
    actor = principal().actor
    activate = _flag("activate")  # before anything is stored: a refused request changes nothing
    ref, created = policies.apply_policy(svc, _document_source(), actor=actor)
    if activate:
        ref = policies.activate(svc, ref.policy.name, ref.version, actor=actor)
    return jsonify(ref.to_json() | {"created": created}), 201 if created else 200


@bp.get("")
@require_role(READERS)
def list_all() -> ResponseReturnValue:
    return jsonify(policies=policies.list_policies(services()))


@bp.get("/<name>")
@require_role(READERS)
def show(name: str) -> ResponseReturnValue:
    return jsonify(policies.describe_policy(services(), name))


@bp.get("/<name>/versions/<int:version>")
@require_role(READERS)
def show_version(name: str, version: int) -> ResponseReturnValue:
    return jsonify(policies.get_version(services(), name, version).to_json())


@bp.get("/<name>/diff")
@require_role(READERS)
def diff(name: str) -> ResponseReturnValue:
    raw = [request.args.get("from"), request.args.get("to")]
    # ASCII digits (int() also took " 5", "+5", "1_0", other scripts' digits); at most what a version
    # column holds (a larger number overflowed the driver: a 500)
    if raw[0] is None or any(r is not None and not (r.isascii() and r.isdigit() and len(r) <= 19
                                                     and 1 <= int(r) < 2**63) for r in raw):
        raise RequestError("give ?from=<version>[&to=<version>], versions are numbers from 1", where="query")
    old, new = int(raw[0]), int(raw[1]) if raw[1] is not None else None
    a, b, changes = policies.diff_versions(services(), name, old, new)
    return jsonify(name=name, **{"from": {"version": a.version, "digest": a.policy.digest},
                                 "to": {"version": b.version, "digest": b.policy.digest}},
                   changes=[c.to_json() for c in changes])


@bp.post("/<name>/versions/<int:version>/activate")
@require_role(ADMIN)
def activate(name: str, version: int) -> ResponseReturnValue:
    ref = policies.activate(services(), name, version, actor=principal().actor)
    return jsonify(ref.to_json())


@bp.post("/<name>/versions/<int:version>/retire")
@require_role(ADMIN)
def retire(name: str, version: int) -> ResponseReturnValue:
    body: RetireIn = parse_model(RetireIn, json_body()) if request.content_length else RetireIn()
    result = policies.retire(services(), name, version, actor=principal().actor, revoke=body.revoke,
                             reason=body.reason)
    return jsonify(result.to_json())


@bp.post("/<name>/dry-run")
@require_role(ADMIN)
def dry_run(name: str) -> ResponseReturnValue:
    body: DryRunIn = parse_model(DryRunIn, json_body()) if request.content_length else DryRunIn()
    source: str | None = None
    if isinstance(body.document, dict):
        import json

        source = json.dumps(body.document)
    elif isinstance(body.document, str):
        source = body.document
    report = dryrun.dry_run(services(), name, actor=principal().actor, version=body.version, source=source,
                            serials=body.serials, limit=body.limit)
    return jsonify(report.to_json())
