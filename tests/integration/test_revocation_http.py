"""Issue 11 section 2 as an attacker would drive it: over HTTP.

1. Against a real ``ca-service serve`` (gunicorn, production profile, the session's database:
   PostgreSQL in the PostgreSQL run) at the real time: the ARK-Milan CRL of the real SEV-SNP vectors
   ended 2026-05-12, so today every SNP report is judged with an expired CRL. The policy alone decides:
   strict (the default) refuses with ``revocation.amd_crl_expired``; a grace or ``allow_unchecked``
   accepts it, and the EAR says so. Corrupted CRLs in the request are refused with the item's code.
2. Intel, against the app on a loopback port with the CA's clock at the vector's time (Intel collateral
   of the vectors is long expired today): a PCK CRL or Root CA CRL that is left out, corrupted or
   signed by someone else is refused with its own code, and the CA's own good CRL cannot be overruled
   by a bad one in the request.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.evidence import verify
from tests.integration.test_serve_faults import _free_port, _wait_ready
from tests.vectors.manifest import load_manifest

CLI = [sys.executable, "-m", "ca_service.cli"]
V = {v.path + ":" + v.files.get("collateral", "").split("/")[0]: v for v in load_manifest()}
DSTACK = V["snp/milan-dstack-vcek:"]  # VCEK valid 2026-06-17 .. 2033; its CRL ended 2026-05-12
TDX = V["tdx/dcapqvl-v4-uptodate:collateral"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _snp_policy(name: str, extra: str = "") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = verify("snp-report", DSTACK.read("report"), collateral=[DSTACK.read("vek"), DSTACK.read("cert_chain")],
                        at=DSTACK.verify_time, allow_unchecked_revocation=True).claims
    return (f"name: {name}\nevidence:\n  required: [snp-report]\n  snp-report:\n"
            f"    measurement: [\"{claims['measurement']}\"]\n    vmpl: [0]\n    debug: false\n"
            f"{extra}certificate:\n  max_lifetime: 1h\n")


POLICIES = {
    "snp-strict": _snp_policy("snp-strict"),
    "snp-grace": _snp_policy("snp-grace", "collateral:\n  max_age_past_next_update: 3650d\n"),
    "snp-short-grace": _snp_policy("snp-short-grace", "collateral:\n  max_age_past_next_update: 30d\n"),
    "snp-unchecked": _snp_policy("snp-unchecked", "revocation:\n  allow_unchecked: true\n"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, db_url_factory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("revocation")
    env = {**os.environ, "CA_SERVICE_HOME": str(home), "CA_SERVICE_PROFILE": "production",
           "CA_SERVICE_DATABASE_URL": db_url_factory()}
    init = subprocess.run([*CLI, "init", "--outside-tee"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    tok = subprocess.run([*CLI, "token", "create", "--role", "admin"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert tok.returncode == 0, tok.stderr
    token = tok.stdout.strip().splitlines()[-1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                             "--publish-interval", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_ready(url, proc)
        for doc in POLICIES.values():
            r = requests.post(f"{url}/v1/policies?activate=true", data=doc.encode(), timeout=30,
                              headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {token}"})
            assert r.status_code in (200, 201), r.text
        yield {"url": url}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _attest(url: str, policy: str, kind: str, evidence: bytes, collateral: list[bytes]) -> requests.Response:
    body = {"policy": policy, "evidence": [{"type": kind, "data": _b64(evidence),
                                            "collateral": [_b64(c) for c in collateral]}]}
    return requests.post(f"{url}/v1/attestations", json=body, timeout=60)


def _refused(r: requests.Response, code: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text[:800]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem: dict[str, Any] = r.json()
    assert problem["code"] == code, problem
    assert problem["type"].endswith(f"/problems/{code}")
    return problem


def _snp(*roles: str) -> list[bytes]:
    return [DSTACK.read(r) for r in roles]


# --- 1. SEV-SNP against ca-service serve, today ----------------------------------------------------------


def test_strict_policy_refuses_the_expired_crl_with_or_without_it_in_the_request(served):
    url = served["url"]
    report = DSTACK.read("report")
    p = _refused(_attest(url, "snp-strict", "snp-report", report, _snp("vek", "cert_chain", "crl")),
                 "revocation.amd_crl_expired")
    assert p["item"] == "amd_crl" and p["state"] == "expired" and "2026-05-12" in p["detail"]
    # the CRL sent first is now the CA's own: leaving it out changes nothing
    _refused(_attest(url, "snp-strict", "snp-report", report, _snp("vek", "cert_chain")),
             "revocation.amd_crl_expired")


def test_a_grace_that_covers_it_accepts_with_a_warning_and_a_short_one_does_not(served):
    url = served["url"]
    report = DSTACK.read("report")
    r = _attest(url, "snp-grace", "snp-report", report, _snp("vek", "cert_chain", "crl"))
    assert r.status_code == 200, r.text[:800]
    out = r.json()
    sub = out["ear_claims"]["submods"]["snp-report"]
    assert sub["ca-service.revocation"] == {"amd_crl": "expired"}
    assert sub["ca-service.warnings"] == ["revocation.amd_crl_expired"]
    assert sub["ear.trustworthiness-vector"]["hardware"] == 32
    assert sub["ear.status"] == "warning" and out["ear_claims"]["ear.status"] == "warning"
    check = next(c for c in out["appraisal"]["checks"] if c["claim"] == "revocation.amd_crl")
    assert check == {"evidence": "snp-report", "claim": "revocation.amd_crl", "expected": "good",
                     "actual": "expired", "passed": True}
    # the EAR JWT carries the same claims
    payload = out["ear"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["submods"]["snp-report"]["ca-service.warnings"] == ["revocation.amd_crl_expired"]
    # 30 days of grace do not cover a CRL that ended in May
    _refused(_attest(url, "snp-short-grace", "snp-report", report, _snp("vek", "cert_chain")),
             "revocation.amd_crl_expired")


def test_allow_unchecked_accepts_it_as_not_checked(served):
    # the CRL is sent: under xdist this test may be the module's first, with the CA's cache still empty
    r = _attest(served["url"], "snp-unchecked", "snp-report", DSTACK.read("report"), _snp("vek", "cert_chain", "crl"))
    assert r.status_code == 200, r.text[:800]
    sub = r.json()["ear_claims"]["submods"]["snp-report"]
    assert sub["ca-service.warnings"] == ["revocation.amd_crl_expired"] and sub["ear.status"] == "warning"


def test_corrupted_crls_in_the_request_are_refused_with_the_items_code(served):
    """A sample across the whole CRL (every 7th byte, one bit); even with the good CRL cached by the CA,
    and under the policy that accepts unchecked revocation: a bad item sent is a refusal."""
    url = served["url"]
    crl = DSTACK.read("crl")
    seen: dict[str, int] = {}
    for off in range(0, len(crl), 7):
        m = bytearray(crl)
        m[off] ^= 0x01
        r = _attest(url, "snp-unchecked", "snp-report", DSTACK.read("report"), [*_snp("vek", "cert_chain"), bytes(m)])
        assert 400 <= r.status_code < 500 and r.headers["Content-Type"].startswith("application/problem+json"), \
            (off, r.status_code, r.text[:300])
        seen[r.json()["code"]] = seen.get(r.json()["code"], 0) + 1
    assert set(seen) <= {"revocation.amd_crl_invalid", "revocation.amd_crl_bad_signature",
                         "evidence.collateral_invalid"}, seen
    assert seen.get("revocation.amd_crl_bad_signature", 0) + seen.get("revocation.amd_crl_invalid", 0) \
        >= 0.9 * sum(seen.values()), seen
    # a CRL under ARK-Milan's name signed by another key
    real = x509.load_der_x509_crl(crl)
    key = ec.generate_private_key(ec.SECP384R1())
    forged = (x509.CertificateRevocationListBuilder().issuer_name(real.issuer).last_update(real.last_update_utc)
              .next_update(real.next_update_utc).sign(key, hashes.SHA384()))  # type: ignore[arg-type]
    r = _attest(url, "snp-unchecked", "snp-report", DSTACK.read("report"),
                [*_snp("vek", "cert_chain"), forged.public_bytes(Encoding.DER)])
    _refused(r, "revocation.amd_crl_bad_signature")


# --- 2. Intel, at the vector's time ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def intel_ca(tmp_path_factory, db_url_factory) -> Iterator[dict[str, Any]]:
    """An empty production-profile CA (no cached collateral), offline, its clock at the TDX vector's time."""
    from werkzeug.serving import make_server

    from ca_service.api.app import create_app
    from ca_service.clock import FixedClock
    from ca_service.services import policies
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory(), profile="production")
    init_ca(settings)
    svc = Services.create(settings, clock=FixedClock(TDX.verify_time))
    for name, extra in (("tdx-strict", ""), ("tdx-unchecked", "revocation:\n  allow_unchecked: true\n")):
        doc = (f"name: {name}\nevidence:\n  required: [tdx-quote]\n  tdx-quote:\n    tcb_status: [UpToDate]\n"
               f"{extra}certificate:\n  max_lifetime: 1h\n")
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        policies.activate(svc, name, ref.version, actor="test")
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield {"svc": svc, "url": f"http://127.0.0.1:{server.server_port}"}
    finally:
        server.shutdown()
        t.join(5)
        svc.close()


