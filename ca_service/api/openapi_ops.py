"""What each operation of the API accepts and answers, as OpenAPI 3.1 fragments.

The document states what the server enforces, no more and no less: every pattern, bound and enum
here is one a view, a pydantic model (``api/schemas.py``) or the app's request hooks check. A bounded
schemathesis run against ``ca-service serve`` (``tests/integration/test_schemathesis.py``) looks for
drift both ways: data the document calls invalid that the server accepts, data the document calls
valid that the server refuses for its form, and answers (status, media type, body, headers) that the
document does not list. ``OPERATIONS`` has one entry per route of the app; a test keeps it so.

Request bodies come from the pydantic models; the rest is written out here, beside the constants the
views use, so a changed bound changes both.
"""

from __future__ import annotations

from typing import Any

from ca_service.api.schemas import B64_PATTERN, POLICY_NAME_PATTERN
from ca_service.ca.revocation import REASONS

INT63 = 2**63 - 1
# the app refuses a C0 control character anywhere in the path or the query (api/app.py)
QUERY_TEXT = r"^[^\x00-\x1f]*$"
# one path segment: werkzeug's default converter takes anything but "/"
SEGMENT = r"^[^/\x00-\x1f]+$"
HEX_PATTERN = r"^[0-9a-f]+$"
SERIAL_PATTERN = r"^(0[xX])?[0-9a-fA-F]{1,64}$"
# api/v1/log.py, tlog/tiles.py: the canonical C2SP tlog-tiles path after tile/
TILE_PATTERN = (r"^(?:[0-9]|[1-5][0-9]|6[0-3]|entries)/(?!x000/)(?:x[0-9]{3}/){0,6}[0-9]{3}"
                r"(?:\.p/(?:[1-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$")
