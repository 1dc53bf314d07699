"""Flow 1 over the Flask app on a real database: success, and every refusal leaves no certificate."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.ca.profile import ID_PE_CMW, ear_from_certificate
from ca_service.evidence.sim.attester import SimMeasurements
from tests.conftest import certificate_count


def _problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def test_issue_and_read_back(issuer, client, services, tmp_path: Path):
    resp = issuer.issue(dns=("trainer.cvm.local",))
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    chain = x509.load_pem_x509_certificates(out["certificate_chain"].encode())
    assert len(chain) == 2
    leaf, issuing = chain
    assert format(leaf.serial_number, "x") == out["serial"]
    assert out["policy"]["name"] == "sim" and len(out["policy"]["digest"]) == 64
    assert isinstance(out["log_index"], int)
    # extension: non-critical id-pe-cmw holding the EAR that the response also returns
    ext = leaf.extensions.get_extension_for_oid(ID_PE_CMW)
    assert ext.critical is False
    ear = ear_from_certificate(leaf)
    assert ear == out["ear"]
    assert ear["eat_profile"] == "tag:ietf.org,2026:rats/ear#03"
    assert ear["ca-service.log-index"] == out["log_index"]
    assert ear["submods"]["sim"]["ear.appraisal-policy-id"] == f"urn:ca-service:policy:sim@{out['policy']['version']}#sha256:{out['policy']['digest']}"
    # profile
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["trainer.cvm.local"]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() <= 24 * 3600 + 300
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    # read back
    got = client.get(f"/v1/certificates/{out['serial']}")
    assert got.status_code == 200
    rec = got.get_json()
    assert rec["status"] == "valid" and rec["log_index"] == out["log_index"]
    assert rec["evidence"][0]["type"] == "sim"
    # openssl verifies what the agent would save
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    root_pem = services.keys.certificate("root").public_bytes(Encoding.PEM)
    (tmp_path / "root.pem").write_bytes(root_pem)
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    p = subprocess.run(["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "issuing.pem", "leaf.pem"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "leaf.pem: OK" in p.stdout


def test_ca_chain_and_health(client):
    resp = client.get("/v1/ca/chain")
    assert resp.status_code == 200
    certs = x509.load_pem_x509_certificates(resp.data)
    assert len(certs) == 2
    assert certs[0].issuer == certs[1].subject
    assert client.get("/healthz").get_json() == {"status": "ok"}
    # "degraded" when this session's log waited long for a checkpoint (no publisher runs in-process)
    assert client.get("/readyz").get_json()["status"] in ("ready", "degraded")


@pytest.mark.parametrize("make_key,ok", [
    (lambda: ec.generate_private_key(ec.SECP384R1()), True),
    (lambda: ed25519.Ed25519PrivateKey.generate(), True),
    (lambda: ec.generate_private_key(ec.SECP521R1()), False),
    (lambda: rsa.generate_private_key(65537, 2048), False),
])
def test_key_types(issuer, services, make_key, ok):
    before = certificate_count(services)
    resp = issuer.issue(key=make_key())
    if ok:
        assert resp.status_code == 201, resp.get_json()
    else:
        _problem(resp, 400, "csr.key_type_not_allowed")
        assert certificate_count(services) == before


def test_challenge_is_single_use(issuer, client, services):
    body, _ = issuer.body()
    assert client.post("/v1/certificates", json=body).status_code == 201
    before = certificate_count(services)
    _problem(client.post("/v1/certificates", json=body), 409, "challenge.consumed")
    assert certificate_count(services) == before


def test_unknown_and_expired_challenges(issuer, client, services):
    from datetime import timedelta

    from sqlalchemy import update

    from ca_service.db.models import Challenge

    body, _ = issuer.body(challenge={"id": "00000000-0000-4000-8000-000000000000", "nonce": "00" * 32})
    _problem(client.post("/v1/certificates", json=body), 400, "challenge.unknown")
    body, _ = issuer.body(challenge={"id": "not-a-uuid", "nonce": "00" * 32})
    _problem(client.post("/v1/certificates", json=body), 400, "challenge.unknown")
    ch = issuer.challenge()
    with services.db.transaction() as s:
        s.execute(update(Challenge).where(Challenge.id == ch["id"]).values(
            expires_at=services.clock.now() - timedelta(seconds=1)))
    body, _ = issuer.body(challenge=ch)
    _problem(client.post("/v1/certificates", json=body), 400, "challenge.expired")


def test_binding_must_match_key_and_nonce(issuer, client, services):
    from ca_service.crypto.keys import spki_der
    from ca_service.evidence.binding import binding_value

    before = certificate_count(services)
    other = ec.generate_private_key(ec.SECP256R1())
    ch = issuer.challenge()
    body, _ = issuer.body(challenge=ch, report_data=binding_value(bytes.fromhex(ch["nonce"]), spki_der(other.public_key())))
    _problem(client.post("/v1/certificates", json=body), 422, "binding.mismatch")
    ch = issuer.challenge()
    key = ec.generate_private_key(ec.SECP256R1())
    body, _ = issuer.body(challenge=ch, key=key, report_data=binding_value(b"\x00" * 32, spki_der(key.public_key())))
    _problem(client.post("/v1/certificates", json=body), 422, "binding.mismatch")
    assert certificate_count(services) == before


def test_appraisal_failure_lists_checks(issuer, client, services, sim_tee):
    from ca_service.crypto.keys import spki_der
    from ca_service.evidence.binding import binding_value

    before = certificate_count(services)
    ch = issuer.challenge()
    key = ec.generate_private_key(ec.SECP256R1())
    rd = binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key()))
    ev = sim_tee.report(rd, SimMeasurements(mrtd=b"\x11" * 48))
    body, _ = issuer.body(challenge=ch, key=key, evidence=ev)
    p = _problem(client.post("/v1/certificates", json=body), 403, "appraisal.failed")
    failed = p["failed_checks"]
    assert [c["claim"] for c in failed] == ["mrtd"]
    assert failed[0]["actual"] == "11" * 48 and failed[0]["passed"] is False
    assert certificate_count(services) == before


def test_debug_td_refused(issuer, client, sim_tee):
    from ca_service.crypto.keys import spki_der
    from ca_service.evidence.binding import binding_value

    ch = issuer.challenge()
    key = ec.generate_private_key(ec.SECP256R1())
    ev = sim_tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())), SimMeasurements(debug=True))
    body, _ = issuer.body(challenge=ch, key=key, evidence=ev)
    _problem(client.post("/v1/certificates", json=body), 422, "evidence.debug_enabled")


def test_san_outside_policy_refused(issuer, client):
    p = _problem(issuer.issue(dns=("evil.example.com",)), 403, "certificate.refused")
    assert p["check"] == "san.dns"
    _problem(issuer.issue(dns=("a.b.cvm.local",)), 403, "certificate.refused")


def test_unknown_policy_and_type(issuer, client):
    _problem(issuer.issue(policy="nope"), 404, "policy.not_found")
    # the refusal used the challenge up: the same challenge with the right policy is refused
    ch = issuer.challenge()
    body, _ = issuer.body(policy="nope", challenge=ch)
    _problem(client.post("/v1/certificates", json=body), 404, "policy.not_found")
    body, _ = issuer.body(challenge=ch)
    _problem(client.post("/v1/certificates", json=body), 409, "challenge.consumed")
    body, _ = issuer.body()
    body["evidence"][0]["type"] = "quantum-tee"
    _problem(client.post("/v1/certificates", json=body), 400, "evidence.type_unknown")


def test_tampered_evidence_refused(issuer, client, services):
    before = certificate_count(services)
    body, _ = issuer.body()
    raw = bytearray(base64.b64decode(body["evidence"][0]["data"]))
    raw[100] ^= 1
    body["evidence"][0]["data"] = base64.b64encode(bytes(raw)).decode()
    _problem(client.post("/v1/certificates", json=body), 422, "evidence.signature_invalid")
    assert certificate_count(services) == before


def test_csr_with_wrong_signature(issuer, client):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: F401

    body, _ = issuer.body()
    pem = body["csr"].encode()
    der = x509.load_pem_x509_csr(pem).public_bytes(Encoding.DER)
    bad = bytearray(der)
    bad[-3] ^= 0x01  # inside the signature value
    import textwrap
    b64 = base64.b64encode(bytes(bad)).decode()
    body["csr"] = "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(textwrap.wrap(b64, 64)) + "\n-----END CERTIFICATE REQUEST-----\n"
    resp = client.post("/v1/certificates", json=body)
    assert resp.status_code == 400
    assert resp.get_json()["code"] in ("csr.signature_invalid", "csr.malformed")
    body["csr"] = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    _problem(client.post("/v1/certificates", json=body), 400, "csr.malformed")


def test_http_level_problems(client, app):
    _problem(client.get("/v1/nothing-here"), 404, "not_found")
    r = _problem(client.delete("/v1/certificates"), 405, "request.method_not_allowed")
    assert r["title"]
    _problem(client.post("/v1/certificates", data="{", content_type="application/json"), 400, "request.malformed_json")
    _problem(client.post("/v1/certificates", data="a=b", content_type="application/x-www-form-urlencoded"), 415,
             "request.unsupported_media_type")
    big = b"{" + b" " * (app.config["MAX_CONTENT_LENGTH"] + 10) + b"}"
    _problem(client.post("/v1/certificates", data=big, content_type="application/json"), 413, "request.too_large")
    _problem(client.post("/v1/certificates", json=[1, 2]), 422, "request.schema")
    _problem(client.post("/v1/certificates", json={"challenge_id": 5}), 422, "request.schema")
    _problem(client.get("/v1/certificates/zz-not-hex"), 404, "not_found")


def test_bad_base64(issuer, client):
    body, _ = issuer.body()
    body["evidence"][0]["data"] = "!!!not base64!!!"
    p = _problem(client.post("/v1/certificates", json=body), 422, "request.schema")
    assert "base64" in p["detail"]


def test_sim_refused_in_production_profile(tmp_path, db_url_factory, sim_tee):
    """A production CA refuses sim evidence whatever a policy says."""
    from ca_service.api.app import create_app
    from ca_service.services import policies
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import Issuer, make_settings

    settings = make_settings(tmp_path, db_url_factory(), profile="production")
    init_ca(settings)
    svc = Services.create(settings)
    try:
        ref, _ = policies.apply_policy(svc, Path("policies/sim.yaml").read_text(), actor="test")
        policies.activate(svc, "sim", ref.version, actor="test")
        iss = Issuer(create_app(services=svc).test_client(), sim_tee)
        _problem(iss.issue(), 403, "evidence.insecure_refused")
        assert certificate_count(svc) == 0
        assert not svc.keys.has("sim-root")
    finally:
        svc.close()


def test_ca_attestation_binds_the_issuing_key(client, services, sim_tee):
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.serialization import PublicFormat

    from ca_service.evidence import verify
    from ca_service.evidence.binding import check_binding
    from ca_service.evidence.trust import DEFAULT_ROOTS

    nonce = bytes(range(32))
    r = client.get(f"/v1/ca/attestation?nonce={nonce.hex()}")
    assert r.status_code == 200
    body = r.get_json()
    assert body["profile"] == "insecure-dev" and body["type"] == "sim"
    ve = verify("sim", base64.b64decode(body["evidence"]), at=datetime.now(UTC),
                roots=DEFAULT_ROOTS.with_sim_root(sim_tee.root_der()))
    key = x509.load_pem_x509_certificate(body["key"].encode())
    assert key == services.keys.certificate("issuing")
    check_binding(ve.report_data, nonce, key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    _problem(client.get("/v1/ca/attestation?nonce=abc"), 422, "request.schema")
    _problem(client.get("/v1/ca/attestation"), 422, "request.schema")


def test_metrics_count_issuances_and_refusals(issuer, client):
    assert issuer.issue().status_code == 201
    client.get("/v1/certificates/ffff")  # a refusal: not_found
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ca_service_certificates_issued_total{policy="sim"}' in text
    assert 'ca_service_problems_total{code="not_found"}' in text
    assert 'ca_service_http_requests_total{method="POST",route="/v1/certificates",status="201"}' in text
