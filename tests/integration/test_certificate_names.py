"""Certificates a PKI linter accepts (issue 11 section 6), over real HTTP against ``ca-service serve``:
only valid LDH hostnames under the policy's name rule, no wildcard unless the policy allows it,
no IP SAN, RFC 5280 key usage, and pkilint finds no error in the leaf, the issuing CA, the root,
the CRL or an OCSP response."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from ipaddress import ip_address
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ca_service.config import Settings
from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value
from tests.integration.test_serve_faults import _free_port, _wait_ready

CLI = [sys.executable, "-m", "ca_service.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, db_url_factory):
    from ca_service.services.bootstrap import load_sim_tee

    home = tmp_path_factory.mktemp("names")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "insecure-dev",
           "CA_SERVICE_DATABASE_URL": db_url_factory(), "CA_SERVICE_PUBLIC_URL": url}
    init = subprocess.run([*CLI, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "--publish-interval", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_ready(url, proc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tee = load_sim_tee(Settings.from_env(env))
        yield url, home, tee
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _request(url: str, tee, san: list[x509.GeneralName], key=None) -> requests.Response:
    ch = requests.post(f"{url}/v1/challenges", timeout=10).json()
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload")]))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    csr = builder.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    evidence = tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())))
    body = {"challenge_id": ch["id"], "csr": csr.public_bytes(Encoding.PEM).decode(), "policy": "sim",
            "evidence": [{"type": "sim", "data": base64.b64encode(evidence).decode()}]}
    return requests.post(f"{url}/v1/certificates", json=body, timeout=30)


@pytest.mark.parametrize("name", ["*.cvm.local", "x*.cvm.local", "-.cvm.local", "a_b.cvm.local", "a-.cvm.local",
                                  "a..cvm.local", "a.cvm.local.", "a b.cvm.local", "a/b.cvm.local", ("a" * 64) + ".cvm.local",
                                  "a.b.cvm.local", "cvm.local", "*", "localhost"])
def test_bad_or_unlisted_dns_names_are_refused(server, name):
    url, _, tee = server
    resp = _request(url, tee, [x509.DNSName(name)])
    assert resp.status_code == 403, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["code"] == "certificate.refused"


@pytest.mark.parametrize("san", [x509.IPAddress(ip_address("10.0.0.1")), x509.IPAddress(ip_address("::1")),
                                 x509.UniformResourceIdentifier("https://a.cvm.local/")])
def test_ip_and_other_sans_are_refused(server, san):
    url, _, tee = server
    resp = _request(url, tee, [x509.DNSName("a.cvm.local"), san])
    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == "certificate.refused"


def _lint(tool: list[str], path: Path) -> list[dict]:
    # the venv's own scripts first: the suite may run as .venv/bin/python without the venv on PATH
    exe = shutil.which(tool[0], path=os.path.dirname(sys.executable)) or shutil.which(tool[0])
    assert exe, f"{tool[0]} (pkilint) is not installed: pip install -e '.[test]'"
    out = subprocess.run([exe, "lint", *tool[1:], "-s", "ERROR", "-f", "JSON", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip(), out.stderr
    doc = json.loads(out.stdout)
    results = doc.get("results", doc) if isinstance(doc, dict) else doc
    findings = [f for r in results for f in r.get("finding_descriptions", [])]
    return [f for f in findings if f.get("severity") in ("ERROR", "FATAL")]


def test_issued_chain_crl_and_ocsp_pass_pkilint_and_key_usage_follows_the_key(server, tmp_path):
    url, home, tee = server
    resp = _request(url, tee, [x509.DNSName("Trainer.cvm.local"), x509.DNSName("x-1.cvm.local")])
    assert resp.status_code == 201, resp.text
    leaf, issuing = x509.load_pem_x509_certificates(resp.json()["certificate_chain"].encode())
    root = x509.load_pem_x509_certificate((home / "root.pem").read_bytes())
    # names are checked and issued in lower case
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["trainer.cvm.local", "x-1.cvm.local"]
    # EC leaf under a policy with key_agreement: digitalSignature + keyAgreement, never keyEncipherment
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.key_agreement and not ku.value.key_encipherment
    assert not ku.value.data_encipherment and not ku.value.content_commitment
    # Ed25519: digitalSignature only
    ed = _request(url, tee, [x509.DNSName("ed.cvm.local")], key=ed25519.Ed25519PrivateKey.generate())
    assert ed.status_code == 201, ed.text
    ed_leaf = x509.load_pem_x509_certificates(ed.json()["certificate_chain"].encode())[0]
    ed_ku = ed_leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ed_ku.digital_signature and not ed_ku.key_agreement and not ed_ku.key_encipherment

    files = {"leaf.der": leaf, "ed_leaf.der": ed_leaf, "issuing.der": issuing, "root.der": root}
    for name, cert in files.items():
        (tmp_path / name).write_bytes(cert.public_bytes(Encoding.DER))
    crl = requests.get(f"{url}/v1/ca/crl", timeout=10)
    assert crl.status_code == 200
    (tmp_path / "crl.der").write_bytes(crl.content)
    req = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
    resp_ocsp = requests.post(f"{url}/v1/ocsp", data=req.public_bytes(Encoding.DER), timeout=10,
                              headers={"Content-Type": "application/ocsp-request"})
    assert resp_ocsp.status_code == 200
    assert ocsp.load_der_ocsp_response(resp_ocsp.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    (tmp_path / "ocsp.der").write_bytes(resp_ocsp.content)

    errors = {name: _lint(["lint_pkix_cert"], tmp_path / name) for name in files}
    errors["crl.der"] = _lint(["lint_crl", "-t", "CRL", "-p", "PKIX"], tmp_path / "crl.der")
    arl = requests.get(f"{url}/v1/ca/root.crl", timeout=10)
    assert arl.status_code == 200
    (tmp_path / "arl.der").write_bytes(arl.content)
    errors["arl.der"] = _lint(["lint_crl", "-t", "ARL", "-p", "PKIX"], tmp_path / "arl.der")
    errors["ocsp.der"] = _lint(["lint_ocsp_response"], tmp_path / "ocsp.der")
    assert all(not e for e in errors.values()), errors
