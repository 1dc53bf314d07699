"""schemathesis hooks for the run in tests/integration/test_schemathesis.py (SCHEMATHESIS_HOOKS).

- ``no_form_refusal_of_valid_data``: the other half of drift. A request that the document calls valid
  must never be refused *for its form* (a code in FORM_CODES): that would be a constraint the server
  enforces and the document does not state. The built-in ``positive_data_acceptance`` cannot tell a
  refusal of form from one of content: schema-valid evidence is still no TDX quote and a schema-valid
  CSR no CSR, and such refusals (``evidence.*``, ``csr.*``, ``challenge.unknown``) are right.
  "Valid by the document" is checked here, against the document itself: schemathesis' coverage phase
  labels some values positive that are not (a near-boundary length string ignores the field's
  pattern: 343 characters of a base64 field whose pattern takes whole quanta only).
- a serializer for ``application/ocsp-request`` (the bytes as they are).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import schemathesis

# the codes that say "this request is malformed"; every other 4xx is about its content or state
FORM_CODES = frozenset({
    "request.invalid", "request.schema", "request.malformed_json", "request.unsupported_media_type",
    "request.invalid_value", "request.bad_request", "request.error", "log.tile_path_invalid",
})

# What OpenAPI cannot state, per operation: (code, start of the detail) -> why. A named set, not a
# blanket skip: only these refusals of these operations are excused.
UNSTATABLE: dict[tuple[str, str], dict[tuple[str, str], str]] = {
    ("GET", "/v1/certificates"): {
        ("request.invalid", "give spki_sha256 or measurement"):
            "at least one of two optional query parameters: OpenAPI parameters have no anyOf"},
    ("POST", "/v1/policies/{name}/dry-run"): {
        ("request.invalid", "the candidate document is policy"):
            "a body field (the document's name) equal to a path parameter: JSON Schema cannot compare the two"},
    ("POST", "/v1/attestations"): {
        ("request.invalid", "at most one evidence item of each type"):
            "unique by a property of the items: JSON Schema's uniqueItems compares whole items"},
}

_DOC = json.loads(Path(os.environ.get("CA_SERVICE_ST_DOCUMENT", Path(__file__).resolve().parents[3] / "docs"
                                      / "openapi.json")).read_text())


def _pointer(*parts: str) -> str:
    """A JSON pointer as a URI fragment (RFC 6901 section 6): "{" of a path template is percent-encoded."""
    return "#/" + "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


def _valid(schema_pointer: str, value: Any) -> bool:
    # jsonschema_rs: ECMA-262 patterns as JSON Schema means them (Python's re.search lets "$" match
    # before a trailing newline, and hypothesis generates such strings for "^...$")
    return bool(jsonschema_rs.Draft202012Validator({**_DOC, "$ref": schema_pointer}).is_valid(value))


def _integer_or_text(value: Any) -> Any:
    try:
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value
    except ValueError:
        return value


def valid_by_document(case: Any) -> bool:
    """Whether every parameter and the body of ``case`` match the served document."""
    route, method = case.operation.path, case.method.lower()
    op = _DOC["paths"][route][method]
    given = {"path": case.path_parameters or {}, "query": case.query or {}}
    for i, param in enumerate(op.get("parameters", [])):
        values = given.get(param["in"], {})
        if param["name"] not in values:
            if param.get("required"):
                return False
            continue
        value = values[param["name"]]
        if param["schema"].get("type") == "integer":
            value = _integer_or_text(value)
        if not _valid(_pointer("paths", route, method, "parameters", str(i), "schema"), value):
            return False
    body = op.get("requestBody")
    if body is not None and case.media_type and case.media_type.endswith("json"):
        pointer = _pointer("paths", route, method, "requestBody", "content", case.media_type, "schema")
        if not _valid(pointer, case.body):
            return False
    return True


def _problem(response: Any) -> dict[str, Any] | None:
    if "application/problem+json" not in ";".join(response.headers.get("content-type", [])):
        return None
    try:
        doc = json.loads(response.content)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


@schemathesis.check
def no_form_refusal_of_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not 400 <= response.status_code < 500:
        return None
    doc = _problem(response)
    code, detail = (doc.get("code"), str(doc.get("detail", ""))) if doc else (None, "")
    if code not in FORM_CODES:
        return None
    excused = UNSTATABLE.get((case.method.upper(), case.operation.path), {})
    if any(code == c and detail.startswith(d) for c, d in excused):
        return None
    if not valid_by_document(case):
        return None  # labelled positive, but the document refuses it too
    raise AssertionError(f"a request valid by the document was refused for its form: {response.status_code} "
                         f"{code}: {detail}")


@schemathesis.serializer("application/ocsp-request")
def ocsp_request(ctx: Any, value: Any) -> bytes:
    """The body as bytes (RFC 6960 appendix A.1: a DER OCSPRequest)."""
    from schemathesis.transport.serialization import serialize_binary

    return serialize_binary(value)
