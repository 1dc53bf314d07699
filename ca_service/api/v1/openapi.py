"""GET /v1/openapi.json: the OpenAPI 3.1 document, built from the pydantic edge schemas and the app's
route table (so it cannot list a route that does not exist). A copy is kept in docs/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from ca_service import __version__
from ca_service.api.ratelimit import LIMITED as RATE_LIMITED
from ca_service.api.schemas import CertificateOut, CertificateRequestIn, ChallengeOut

bp = Blueprint("openapi", __name__)

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "code": {"type": "string", "description": "stable error code"}},
    "additionalProperties": True,
}
def _request_bodies() -> dict[tuple[str, str], type[BaseModel]]:
    from ca_service.api.v1.attestations import AttestationIn
    from ca_service.api.v1.integrity import IntegrityReportIn

    return {("/v1/certificates", "post"): CertificateRequestIn,
            ("/v1/attestations", "post"): AttestationIn,
            ("/v1/integrity-reports", "post"): IntegrityReportIn}
RESPONSES: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("/v1/challenges", "post"): ("201", ChallengeOut),
    ("/v1/certificates", "post"): ("201", CertificateOut),
}


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_document(app: Any) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": PROBLEM}
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.startswith("explorer."):
            continue  # the explorer's HTML pages are not part of the API
        path = rule.rule.replace("<path:", "{").replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            m = method.lower()
            view = app.view_functions[rule.endpoint]
            op: dict[str, Any] = {
                "operationId": rule.endpoint.replace(".", "_") + "_" + m,
                "summary": (view.__doc__ or "").strip().split("\n")[0],
                "responses": {"default": {"description": "problem",
                                          "content": {"application/problem+json": {
                                              "schema": {"$ref": "#/components/schemas/Problem"}}}}},
            }
            params = [{"name": a, "in": "path", "required": True, "schema": {"type": "string"}}
                      for a in sorted(rule.arguments)]
            if params:
                op["parameters"] = params
            bodies = _request_bodies()
            if (rule.rule, m) in bodies:
                op["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": _ref(bodies[(rule.rule, m)], schemas)}}}
            if (rule.rule, m) in RESPONSES:
                code, model = RESPONSES[(rule.rule, m)]
                op["responses"][code] = {"description": "ok", "content": {"application/json": {
                    "schema": _ref(model, schemas)}}}
            else:
                op["responses"]["200"] = {"description": "ok"}
            if m == "post" and rule.rule in RATE_LIMITED:
                op["responses"]["429"] = {
                    "description": "request.rate_limited: above the per-client rate limit (CA_SERVICE_RATE_LIMIT)",
                    "headers": {"Retry-After": {"description": "seconds until a request is allowed again",
                                                "schema": {"type": "integer", "minimum": 1}}},
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            paths.setdefault(path, {})[m] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "ca-service", "version": __version__,
                 "description": "Attestation-backed certificate authority. Errors are RFC 9457 problem+json "
                                "with a stable `code`."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@bp.get("/v1/openapi.json")
def openapi() -> ResponseReturnValue:
    """The OpenAPI document of this API."""
    return jsonify(build_document(current_app))
