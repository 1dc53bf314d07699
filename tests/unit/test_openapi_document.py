"""The OpenAPI document states what the server enforces (issue 16): the base64 grammar the server
decodes is exactly the pattern the document gives; every route has its entry in the operations
table and no entry is stale; the document is valid OpenAPI 3.1 with every $ref resolving."""

from __future__ import annotations

import itertools
import re
import tempfile
import warnings
from pathlib import Path

import pytest

from ca_service.api.schemas import B64_PATTERN, b64decode_strict


def _decodes(value: str) -> bool:
    try:
        b64decode_strict(value, "x")
    except ValueError:
        return False
    return True


def test_base64_refusals_are_exactly_the_documented_pattern():
    # every string of up to 6 characters over an alphabet that has each kind of character the
    # grammar cares about: data, '+', '/', '=', URL-safe '-', whitespace and a stray byte
    pattern = re.compile(B64_PATTERN)
    seen = {True: 0, False: 0}
    for length in range(7):
        for chars in itertools.product("Ab+/=-\n", repeat=length):
            value = "".join(chars)
            documented = pattern.fullmatch(value) is not None
            assert _decodes(value) == documented, repr(value)
            seen[documented] += 1
    assert seen[True] == 337 and seen[False] > 100_000


@pytest.mark.parametrize(("value", "ok"), [
    ("", True), ("AA==", True), ("AAA=", True), ("AAAA", True), ("AB==", True),
    ("AAAA=", False), ("AAAA==", False), ("AAAA====", False),  # Python's decoder alone takes these three
    ("AA", False), ("AA=", False), ("A===", False), ("AA==AA==", False), ("AA-_", False), ("AA AA", False),
])
def test_base64_edges(value, ok):
    assert _decodes(value) is ok


@pytest.fixture(scope="module")
def app():
    from ca_service.api.app import create_app
    from ca_service.config import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_app(Settings(home=Path(tempfile.mkdtemp()), profile="insecure-dev"))


def test_every_route_has_an_entry_and_no_entry_is_stale(app):
    from ca_service.api.openapi_ops import OPERATIONS
    from ca_service.api.v1.openapi import api_routes

    routes = set(api_routes(app))
    assert routes - set(OPERATIONS) == set(), "describe these routes in ca_service/api/openapi_ops.py"
    assert set(OPERATIONS) - routes == set(), "these entries of ca_service/api/openapi_ops.py have no route"


def test_document_is_valid_openapi_and_every_ref_resolves(app):
    import jsonschema_rs

    from ca_service.api.v1.openapi import build_document

    doc = build_document(app)
    refs = set(re.findall(r'"\$ref": "(#[^"]+)"', __import__("json").dumps(doc)))
    for ref in refs:
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref
    # every schema is a valid JSON Schema 2020-12 document
    for name in doc["components"]["schemas"]:
        jsonschema_rs.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"})
    # what each operation lists: a success, the common refusals, auth where a role is needed
    for route, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            assert any(s.startswith("2") for s in statuses) and {"400", "503"} <= statuses, (method, route)
            if op.get("security"):
                assert {"401", "403"} <= statuses, (method, route)
            if "requestBody" in op:
                assert {"413", "415"} <= statuses, (method, route)
            for param in op.get("parameters", []):
                schema = param["schema"]
                assert schema.get("type") == "integer" or "pattern" in schema or "enum" in schema, \
                    (method, route, param["name"], "a string parameter states what it refuses")
