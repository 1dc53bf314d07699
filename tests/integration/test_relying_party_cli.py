"""The relying party's CLI as a data owner runs it, against a served CA (gunicorn, real HTTP):
`verify` with online revocation (OCSP at the AIA URL), offline CRL / OCSP files, expectations, the
insecure and warning opt-ins, clear usage errors; `seal` / `unseal` round trips with the key the
agent wrote, and the refusals (revoked, unexpected, tampered, wrong key)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.integration.test_http_cli import CLI, server  # noqa: F401  (the served CA fixture)

MRTD = "84c7147e2fed6ef5d1e551583e58d4e0a32bac930402f1030e4b095387b5c8eb33f25789478a4007a2a09da4cf767237"


def _run(server, *args, check=None):  # noqa: F811
    p = subprocess.run([*CLI, *map(str, args)], env=server["env"], capture_output=True, text=True, timeout=120)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def cvm(server, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("cvm")
    _run(server, "agent", "request", "--server", server["url"], "--policy", "sim", "--out", out, "--sim",
         "--dns", "trainer.cvm.local", check=0)
    return out


def test_verify_online_revocation_expectations_and_optins(server, cvm):  # noqa: F811
    root = server["home"] / "root.pem"
    ok = _run(server, "verify", cvm / "chain.pem", "--root", root, "--accept-insecure", "--expect", "tee=sim",
              "--expect", f"mrtd={MRTD}", "--expect", "policy=sim@1", check=0)
    assert "[ok] revocation: OCSP http://127.0.0.1" in ok.stdout and "good as of" in ok.stdout
    assert "[ok] expect mrtd" in ok.stdout and ok.stdout.strip().endswith("PASS")

    plain = _run(server, "verify", cvm / "chain.pem", "--root", root, check=1)
    assert "insecure-dev profile" in plain.stdout

    wrong = _run(server, "verify", cvm / "chain.pem", "--root", root, "--accept-insecure", "--expect", "tee=tdx",
                 "--expect", "engine=sha256:" + "00" * 32, check=1)
    assert "tee is sim, expected tdx" in wrong.stdout
    assert "the EAR has no claim named 'engine'" in wrong.stdout

    js = json.loads(_run(server, "verify", cvm / "chain.pem", "--root", root, "--accept-insecure",
                         "--no-revocation", "--json", check=0).stdout)
    assert js["ok"] is True and js["verdict"] == "pass"
    assert {"name": "revocation", "result": "warn", "detail": "not checked (--no-revocation)"} in js["steps"]


def test_usage_errors_are_one_clear_line(server, cvm, tmp_path):  # noqa: F811
    root = server["home"] / "root.pem"
    bad_at = _run(server, "verify", cvm / "chain.pem", "--root", root, "--at", "yesterday", check=2)
    assert "is not an RFC 3339 time" in bad_at.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    not_pem = _run(server, "verify", junk, "--root", root, check=2)
    assert "is not a PEM certificate file" in not_pem.stderr
    bad_expect = _run(server, "verify", cvm / "chain.pem", "--root", root, "--expect", "novalue", check=2)
    assert "KEY=VALUE" in bad_expect.stderr


def test_seal_unseal_round_trip_and_tampering(server, cvm, tmp_path):  # noqa: F811
    root = server["home"] / "root.pem"
    data = bytes(range(256)) * 1000 + b"tail"  # 256 KB: several chunks
    (tmp_path / "data.key").write_bytes(data)
    _run(server, "seal", "--to", cvm / "chain.pem", "--root", root, "--accept-insecure", "--expect", "tee=sim",
         tmp_path / "data.key", tmp_path / "sealed", check=0)
    sealed = (tmp_path / "sealed").read_bytes()
    assert sealed.startswith(b"CASEAL\x00\x01") and data not in sealed
    _run(server, "unseal", "--key", cvm / "key.pem", tmp_path / "sealed", tmp_path / "opened", check=0)
    assert (tmp_path / "opened").read_bytes() == data

    for pos in (9, 60, len(sealed) // 2, len(sealed) - 1):  # suite, digest, a chunk, the final tag
        bad = bytearray(sealed)
        bad[pos] ^= 1
        (tmp_path / "bad").write_bytes(bytes(bad))
        p = _run(server, "unseal", "--key", cvm / "key.pem", tmp_path / "bad", tmp_path / "out-bad", check=1)
        assert "unseal: failed [seal.open_failed]" in p.stderr
        assert not (tmp_path / "out-bad").exists()
    (tmp_path / "short").write_bytes(sealed[: len(sealed) - 100])
    p = _run(server, "unseal", "--key", cvm / "key.pem", tmp_path / "short", tmp_path / "out-short", check=1)
    assert "truncated" in p.stderr or "does not authenticate" in p.stderr
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pem").write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    p = _run(server, "unseal", "--key", tmp_path / "other.pem", tmp_path / "sealed", tmp_path / "out-other", check=1)
    assert "wrong key" in p.stderr

    refused = _run(server, "seal", "--to", cvm / "chain.pem", "--root", root, "--accept-insecure", "--expect",
                   "tee=tdx", tmp_path / "data.key", tmp_path / "sealed-tdx", check=1)
    assert "seal: refused" in refused.stderr and not (tmp_path / "sealed-tdx").exists()
    insecure = _run(server, "seal", "--to", cvm / "chain.pem", "--root", root, tmp_path / "data.key",
                    tmp_path / "sealed-insecure", check=1)
    assert not (tmp_path / "sealed-insecure").exists() and "insecure-dev" in insecure.stdout


def test_revoked_certificate_fails_verify_and_seal(server, tmp_path):  # noqa: F811
    from ca_service.relying_party.revocation import ocsp_request

    root = server["home"] / "root.pem"
    out = tmp_path / "cvm2"
    _run(server, "agent", "request", "--server", server["url"], "--policy", "sim", "--out", out, "--sim", check=0)
    serial = json.loads((out / "response.json").read_text())["serial"]
    _run(server, "revoke", serial, "--reason", "keyCompromise", check=0)

    online = _run(server, "verify", out / "chain.pem", "--root", root, "--accept-insecure", check=1)
    assert "REVOKED" in online.stdout and "keyCompromise" in online.stdout
    (tmp_path / "x").write_bytes(b"secret")
    sealed = _run(server, "seal", "--to", out / "chain.pem", "--root", root, "--accept-insecure", tmp_path / "x",
                  tmp_path / "x.sealed", check=1)
    assert "REVOKED" in sealed.stdout and not (tmp_path / "x.sealed").exists()

    # offline: the CRL and an OCSP response, fetched once and kept as files
    (tmp_path / "ca.crl").write_bytes(requests.get(f"{server['url']}/v1/ca/crl", timeout=10).content)
    crl = _run(server, "verify", out / "chain.pem", "--root", root, "--accept-insecure", "--crl",
               tmp_path / "ca.crl", check=1)
    assert "REVOKED (CRL file)" in crl.stdout and "keyCompromise" in crl.stdout
    chain = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
    req, _ = ocsp_request(chain[0], chain[1])
    resp = requests.post(f"{server['url']}/v1/ocsp", data=req, headers={"Content-Type": "application/ocsp-request"},
                         timeout=10)
    (tmp_path / "r.ocsp").write_bytes(resp.content)
    oc = _run(server, "verify", out / "chain.pem", "--root", root, "--accept-insecure", "--ocsp-response",
              tmp_path / "r.ocsp", check=1)
    assert "REVOKED (OCSP response file)" in oc.stdout


def test_an_ocsp_response_for_another_issuer_is_not_a_pass(server, cvm, tmp_path):  # noqa: F811
    """A response signed by a key that is not the issuer's: 'could not be checked', a failure."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    from ca_service.relying_party.revocation import ocsp_request

    chain = x509.load_pem_x509_certificates((cvm / "chain.pem").read_bytes())
    req = ocsp.load_der_ocsp_request(ocsp_request(chain[0], chain[1])[0])
    forger = ec.generate_private_key(ec.SECP256R1())
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "forger")])
    forger_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(forger.public_key())
                   .serial_number(1).not_valid_before(now - timedelta(hours=1))
                   .not_valid_after(now + timedelta(hours=1)).sign(forger, hashes.SHA256()))
    forged = (ocsp.OCSPResponseBuilder().add_response(
        cert=chain[0], issuer=chain[1], algorithm=hashes.SHA256(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=now, next_update=now + timedelta(hours=1), revocation_time=None, revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, forger_cert).sign(forger, hashes.SHA256()))
    assert req.serial_number == chain[0].serial_number
    (tmp_path / "forged.ocsp").write_bytes(forged.public_bytes(Encoding.DER))
    p = _run(server, "verify", cvm / "chain.pem", "--root", server["home"] / "root.pem", "--accept-insecure",
             "--ocsp-response", tmp_path / "forged.ocsp", check=1)
    assert "not signed by the certificate's issuer" in p.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_ocsp_over_http_with_several_certificates(server, cvm, tmp_path):  # noqa: F811
    """`openssl ocsp -url` with two -cert options against the served responder (it was HTTP 500)."""
    out = tmp_path / "cvm3"
    _run(server, "agent", "request", "--server", server["url"], "--policy", "sim", "--out", out, "--sim", check=0)
    _run(server, "revoke", json.loads((out / "response.json").read_text())["serial"], "--reason", "superseded",
         check=0)
    first = x509.load_pem_x509_certificates((cvm / "chain.pem").read_bytes())
    second = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
    (tmp_path / "a.pem").write_bytes(first[0].public_bytes(Encoding.PEM))
    (tmp_path / "b.pem").write_bytes(second[0].public_bytes(Encoding.PEM))
    (tmp_path / "issuing.pem").write_bytes(first[1].public_bytes(Encoding.PEM))
    p = subprocess.run(["openssl", "ocsp", "-url", f"{server['url']}/v1/ocsp", "-issuer", "issuing.pem",
                        "-cert", "a.pem", "-cert", "b.pem", "-CAfile", str(server["home"] / "root.pem"),
                        "-verify_other", "issuing.pem"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "Response verify OK" in text and "a.pem: good" in text and "b.pem: revoked" in text, text
    assert "Reason: superseded" in text, text


def test_ocsp_get_form_over_http(server, cvm):  # noqa: F811
    """RFC 6960 A.1 GET /v1/ocsp/{url-encoded base64 DER} against the served responder (gunicorn),
    raw and percent-encoded, answers the same signed status as the POST form."""
    import base64
    from datetime import UTC, datetime
    from urllib.parse import quote

    from cryptography.x509 import ocsp

    from ca_service.relying_party.revocation import check_ocsp, ocsp_request

    chain = x509.load_pem_x509_certificates((cvm / "chain.pem").read_bytes())
    for encode in (lambda b: b, lambda b: quote(b, safe="")):
        req, nonce = ocsp_request(chain[0], chain[1])
        r = requests.get(f"{server['url']}/v1/ocsp/{encode(base64.b64encode(req).decode())}", timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/ocsp-response", r.status_code
        assert ocsp.load_der_ocsp_response(r.content).serial_number == chain[0].serial_number
        result = check_ocsp(chain[0], chain[1], r.content, datetime.now(UTC), nonce)
        assert result.state == "good", result  # signed by the issuer, current, our nonce echoed
