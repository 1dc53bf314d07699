"""Revocation the way relying parties check it: `openssl verify -crl_check` and `openssl ocsp`."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca_service.services import tokens
from ca_service.tlog.leaves import decode_leaf

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@pytest.fixture
def admin(services):
    t = tokens.create_token(services, role="admin", name=f"rev-{uuid.uuid4().hex[:6]}", expires_in=None, actor="test")
    return {"Authorization": f"Bearer {t.secret}"}


def _issue(issuer):
    resp = issuer.issue()
    assert resp.status_code == 201, resp.get_json()
    leaf, issuing = x509.load_pem_x509_certificates(resp.get_json()["certificate_chain"].encode())
    return resp.get_json()["serial"], leaf, issuing


def _files(tmp_path: Path, services, leaf, issuing, crl_der: bytes) -> None:
    (tmp_path / "root.pem").write_bytes(services.keys.certificate("root").public_bytes(Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    crl = x509.load_der_x509_crl(crl_der)
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))


def _openssl_crl_check(tmp_path: Path) -> subprocess.CompletedProcess:
    # -crl_check checks the leaf against the issuing CA's CRL; the root has no CRL (offline root)
    return subprocess.run(["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "issuing.pem", "-CRLfile",
                           "crl.pem", "-crl_check", "leaf.pem"], cwd=tmp_path, capture_output=True, text=True)


def _ocsp(client, tmp_path: Path, leaf, issuing) -> str:
    """openssl builds the request (with its own nonce), we POST it, openssl checks the answer."""
    subprocess.run(["openssl", "ocsp", "-issuer", "issuing.pem", "-cert", "leaf.pem", "-reqout", "req.der"],
                   cwd=tmp_path, check=True, capture_output=True)
    req_der = (tmp_path / "req.der").read_bytes()
    resp = client.post("/v1/ocsp", data=req_der, content_type="application/ocsp-request")
    assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
    (tmp_path / "resp.der").write_bytes(resp.data)
    req_nonce = ocsp.load_der_ocsp_request(req_der).extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    parsed = ocsp.load_der_ocsp_response(resp.data)
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == req_nonce
    # signature, responder chain to the root, and openssl's own nonce
    v = subprocess.run(["openssl", "ocsp", "-reqin", "req.der", "-respin", "resp.der", "-CAfile", "root.pem",
                        "-verify_other", "issuing.pem"], cwd=tmp_path, capture_output=True, text=True)
    assert "Response verify OK" in v.stderr + v.stdout, v.stderr + v.stdout
    # the status openssl reads for this certificate
    p = subprocess.run(["openssl", "ocsp", "-respin", "resp.der", "-issuer", "issuing.pem", "-cert", "leaf.pem",
                        "-CAfile", "root.pem", "-verify_other", "issuing.pem", "-no_nonce"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_openssl
def test_revoke_then_crl_and_ocsp_say_so(issuer, client, services, admin, tmp_path: Path):
    serial, leaf, issuing = _issue(issuer)
    crl = client.get("/v1/ca/crl")
    assert crl.status_code == 200 and crl.mimetype == "application/pkix-crl"
    _files(tmp_path, services, leaf, issuing, crl.data)
    before = _openssl_crl_check(tmp_path)
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"{serial}: good" in _ocsp(client, tmp_path, leaf, issuing).replace("leaf.pem", serial)

    r = client.post(f"/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}, headers=admin)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["status"] == "revoked"
    rec = client.get(f"/v1/certificates/{serial}").get_json()
    assert rec["status"] == "revoked" and rec["revocation_reason"] == "keyCompromise"

    crl_after = client.get("/v1/ca/crl").data
    parsed = x509.load_der_x509_crl(crl_after)
    assert parsed.is_signature_valid(issuing.public_key())
    entry = parsed.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    _files(tmp_path, services, leaf, issuing, crl_after)
    after = _openssl_crl_check(tmp_path)
    assert after.returncode != 0 and "revoked" in (after.stdout + after.stderr)
    out = _ocsp(client, tmp_path, leaf, issuing)
    assert "leaf.pem: revoked" in out and "keyCompromise" in out

    # the revocation is in the transparency log and the audit table
    entries = [client.get(f"/v1/log/entries/{i}").get_json() for i in range(max(0, rec["log_index"]), rec["log_index"] + 50)]
    found = False
    for e in entries:
        if e and "leaf" in e:
            import base64
            leaf_obj = decode_leaf(base64.b64decode(e["leaf"]))
            found |= leaf_obj.type == "revocation" and leaf_obj.body.get("serial") == serial
    assert found

    again = client.post(f"/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}, headers=admin)
    assert again.status_code == 409


def test_revoke_needs_admin_and_a_known_reason(issuer, client, services, admin):
    serial, _, _ = _issue(issuer)
    assert client.post(f"/v1/certificates/{serial}/revoke", json={}).status_code == 401
    auditor = tokens.create_token(services, role="auditor", name=f"a-{uuid.uuid4().hex[:6]}", expires_in=None,
                                  actor="test")
    r = client.post(f"/v1/certificates/{serial}/revoke", json={}, headers={"Authorization": f"Bearer {auditor.secret}"})
    assert r.status_code == 403
    r = client.post(f"/v1/certificates/{serial}/revoke", json={"reason": "because"}, headers=admin)
    assert r.status_code == 422 and r.get_json()["code"] == "request.schema"
    r = client.post("/v1/certificates/abc123/revoke", json={}, headers=admin)
    assert r.status_code == 404
    assert client.get(f"/v1/certificates/{serial}").get_json()["status"] == "valid"


def test_ocsp_refusals(client):
    bad = client.post("/v1/ocsp", data=b"\x30\x03\x02\x01\x00", content_type="application/ocsp-request")
    assert bad.status_code == 200
    assert ocsp.load_der_ocsp_response(bad.data).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert client.post("/v1/ocsp", data=b"x", content_type="text/plain").status_code == 415


def test_openapi_document_is_current(client):
    served = client.get("/v1/openapi.json").get_json()
    kept = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    assert served == kept, "docs/openapi.json is stale: regenerate it: python scripts/gen_openapi.py"
    assert "/v1/certificates" in served["paths"] and "post" in served["paths"]["/v1/certificates"]
    assert served["components"]["schemas"]["CertificateRequestIn"]["required"]


@needs_openssl
def test_ocsp_answers_several_certificates_in_one_request(issuer, client, services, admin, tmp_path: Path):
    """RFC 6960 section 4.1.1: `openssl ocsp` with three -cert options (good, revoked, and one this CA
    never issued) gets one signed response with three answers, in order, echoing its nonce."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    s1, leaf1, issuing = _issue(issuer)
    s2, leaf2, _ = _issue(issuer)
    assert client.post(f"/v1/certificates/{s2}/revoke", json={"reason": "superseded"}, headers=admin).status_code == 200
    key = ec.generate_private_key(ec.SECP256R1())
    stranger = (x509.CertificateBuilder().subject_name(leaf1.subject).issuer_name(issuing.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(leaf1.not_valid_before_utc).not_valid_after(leaf1.not_valid_after_utc)
                .sign(key, hashes.SHA256()))
    _files(tmp_path, services, leaf1, issuing, client.get("/v1/ca/crl").data)
    (tmp_path / "leaf2.pem").write_bytes(leaf2.public_bytes(Encoding.PEM))
    (tmp_path / "stranger.pem").write_bytes(stranger.public_bytes(Encoding.PEM))
    subprocess.run(["openssl", "ocsp", "-issuer", "issuing.pem", "-cert", "leaf.pem", "-cert", "leaf2.pem",
                    "-cert", "stranger.pem", "-reqout", "req.der"], cwd=tmp_path, check=True, capture_output=True)
    resp = client.post("/v1/ocsp", data=(tmp_path / "req.der").read_bytes(), content_type="application/ocsp-request")
    assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(resp.data)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    answers = list(parsed.responses)
    assert [a.serial_number for a in answers] == [leaf1.serial_number, leaf2.serial_number, stranger.serial_number]
    assert [a.certificate_status for a in answers] == [ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED,
                                                       ocsp.OCSPCertStatus.UNKNOWN]
    assert answers[1].revocation_reason == x509.ReasonFlags.superseded
    from cryptography.hazmat.primitives.asymmetric import ec as _ec

    issuing.public_key().verify(parsed.signature, parsed.tbs_response_bytes, _ec.ECDSA(hashes.SHA256()))
    (tmp_path / "resp.der").write_bytes(resp.data)
    v = subprocess.run(["openssl", "ocsp", "-reqin", "req.der", "-respin", "resp.der", "-CAfile", "root.pem",
                        "-verify_other", "issuing.pem"], cwd=tmp_path, capture_output=True, text=True)
    assert "Response verify OK" in v.stdout + v.stderr, v.stdout + v.stderr  # signature, chain and nonce
    v = subprocess.run(["openssl", "ocsp", "-respin", "resp.der", "-issuer", "issuing.pem", "-no_nonce",
                        "-cert", "leaf.pem", "-cert", "leaf2.pem", "-cert", "stranger.pem", "-CAfile", "root.pem",
                        "-verify_other", "issuing.pem"], cwd=tmp_path, capture_output=True, text=True)
    out = v.stdout + v.stderr
    assert "leaf.pem: good" in out and "leaf2.pem: revoked" in out and "stranger.pem: unknown" in out, out
    assert "Reason: superseded" in out, out


def test_ocsp_get_form_with_slashes_in_the_base64(issuer, client):
    """RFC 6960 appendix A.1: GET /v1/ocsp/{url-encoded base64}; a request whose base64 holds "//"
    is answered, not redirected to a merged path."""
    import base64
    import os
    from urllib.parse import quote

    from cryptography.hazmat.primitives import hashes

    _, leaf, issuing = _issue(issuer)
    for _ in range(5000):
        req = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA1())
               .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build())
        b64 = base64.b64encode(req.public_bytes(Encoding.DER)).decode()
        if "//" in b64:
            break
    assert "//" in b64
    for path in (b64, quote(b64, safe="")):
        resp = client.get(f"/v1/ocsp/{path}")
        assert resp.status_code == 200, (path, resp.status_code)
        parsed = ocsp.load_der_ocsp_response(resp.data)
        assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD and parsed.serial_number == leaf.serial_number
    junk = client.get("/v1/ocsp/not-base64!")
    assert junk.status_code == 200
    assert ocsp.load_der_ocsp_response(junk.data).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@needs_openssl