DATE_TIME = {"type": "string", "format": "date-time"}
HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
B64 = {"type": "string", "contentEncoding": "base64", "pattern": B64_PATTERN}
OBJECT = {"type": "object"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_of(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": schema}}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None, *, extra: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "required": sorted(required),
                           "properties": {**required, **(optional or {})}}
    if not extra:
        out["additionalProperties"] = False
    return out


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def text(pattern: str = QUERY_TEXT, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern, **kw}


def integer(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


POLICY_NAME = {"type": "string", "pattern": POLICY_NAME_PATTERN, "description": "a policy name"}
POLICY_REF = obj({"name": {"type": "string"}, "version": {"type": "integer"}, "digest": HEX64},
                 {"id": {"type": "string"}})
ANCHOR = obj({"chain_id": {"type": "integer"}, "contract": {"type": "string"},
              "tx_hash": nullable({"type": "string"}), "block_number": nullable({"type": "integer"}),
              "size": {"type": "integer"}, "root": {"type": "string"}, "checkpoint_hash": {"type": "string"},
              "state": {"type": "string"}},
             {"confirmed_at": nullable(DATE_TIME), "detail": nullable({"type": "string"})})
POLICY_VERSION = obj({"name": {"type": "string"}, "version": {"type": "integer"}, "digest": HEX64,
                      "id": {"type": "string"}, "active": {"type": "boolean"}, "retired_at": nullable(DATE_TIME),
                      "document": OBJECT})
POLICY_SUMMARY = obj({"name": {"type": "string"}, "active_version": nullable({"type": "integer"}),
                      "versions": {"type": "array", "items": OBJECT}})
PEM = {"type": "string", "description": "PEM"}

SCHEMAS: dict[str, Any] = {
    "Challenge": obj({"id": {"type": "string", "format": "uuid"},
                      "nonce": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "32 bytes, hex"},
                      "expires_at": DATE_TIME}),
    "IssuedCertificate": obj({"serial": {"type": "string", "pattern": HEX_PATTERN},
                              "certificate_chain": {"type": "string", "description": "PEM, leaf first"},
                              "appraisal": OBJECT, "ear": OBJECT, "policy": POLICY_REF,
                              "log_index": {"type": "integer", "minimum": 0}}),
    "CertificateRecord": obj({"serial": {"type": "string"}, "status": {"type": "string"},
                              "subject": {"type": "string"}, "issued_at": DATE_TIME, "not_before": DATE_TIME,
                              "not_after": DATE_TIME, "spki_sha256": HEX64, "policy": OBJECT,
                              "evidence": {}, "appraisal": {}, "log_index": nullable({"type": "integer"}),
                              "revoked_at": nullable(DATE_TIME), "revocation_reason": nullable({"type": "string"}),
                              "certificate": PEM}),
    "CertificateSummary": obj({"serial": {"type": "string"}, "subject": {"type": "string"},
                               "status": {"type": "string"}, "policy": OBJECT, "issued_at": DATE_TIME,
                               "not_after": DATE_TIME, "tee": {"type": "string"}}),
    "Anchor": ANCHOR,
    "PolicyVersion": POLICY_VERSION,
    "AttestationResult": obj({"ear": {"type": "string", "description": "EAR, a JWT (keys: /.well-known/jwks.json)"},
                              "appraisal": OBJECT, "policy": POLICY_REF}, {"ear_claims": OBJECT}),
    "InclusionProof": obj({"index": {"type": "integer"}, "size": {"type": "integer"}, "leaf_hash": B64,
                           "hashes": {"type": "array", "items": B64}}),
    "ConsistencyProof": obj({"from": {"type": "integer"}, "to": {"type": "integer"},
                             "hashes": {"type": "array", "items": B64}}),
}

# ---------------------------------------------------------------------------------------------------
# One entry per (route, method). Keys: parameters, body (media type -> schema, or "model" for the
# pydantic model in BODY_MODELS), body_required, ok ({status: (description, content)}), errors
# (the 4xx statuses beyond the ones every operation has), roles (bearer token), headers of success.

PEM_CHAIN = {"application/pem-certificate-chain": {"schema": PEM}}
OK_JSON = "ok"


def ok(schema: dict[str, Any], media: str = "application/json", status: str = "200",
       description: str = OK_JSON, headers: dict[str, Any] | None = None,
       links: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {status: {"description": description, "content": json_of(schema, media)}}
    if headers:
        out[status]["headers"] = headers
    if links:
        out[status]["links"] = links
    return out


def links(source: str, *targets: tuple[str, str]) -> dict[str, Any]:
    """OpenAPI links from a response to the operations that take its identifiers (``targets``:
    operation id, parameter name -> ``$response.body#/<field>``); schemathesis' stateful phase
    follows them."""
    fields = {"serial": "serial", "report_id": "id", "name": "name", "version": "version"}
    out: dict[str, Any] = {}
    for operation_id, params in targets:
        names = params.split(",")
        out[f"{source}_to_{operation_id}"] = {
            "operationId": operation_id,
            "parameters": {n: f"$response.body#/{fields[n]}" for n in names}}
    return out


CERTIFICATE_LINKS = links("issued", ("certificates_get_one_get", "serial"), ("certificates_get_proof_get", "serial"),
                          ("certificates_revoke_post", "serial"))
POLICY_LINKS = links("applied", ("policies_show_get", "name"), ("policies_show_version_get", "name,version"),
                     ("policies_activate_post", "name,version"), ("policies_retire_post", "name,version"),
                     ("policies_dry_run_post", "name"))

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/.well-known/jwks.json", "get"): {
        "ok": ok(obj({"keys": {"type": "array", "items": obj({"kty": {"type": "string"}})}}),
                 "application/jwk-set+json", description="the keys that verify EAR JWTs")},
    ("/healthz", "get"): {"ok": ok(obj({"status": {"const": "ok"}}), description="the process answers")},
    ("/readyz", "get"): {
        "ok": ok(obj({"status": {"enum": ["ready", "degraded"]}, "profile": {"type": "string"}},
                     {"degraded": {"type": "array"}}), description="ready, or degraded naming what is stuck")},
    ("/metrics", "get"): {"ok": ok({"type": "string"}, "text/plain", description="Prometheus text format")},
    ("/problems", "get"): {"ok": ok({"type": "string"}, "text/markdown", description="every problem code")},
    ("/problems/{code}", "get"): {
        "parameters": [path("code", text(SEGMENT), "a problem code")],
        "ok": ok(obj({"code": {"type": "string"}, "status": {"type": "integer"}, "title": {"type": "string"},
                      "list": {"type": "string"}}), description="one problem code"),
        "errors": ["404"]},
    ("/v1/openapi.json", "get"): {"ok": ok(OBJECT, description="this document")},
    ("/v1/challenges", "post"): {"ok": ok(ref("Challenge"), status="201", description="a single-use challenge")},
    ("/v1/certificates", "post"): {
        "body": "model",
        "ok": ok(ref("IssuedCertificate"), status="201", description="issued", links=CERTIFICATE_LINKS),
        "errors": ["403", "404", "409", "422"],
        "unavailable": "policy.changing: the policy's active version changed during each attempt to issue "
                       "(docs/adr/0008); the challenge is still usable"},
    ("/v1/certificates", "get"): {
        "description": "At least one of spki_sha256 and measurement (400 request.invalid without either).",
        "parameters": [query("spki_sha256", text(HEX_PATTERN, maxLength=256), "SHA-256 of a SubjectPublicKeyInfo, "
                             "lowercase hex"),
                       query("measurement", text(HEX_PATTERN, maxLength=256), "a register value of any evidence "
                             "item's EAR (MRTD, RTMRn, SNP measurement, MRENCLAVE), lowercase hex")],
        "ok": ok(obj({"certificates": {"type": "array", "items": ref("CertificateSummary")}}))},
    ("/v1/certificates/{serial}", "get"): {
        "parameters": [path("serial", text(SERIAL_PATTERN), "certificate serial, hex")],
        "ok": ok(ref("CertificateRecord")), "errors": ["404"]},
    ("/v1/certificates/{serial}/proof", "get"): {
        "parameters": [path("serial", text(SERIAL_PATTERN), "certificate serial, hex"),
                       query("size", integer(0, INT63), "a published checkpoint size (default: the latest)")],
        "ok": {"200": {"description": "the c2sp.org/tlog-proof@v1 bundle; with Accept: application/json, the "
                                      "bundle and the chain anchor that covers it",
                       "content": {"text/plain": {"schema": {"type": "string"}},
                                   "application/json": {"schema": obj({
                                       "serial": {"type": "string"}, "log_index": {"type": "integer"},
                                       "bundle": {"type": "string"}, "anchor": nullable(ANCHOR)})}}}},
        "errors": ["404"]},
    ("/v1/certificates/{serial}/revoke", "post"): {
        "parameters": [path("serial", text(SERIAL_PATTERN), "certificate serial, hex")],
        "body": {"application/json": {"schema": {
            "type": "object", "properties": {"reason": {"enum": list(REASONS), "default": "unspecified"}}}}},
        "roles": ["admin"],
        "ok": ok(obj({"serial": {"type": "string"}, "status": {"const": "revoked"}, "revoked_at": nullable(DATE_TIME),
                      "reason": nullable({"type": "string"}),
                      "loaders": {"type": "array", "items": obj({"serial": {"type": "string"},
                                                                  "status": {"type": "string"}})}}),
                 description="revoked (a CVM certificate's loaders with it)"),
        "errors": ["404", "409", "422"]},
    ("/v1/ca/chain", "get"): {"ok": {"200": {"description": "issuing CA then root, PEM", "content": PEM_CHAIN}}},
    ("/v1/ca/issuing.cer", "get"): {"ok": ok({"type": "string", "format": "binary"}, "application/pkix-cert",
                                             description="the issuing CA certificate, DER (AIA caIssuers)")},
    ("/v1/ca/crl", "get"): {"ok": ok({"type": "string", "format": "binary"}, "application/pkix-crl",
                                     description="the issuing CA's CRL, DER")},
    ("/v1/ca/root.crl", "get"): {"ok": ok({"type": "string", "format": "binary"}, "application/pkix-crl",
                                          description="the root's ARL, DER")},
    ("/v1/ca/sim-root.pem", "get"): {"ok": ok(PEM, "application/x-pem-file", description="insecure-dev only"),
                                     "errors": ["404"]},
    ("/v1/ca/attestation", "get"): {
        "parameters": [query("nonce", text("^[0-9a-fA-F]{64}$"), "32 bytes, hex", required=True)],
        "ok": ok(obj({"profile": {"type": "string"}, "type": {"type": "string"}, "evidence": B64,
                      "nonce": HEX64, "key": PEM, "collateral": {"type": "array", "items": B64},
                      "binding": {"type": "string"}})),
        "errors": ["422"], "unavailable": "ca.not_in_tee: a production CA outside a TEE has no evidence"},
    ("/v1/ocsp", "post"): {
        "body": {"application/ocsp-request": {"schema": {"type": "string", "format": "binary"}}},
        "ok": ok({"type": "string", "format": "binary"}, "application/ocsp-response",
                 description="an OCSP response (RFC 6960); malformedRequest for a request that is not one"),
        "errors": ["415"]},
    ("/v1/ocsp/{encoded}", "get"): {
        "parameters": [path("encoded", text(r"^[^\x00-\x1f]+$"),
                            "the url-encoding of base64(DER OCSPRequest) (RFC 6960 appendix A.1); the request "
                            "line is at most 4094 bytes (414 above)")],
        "ok": ok({"type": "string", "format": "binary"}, "application/ocsp-response",
                 description="an OCSP response (RFC 6960); malformedRequest for a request that is not one")},
    ("/v1/attestations", "post"): {"description": "At most one evidence item of each type (400 request.invalid).",
                                   "body": "model", "ok": ok(ref("AttestationResult"),
                                                             description="appraised; the EAR says the outcome"),
                                   "errors": ["403", "404", "409", "422"]},
    ("/v1/attestations/needs", "get"): {
        "parameters": [query("policy", POLICY_NAME, "a policy name", required=True)],
        "ok": ok(obj({"policy": POLICY_REF, "required": {"type": "array", "items": {"type": "string"}},
                      "items": OBJECT})),
        "errors": ["404", "409", "422"]},
    ("/v1/integrity-reports", "post"): {
        "body": "model",
        "ok": {code: {"description": desc, "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
                      "links": links("logged", ("integrity_get_report_get", "report_id")),
                      "content": json_of(obj({"id": {"type": "string", "format": "uuid"}, "sha256": HEX64,
                                              "log_index": {"type": "integer"}, "serial": {"type": "string"}}))}
               for code, desc in (("201", "logged"), ("200", "this report was already logged"))},
        "errors": ["403", "404", "409", "422"]},
    ("/v1/integrity-reports/{report_id}", "get"): {
        "parameters": [path("report_id", text(SEGMENT), "the report's id (a UUID)")],
        "ok": ok(obj({"id": {"type": "string"}, "sha256": HEX64, "serial": {"type": "string"},
                      "order_id": {"type": "string"}, "alg": {"type": "string"}, "issued_at": {"type": "string"},
                      "received_at": DATE_TIME, "log_index": {"type": "integer"}, "report": B64, "signature": B64,
                      "document": OBJECT, "proof": nullable({"type": "string"})})),
        "errors": ["404"]},
    ("/v1/log/checkpoint", "get"): {
        "ok": ok({"type": "string"}, "text/plain", description="the signed checkpoint (C2SP tlog-checkpoint)"),
        "errors": ["404"]},
    ("/v1/log/vkey", "get"): {"ok": ok({"type": "string"}, "text/plain", description="the log's note verifier key")},
    ("/v1/log/tile/{tile_path}", "get"): {
        "parameters": [path("tile_path", text(TILE_PATTERN), "<L>/<N>[.p/<W>] or entries/<N>[.p/<W>] "
                            "(C2SP tlog-tiles, canonical form only)")],
        "ok": ok({"type": "string", "format": "binary"}, "application/octet-stream",
                 description="a tile or an entry bundle"),
        "errors": ["404"]},
    ("/v1/log/entries/{index}", "get"): {
        "parameters": [path("index", integer(0, INT63), "a log index")],
        "ok": ok(obj({"index": {"type": "integer"}, "leaf_hash": B64, "leaf": B64})), "errors": ["404"]},
    ("/v1/log/proof/inclusion", "get"): {
        "parameters": [query("index", integer(0, INT63), "a log index", required=True),
                       query("size", integer(0, INT63), "a tree size", required=True)],
        "ok": ok(ref("InclusionProof"))},
    ("/v1/log/proof/consistency", "get"): {
        "parameters": [query("from", integer(0, INT63), "the older tree size", required=True),
                       query("to", integer(0, INT63), "the newer tree size", required=True)],
        "ok": ok(ref("ConsistencyProof"))},
    ("/v1/anchors", "get"): {
        "parameters": [query("limit", integer(1, 1000), "page size (default 100)"),
                       query("before", integer(0, INT63), "only anchors of a smaller tree size (paging)")],
        "ok": ok(obj({"anchors": {"type": "array", "items": ref("Anchor")}}))},
    ("/v1/anchors/latest", "get"): {"ok": ok(ref("Anchor")), "errors": ["404"]},
    ("/v1/audit", "get"): {
        "roles": ["admin", "auditor"],
        "parameters": [query("limit", integer(1, 500), "page size (default 100)"),
                       query("before_id", integer(0, INT63), "only events with a smaller id (paging)"),
                       query("action", text(), "only this action"), query("target", text(), "only this target")],
        "ok": ok(obj({"events": {"type": "array", "items": OBJECT}, "next_before_id": nullable({"type": "integer"})}))},
    ("/v1/policies", "get"): {"roles": ["admin", "auditor"],
                              "ok": ok(obj({"policies": {"type": "array", "items": POLICY_SUMMARY}}))},
    ("/v1/policies", "post"): {
        "roles": ["admin"],
        "parameters": [query("activate", {"enum": ["true", "false", "1", "0"]}, "activate the version at once")],
        "body": {media: {"schema": {"type": "string", "maxLength": 65536}} for media in
                 ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")}
        | {"application/json": {"schema": {"$ref": "#/components/schemas/PolicyDocument"}}},
        "ok": {code: {"description": desc, "links": POLICY_LINKS,
                      "content": json_of({"allOf": [ref("PolicyVersion"), obj({"created": {"type": "boolean"}})]})}
               for code, desc in (("201", "a new version"), ("200", "this document is a stored version"))},
        "errors": ["409", "422"]},
    ("/v1/policies/{name}", "get"): {
        "roles": ["admin", "auditor"], "parameters": [path("name", POLICY_NAME, "a policy name")],
        "ok": ok(POLICY_SUMMARY), "errors": ["404"]},
    ("/v1/policies/{name}/versions/{version}", "get"): {
        "roles": ["admin", "auditor"],
        "parameters": [path("name", POLICY_NAME, "a policy name"), path("version", integer(0, INT63), "a version")],
        "ok": ok(ref("PolicyVersion")), "errors": ["404"]},
    ("/v1/policies/{name}/diff", "get"): {
        "roles": ["admin", "auditor"],
        "parameters": [path("name", POLICY_NAME, "a policy name"),
                       query("from", integer(1, INT63), "the older version", required=True),
                       query("to", integer(1, INT63), "the newer version (default: the active one)")],
        "ok": ok(obj({"name": {"type": "string"}, "from": OBJECT, "to": OBJECT,
                      "changes": {"type": "array", "items": OBJECT}})),
        "errors": ["404", "409"]},
    ("/v1/policies/{name}/versions/{version}/activate", "post"): {
        "roles": ["admin"],
        "parameters": [path("name", POLICY_NAME, "a policy name"), path("version", integer(0, INT63), "a version")],
        "ok": ok(ref("PolicyVersion")), "errors": ["404", "409"]},
    ("/v1/policies/{name}/versions/{version}/retire", "post"): {
        "roles": ["admin"], "body": "model", "body_required": False,
        "parameters": [path("name", POLICY_NAME, "a policy name"), path("version", integer(0, INT63), "a version")],
        "ok": ok(obj({"name": {"type": "string"}, "version": {"type": "integer"}, "digest": HEX64,
                      "retired_at": nullable(DATE_TIME), "revoked": {"type": "array", "items": {"type": "string"}}})),
        "errors": ["404", "409", "415", "422"]},
    ("/v1/policies/{name}/dry-run", "post"): {
        "roles": ["admin"], "body": "model", "body_required": False,
        "parameters": [path("name", POLICY_NAME, "a policy name")],
        "ok": ok(obj({"policy": {"type": "string"}, "candidate": OBJECT})),
        "errors": ["404", "409", "415", "422"]},
}
