"""Real TDX and SNP evidence through the HTTP API (POST /v1/attestations), the way a relying party
sends it: refused "now" (its collateral expired long ago), appraised as of the vector's time when the
service's injected clock says so (the designed way to re-check recorded evidence)."""

from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest

from ca_service.api.app import create_app
from ca_service.clock import FixedClock
from ca_service.services import policies
from ca_service.services.container import Services
from tests.conftest import make_settings
from tests.vectors.manifest import vectors_for

REPO = Path(__file__).resolve().parents[2]
TDX = {v.path: v for v in vectors_for("tdx")}["tdx/dcapqvl-v4-uptodate"]


def _body(v, policy="tdx-cvm"):
    return {"policy": policy, "evidence": [{"type": "tdx-quote", "data": base64.b64encode(v.read("quote")).decode(),
                                            "collateral": [base64.b64encode(v.read("collateral")).decode()]}]}


@pytest.fixture(scope="module")
def own_settings(tmp_path_factory, db_url_factory):
    """A CA of this module's own, not the session's: that one's collateral cache holds what other modules
    sent it and only moves forward (test_eventlog_api leaves a newer TCB info for this quote's FMSPC,
    b0c06f000000, not yet issued at this vector's time), so whether such a module had run first in the
    same xdist worker decided the outcome (422 evidence.collateral_missing)."""
    from ca_service.services.bootstrap import init_ca

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory())
    init_ca(settings)
    return settings


@pytest.fixture(scope="module")
def own_services(own_settings):
    svc = Services.create(own_settings)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def with_tdx_policy(own_services):
    ref, _ = policies.apply_policy(own_services, (REPO / "policies" / "tdx-cvm.yaml").read_text(), actor="test")
    policies.activate(own_services, "tdx-cvm", ref.version, actor="test")
    return ref


def test_real_quote_now_is_refused_as_expired(own_services, with_tdx_policy):
    r = create_app(services=own_services).test_client().post("/v1/attestations", json=_body(TDX))
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["code"] == "evidence.collateral_expired"


def test_real_quote_as_of_its_time(own_settings, with_tdx_policy):
    svc = Services.create(own_settings, clock=FixedClock(TDX.verify_time))
    try:
        client = create_app(services=svc).test_client()
        r = client.post("/v1/attestations", json=_body(TDX))
        assert r.status_code == 200, r.get_json()
        out = r.get_json()
        assert out["appraisal"]["passed"] is True, [c for c in out["appraisal"]["checks"] if not c["passed"]]
        claims = out["ear_claims"]
        sub = claims["submods"]["tdx-quote"]
        assert sub["ear.status"] == "affirming"
        assert sub["ca-service.tcb-status"] == "UpToDate"
        # the EAR JWT verifies with a stock JWT library against the published JWKS
        jwks = client.get("/.well-known/jwks.json").get_json()
        header = jwt.get_unverified_header(out["ear"])
        key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
        decoded = jwt.decode(out["ear"], key=jwt.PyJWK(key).key, algorithms=["ES256"],
                             options={"verify_iat": False, "verify_exp": False})
        assert decoded["submods"]["tdx-quote"]["ear.status"] == "affirming"
        # one flipped byte in the quote's signed body: refused, item by item
        raw = bytearray(TDX.read("quote"))
        raw[200] ^= 1
        body = _body(TDX)
        body["evidence"][0]["data"] = base64.b64encode(bytes(raw)).decode()
        bad = client.post("/v1/attestations", json=body)
        assert bad.status_code == 422 and bad.get_json()["code"] == "evidence.signature_invalid"
    finally:
        svc.close()


def test_real_quote_fails_a_policy_it_does_not_meet(own_settings, own_services):
    doc = (REPO / "policies" / "tdx-cvm.yaml").read_text().replace("name: tdx-cvm", "name: tdx-strict").replace(
        "min_tcb_evaluation_data_number: 17", "min_tcb_evaluation_data_number: 99")
    ref, _ = policies.apply_policy(own_services, doc, actor="test")
    policies.activate(own_services, "tdx-strict", ref.version, actor="test")
    svc = Services.create(own_settings, clock=FixedClock(TDX.verify_time))
    try:
        r = create_app(services=svc).test_client().post("/v1/attestations", json=_body(TDX, "tdx-strict"))
        out = r.get_json()
        failed = [c for c in out["appraisal"]["checks"] if not c["passed"]]
        assert [c["claim"] for c in failed] == ["min_tcb_evaluation_data_number"]
        assert failed[0]["expected"] == 99 and failed[0]["actual"] == 17
        assert out["ear_claims"]["ear.status"] == "contraindicated"
    finally:
        svc.close()