def test_issuing_ca_names_the_root_arl_and_openssl_crl_check_all_passes(issuer, client, services, ca_settings,
                                                                        tmp_path: Path):
    """The issuing CA's CRL distribution point names the root's ARL, which init signed (empty,
    onlyContainsCACerts, valid for a year), so `openssl verify -crl_check_all` checks both levels."""
    from datetime import timedelta

    _, leaf, issuing = _issue(issuer)
    cdp = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in cdp[0].full_name] == [f"{ca_settings.public_url}/v1/ca/root.crl"]
    arl_resp = client.get("/v1/ca/root.crl")
    assert arl_resp.status_code == 200 and arl_resp.mimetype == "application/pkix-crl"
    arl = x509.load_der_x509_crl(arl_resp.data)
    root = services.keys.certificate("root")
    assert arl.is_signature_valid(root.public_key()) and arl.issuer == root.subject
    assert arl.next_update_utc - arl.last_update_utc >= timedelta(days=300)
    idp = arl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.only_contains_ca_certs
    assert arl.get_revoked_certificate_by_serial_number(issuing.serial_number) is None
    _files(tmp_path, services, leaf, issuing, client.get("/v1/ca/crl").data)
    (tmp_path / "arl.pem").write_bytes(arl.public_bytes(Encoding.PEM))
    args = ["openssl", "verify", "-crl_check_all", "-CAfile", "root.pem", "-untrusted", "issuing.pem",
            "-CRLfile", "crl.pem", "-CRLfile", "arl.pem", "leaf.pem"]
    ok = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "leaf.pem: OK" in ok.stdout, ok.stdout + ok.stderr
    # without the ARL, -crl_check_all cannot pass: the check is real
    no_arl = subprocess.run(["openssl", "verify", "-crl_check_all", "-CAfile", "root.pem", "-untrusted", "issuing.pem",
                             "-CRLfile", "crl.pem", "leaf.pem"], cwd=tmp_path, capture_output=True, text=True)
    assert no_arl.returncode != 0 and "unable to get certificate CRL" in no_arl.stdout + no_arl.stderr


