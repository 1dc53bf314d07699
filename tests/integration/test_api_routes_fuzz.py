"""Every route in the app's route table, with hostile path values, query strings and bodies, with and
without an admin token: never a 5xx, every refusal RFC 9457 problem+json with a stable code."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.services import tokens

SEGMENT = st.one_of(
    st.sampled_from(["0", "-1", "1", "x", "ffff", "99999999999999999999999", "00" * 40, "..", "%00", "a" * 300,
                     "tile/0/000", "x001/002", "entries/000", "0.p/3", str(uuid.uuid4())]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1,
            max_size=20),
)
QUERY = st.dictionaries(st.sampled_from(["index", "size", "from", "to", "nonce", "limit", "before", "version"]),
                        st.one_of(st.integers(-2**70, 2**70).map(str), st.text(max_size=10)), max_size=3)
BODY = st.one_of(st.none(), st.binary(max_size=64),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                              max_leaves=8))


def _routes(app):
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method))
    return sorted(out)


@pytest.fixture(scope="module")
def admin_header(services):
    t = tokens.create_token(services, role="admin", name=f"fuzz-{uuid.uuid4().hex[:6]}", expires_in=None,
                            actor="test")
    return {"Authorization": f"Bearer {t.secret}"}


def _check(resp, route):
    assert resp.status_code < 500, (route, resp.status_code, resp.get_data(as_text=True)[:300])
    if resp.status_code >= 400 and resp.mimetype == "text/html" and not route[1].startswith("/v1"):
        # the explorer's HTML pages answer errors with an HTML page, under the same CSP
        assert resp.mimetype == "text/html" and "default-src 'none'" in resp.headers["Content-Security-Policy"]
    elif resp.status_code >= 400:
        assert resp.mimetype == "application/problem+json", (route, resp.mimetype)
        body = resp.get_json()
        assert body["status"] == resp.status_code and re.fullmatch(r"[a-z_.]+", body["code"]), body


def test_route_table_is_covered(app):
    routes = _routes(app)
    assert len(routes) >= 35  # the whole API, not a sample


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_any_route_any_input(app, admin_header, data):
    client = app.test_client()
    route, method = data.draw(st.sampled_from(_routes(app)))
    path = re.sub(r"<(?:[a-z]+:)?[a-z_]+>", lambda _: data.draw(SEGMENT), route)
    query = data.draw(QUERY)
    body = data.draw(BODY)
    headers = admin_header if data.draw(st.booleans()) else {}
    kwargs = {"query_string": query, "headers": headers}
    if isinstance(body, bytes):
        kwargs["data"] = body
        kwargs["content_type"] = data.draw(st.sampled_from(["application/json", "application/ocsp-request",
                                                            "text/plain", "application/yaml"]))
    elif body is not None:
        kwargs["json"] = body
    if "/revoke" in route or route.endswith("/retire"):
        kwargs["headers"] = {}  # state changes only through their own tests
    resp = client.open(path, method=method, **kwargs)
    _check(resp, (method, route, path))