def _tdx_doc(**changes: str | None) -> bytes:
    doc = json.loads(TDX.read("collateral"))
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return json.dumps(doc).encode()


def _flip_hex(hex_der: str, at_from_end: int) -> str:
    der = bytearray(bytes.fromhex(hex_der))
    der[-at_from_end] ^= 0x01
    return bytes(der).hex()


def test_intel_crls_left_out_are_missing_refusals_that_name_them(intel_ca):
    url, quote = intel_ca["url"], TDX.read("quote")
    p = _refused(_attest(url, "tdx-strict", "tdx-quote", quote, [_tdx_doc(pck_crl=None, root_ca_crl=None)]),
                 "revocation.intel_pck_crl_missing")
    assert p["item"] == "intel_pck_crl"
    # accepted only by the rule, as not checked, with both warnings
    r = _attest(url, "tdx-unchecked", "tdx-quote", quote, [_tdx_doc(pck_crl=None, root_ca_crl=None)])
    assert r.status_code == 200, r.text[:800]
    sub = r.json()["ear_claims"]["submods"]["tdx-quote"]
    assert sub["ca-service.revocation"] == {"intel_pck_crl": "missing", "intel_root_ca_crl": "missing"}
    assert sub["ca-service.warnings"] == ["revocation.intel_pck_crl_missing", "revocation.intel_root_ca_crl_missing"]
    assert sub["ear.status"] == "warning"