@needs_openssl
def test_offline_root_signs_a_new_arl_revoking_the_issuing_ca(tmp_path: Path):
    """`ca-service root sign-arl` with the encrypted root key: the ARL keeps growing, openssl then
    refuses the revoked issuing CA; a wrong passphrase is one clear line."""
    import os
    import sys

    cli = [sys.executable, "-m", "ca_service.cli"]
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_SERVICE_")}
    env.update({"CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
                "CA_SERVICE_ROOT_PASSPHRASE": "correct horse battery staple"})
    assert subprocess.run([*cli, "init"], env=env, capture_output=True, timeout=120).returncode == 0
    from ca_service.config import Settings
    from ca_service.services.container import Services
    from ca_service.services.root_arl import current_arl

    svc = Services.create(Settings.from_env(env))
    try:
        issuing, root = svc.keys.certificate("issuing"), svc.keys.certificate("root")
        first = x509.load_der_x509_crl(current_arl(svc))
    finally:
        svc.close()
    serial = format(issuing.serial_number, "x")
    p = subprocess.run([*cli, "root", "sign-arl", "--revoke", f"{serial}:cACompromise", "--days", "30",
                        "--out", str(tmp_path / "arl.der")], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "signed ARL number" in p.stdout and "1 new entry" in p.stdout
    arl = x509.load_der_x509_crl((tmp_path / "arl.der").read_bytes())
    assert arl.is_signature_valid(root.public_key())
    number = arl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    entry = arl.get_revoked_certificate_by_serial_number(issuing.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.ca_compromise
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(Encoding.PEM))
    (tmp_path / "arl.pem").write_bytes(arl.public_bytes(Encoding.PEM))
    v = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", "root.pem", "-CRLfile", "arl.pem",
                        "issuing.pem"], cwd=tmp_path, capture_output=True, text=True)
    assert v.returncode != 0 and "certificate revoked" in v.stdout + v.stderr, v.stdout + v.stderr
    # the next ARL keeps the entry
    again = subprocess.run([*cli, "root", "sign-arl", "--out", str(tmp_path / "arl2.der")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 new entries" in again.stdout, again.stderr
    arl2 = x509.load_der_x509_crl((tmp_path / "arl2.der").read_bytes())
    assert arl2.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
    wrong = subprocess.run([*cli, "root", "sign-arl"], env={**env, "CA_SERVICE_ROOT_PASSPHRASE": "nope"},
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr and "Traceback" not in wrong.stderr


def test_certificates_record_their_tee_instance(issuer, services):
    from ca_service.evidence.instance import INSTANCE_REGISTERS
    from ca_service.services.issuance import get_certificate

    resp = issuer.issue()
    assert resp.status_code == 201, resp.get_json()
    issued = resp.get_json()
    row = get_certificate(services, issued["serial"])
    ear = issued["ear"]
    regs = ear["submods"]["sim"]["ca-service.measurements"]
    import hashlib

    text = "\n".join(["ca-service/instance/v1 sim", *(f"{k}={regs[k]}" for k in INSTANCE_REGISTERS["sim"])])
    assert row.instance_id == ear["ca-service.instance-id"] == hashlib.sha256(text.encode()).hexdigest()
    assert row.cvm_serial is None and "ca-service.cvm-serial" not in ear
