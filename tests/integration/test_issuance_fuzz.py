"""Fuzz the two POST routes: whatever arrives, a 4xx problem+json naming the check, no certificate
gained, and the service keeps serving."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Issuer, certificate_count

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
FIELDS = ("challenge_id", "csr", "policy", "evidence", "lifetime_seconds")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def _assert_problem(resp) -> dict:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert isinstance(body["code"], str) and body["code"]
    assert body["status"] == resp.status_code
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes(app, services, raw):
    client = app.test_client()
    before = certificate_count(services)
    for path in ("/v1/certificates", "/v1/challenges"):
        resp = client.post(path, data=raw, content_type="application/json")
        if path == "/v1/challenges":
            assert resp.status_code in (201,)  # challenges take no body
            continue
        _assert_problem(resp)
    assert certificate_count(services) == before


@FUZZ
@given(doc=JSON)
def test_random_json(app, services, doc):
    client = app.test_client()
    before = certificate_count(services)
    _assert_problem(client.post("/v1/certificates", data=json.dumps(doc), content_type="application/json"))
    assert certificate_count(services) == before


@FUZZ
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_one_field_replaced(app, services, sim_tee, field, value):
    client = app.test_client()
    body, _ = Issuer(client, sim_tee).body()
    body[field] = value
    before = certificate_count(services)
    resp = client.post("/v1/certificates", json=body)
    if resp.status_code == 201:  # only a value that is still valid may pass (e.g. a fitting lifetime)
        assert field == "lifetime_seconds"
        assert value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 86400)
        return
    _assert_problem(resp)
    assert certificate_count(services) == before


@FUZZ
@given(data=st.data())
def test_mangled_evidence_and_csr(app, services, sim_tee, data):
    client = app.test_client()
    body, _ = Issuer(client, sim_tee).body()
    target = data.draw(st.sampled_from(["evidence", "csr", "b64", "type"]))
    if target == "evidence":
        raw = bytearray(base64.b64decode(body["evidence"][0]["data"]))
        # draws must not depend on the (random) request, or hypothesis cannot replay them
        i = data.draw(st.integers(0, 10**6)) % len(raw)
        raw[i] ^= data.draw(st.integers(1, 255))
        cut = 1 + data.draw(st.integers(0, 10**6)) % len(raw)
        body["evidence"][0]["data"] = base64.b64encode(bytes(raw[:cut])).decode()
    elif target == "csr":
        csr = body["csr"]
        i = data.draw(st.integers(0, 10**6)) % len(csr)
        body["csr"] = csr[:i] + data.draw(st.text(min_size=1, max_size=5)) + csr[i + 1:]
    elif target == "b64":
        body["evidence"][0]["data"] = data.draw(st.text(min_size=1, max_size=50))
    else:
        body["evidence"][0]["type"] = data.draw(st.text(max_size=40))
    before = certificate_count(services)
    resp = client.post("/v1/certificates", json=body)
    if resp.status_code == 201:
        # a mutation may leave the request valid (e.g. a changed PEM line break, truncation to the
        # same bytes); then it must be a real, correctly bound certificate
        assert target in ("csr", "evidence", "b64")
        return
    p = _assert_problem(resp)
    assert p["code"].split(".")[0] in {"request", "csr", "evidence", "binding", "challenge"}, p
    assert certificate_count(services) == before


def test_service_still_serves(client):
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/challenges").status_code == 201