def test_intel_crls_corrupted_or_forged_in_the_request_are_refused(intel_ca):
    url, quote = intel_ca["url"], TDX.read("quote")
    doc = json.loads(TDX.read("collateral"))
    cases = [
        ({"pck_crl": _flip_hex(doc["pck_crl"], 5)}, "revocation.intel_pck_crl_bad_signature"),
        ({"root_ca_crl": _flip_hex(doc["root_ca_crl"], 5)}, "revocation.intel_root_ca_crl_bad_signature"),
        ({"pck_crl": "zz" + doc["pck_crl"][2:]}, "revocation.intel_pck_crl_invalid"),
        ({"root_ca_crl": "3082"}, "revocation.intel_root_ca_crl_invalid"),
        ({"pck_crl_issuer_chain": None}, "revocation.intel_pck_crl_bad_signature"),
        # the PCK CRL "signed" by the TCB signing chain: not a PCK CA
        ({"pck_crl_issuer_chain": doc["tcb_info_issuer_chain"]}, "revocation.intel_pck_crl_bad_signature"),
    ]
    for change, code in cases:
        for policy in ("tdx-strict", "tdx-unchecked"):  # sent bad is refused even where unchecked is accepted
            _refused(_attest(url, policy, "tdx-quote", quote, [_tdx_doc(**change)]), code)


def test_the_cas_good_crls_decide_once_it_holds_them(intel_ca):
    url, quote = intel_ca["url"], TDX.read("quote")
    r = _attest(url, "tdx-strict", "tdx-quote", quote, [TDX.read("collateral")])
    assert r.status_code == 200, r.text[:800]
    sub = r.json()["ear_claims"]["submods"]["tdx-quote"]
    assert sub["ca-service.revocation"] == {"intel_pck_crl": "good", "intel_root_ca_crl": "good"}
    assert "ca-service.warnings" not in sub and sub["ear.status"] == "affirming"
    # now the request may leave the CRLs out: the CA's own are used
    r = _attest(url, "tdx-strict", "tdx-quote", quote, [_tdx_doc(pck_crl=None, root_ca_crl=None)])
    assert r.status_code == 200, r.text[:800]
    used = {u["item"] for u in r.json()["ear_claims"]["submods"]["tdx-quote"]["ca-service.collateral"]}
    assert {"intel.pck_crl", "intel.root_ca_crl"} <= used
