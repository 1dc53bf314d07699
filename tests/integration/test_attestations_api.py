"""POST /v1/attestations: a signed EAR (JWT) a stock library verifies against the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

import jwt
import pytest

from ca_service.evidence.sim.attester import SimMeasurements
from ca_service.services import policies


def _evidence(sim_tee, report_data: bytes, **m) -> str:
    return base64.b64encode(sim_tee.report(report_data, SimMeasurements(**m) if m else None)).decode()


def _jwks(client) -> dict:
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200 and resp.mimetype == "application/jwk-set+json"
    assert "max-age" in resp.headers["Cache-Control"]
    return resp.get_json()


def _verify(client, token: str) -> dict:
    """What a relying party does with PyJWT alone: pick the key by kid from the JWKS, verify ES256."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    jwk_set = jwt.PyJWKSet.from_dict(_jwks(client))
    key = next(k for k in jwk_set.keys if k.key_id == header["kid"])
    return jwt.decode(token, key=key.key, algorithms=["ES256"])


def test_affirming_result_with_nonce(client, sim_tee):
    nonce = os.urandom(32)
    resp = client.post("/v1/attestations", json={
        "policy": "sim", "evidence": [{"type": "sim", "data": _evidence(sim_tee, nonce), "eat_nonce": nonce.hex()}]})
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    claims = _verify(client, out["ear"])
    assert claims == out["ear_claims"]
    assert claims["eat_profile"] == "tag:ietf.org,2026:rats/ear#03"
    assert isinstance(claims["iat"], int) and claims["ear.verifier-id"]["developer"] == "ca-service"
    sub = claims["submods"]["sim"]
    assert sub["eat_nonce"] == nonce.hex()
    assert sub["ear.appraisal-policy-id"] == out["policy"]["id"]
    tv = sub["ear.trustworthiness-vector"]
    assert tv["instance-identity"] == 2 and tv["executables"] == 2 and tv["configuration"] == 2
    assert tv["hardware"] == 32  # the sim TEE is not hardware: a warning, never affirming
    assert sub["ear.status"] == "warning" and claims["ear.status"] == "warning"
    assert out["appraisal"]["passed"] is True


def test_top_level_nonce(client, sim_tee):
    nonce = os.urandom(16)
    resp = client.post("/v1/attestations", json={
        "policy": "sim", "eat_nonce": nonce.hex(),
        "evidence": [{"type": "sim", "data": _evidence(sim_tee, nonce + b"\x01" * 48)}]})
    claims = _verify(client, resp.get_json()["ear"])
    assert claims["eat_nonce"] == nonce.hex() and "eat_nonce" not in claims["submods"]["sim"]


def test_without_nonce_instance_identity_is_not_claimed(client, sim_tee):
    resp = client.post("/v1/attestations", json={
        "policy": "sim", "evidence": [{"type": "sim", "data": _evidence(sim_tee, b"\0" * 64)}]})
    claims = _verify(client, resp.get_json()["ear"])
    assert "eat_nonce" not in claims
    assert "instance-identity" not in claims["submods"]["sim"]["ear.trustworthiness-vector"]


def test_failed_appraisal_is_a_signed_contraindicated_result(client, sim_tee):
    resp = client.post("/v1/attestations", json={
        "policy": "sim", "evidence": [{"type": "sim", "data": _evidence(sim_tee, b"\0" * 64, mrtd=b"\x22" * 48)}]})
    assert resp.status_code == 200
    out = resp.get_json()
    claims = _verify(client, out["ear"])
    assert claims["ear.status"] == "contraindicated"
    assert claims["submods"]["sim"]["ear.trustworthiness-vector"]["executables"] == 96
    failed = [c for c in out["appraisal"]["checks"] if not c["passed"]]
    assert [(c["claim"], c["actual"]) for c in failed] == [("mrtd", "22" * 48)]


def test_refusals(client, sim_tee):
    nonce = os.urandom(32)
    ev = _evidence(sim_tee, os.urandom(64))
    r = client.post("/v1/attestations", json={"policy": "sim",
                                              "evidence": [{"type": "sim", "data": ev, "eat_nonce": nonce.hex()}]})
    assert r.status_code == 422 and r.get_json()["code"] == "evidence.report_data_mismatch"
    r = client.post("/v1/attestations", json={"policy": "sim",
                                              "evidence": [{"type": "sim", "data": ev, "eat_nonce": "00"}]})
    assert r.status_code == 422 and r.get_json()["code"] == "request.schema"
    tampered = bytearray(base64.b64decode(ev))
    tampered[100] ^= 1
    r = client.post("/v1/attestations", json={"policy": "sim", "evidence": [
        {"type": "sim", "data": base64.b64encode(bytes(tampered)).decode()}]})
    assert r.status_code in (400, 422) and r.get_json()["code"].startswith("evidence.")
    r = client.post("/v1/attestations", json={"policy": "nope", "evidence": [{"type": "sim", "data": ev}]})
    assert r.status_code == 404 and r.get_json()["code"] == "policy.not_found"
    r = client.post("/v1/attestations", json={"policy": "sim", "evidence": [{"type": "sim", "data": ev}] * 2})
    assert r.status_code == 400


def test_tampered_jwt_does_not_verify(client, sim_tee):
    out = client.post("/v1/attestations", json={
        "policy": "sim", "evidence": [{"type": "sim", "data": _evidence(sim_tee, b"\0" * 64)}]}).get_json()
    head, payload, sig = out["ear"].split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["ear.status"] = "affirming"
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode(), sig])
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(client, forged)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(out["ear"], key="secret", algorithms=["HS256"])


def test_kid_is_the_rfc7638_thumbprint(client):
    (key,) = _jwks(client)["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and "d" not in key
    members = json.dumps({k: key[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    thumb = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()
    assert key["kid"] == thumb


def test_inactive_policy(client, services, sim_tee):
    name = f"inactive-{uuid.uuid4().hex[:6]}"
    policies.apply_policy(services, f"""
name: {name}
evidence: {{required: [sim], sim: {{debug: false}}}}
certificate: {{max_lifetime: 1h}}
""", actor="test")
    r = client.post("/v1/attestations", json={"policy": name, "evidence": [
        {"type": "sim", "data": _evidence(sim_tee, b"\0" * 64)}]})
    assert r.status_code == 409 and r.get_json()["code"] == "policy.inactive"
