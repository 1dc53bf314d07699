"""Issue 11 sections 1-2, driven as an attacker would: over real HTTP (loopback) against the app on the
session's database (PostgreSQL in the PostgreSQL run), with the real vectors, the CA's cache filled
from the offline bundle of their recorded vendor responses, and the CA's clock at each vector's time.

The two attacks the review found:
- an SNP report whose CRL had expired at its time, sent WITHOUT its CRL: the CA must judge it by the
  CRL it holds (expired: refused), not affirm it with revocation "not checked";
- a TDX quote sent with an older, still-valid TCB Info: the CA must judge it by the newer one it holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from ca_service.api.app import create_app
from ca_service.clock import FixedClock
from ca_service.collateral import endpoints
from ca_service.collateral.store import select_at
from ca_service.collateral.verify import top_level_spans
from ca_service.evidence import verify
from ca_service.services import collateral as cs
from ca_service.services import policies
from tests.collateral.fixtures import bundle_bytes, bundle_entries, fresh_services  # noqa: F401
from tests.vectors.manifest import Vector, load_manifest

V = {v.path + ":" + v.files.get("collateral", "").split("/")[0]: v for v in load_manifest()}
DSTACK = V["snp/milan-dstack-vcek:"]
GOTDX_B = V["tdx/gotdxguest-v5-uptodate:collateral-B-gotdxguest-tcbinfo"]
VIRTEE = V["snp/milan-virtee-vcek:"]
NVIDIA = V["nvidia/hopper-h100-nvtrust-2025:"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _snp_policy(v: Vector, name: str, extra: str = "") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = verify("snp-report", v.read("report"), collateral=[v.read("vek"), v.read("cert_chain")],
                        at=v.verify_time, allow_unchecked_revocation=True).claims  # only its claims are used
    return (f"name: {name}\nevidence:\n  required: [snp-report]\n  snp-report:\n"
            f"    measurement: [\"{claims['measurement']}\"]\n    vmpl: [0]\n    debug: false\n"
            f"{extra}certificate:\n  max_lifetime: 1h\n")


TDX_POLICY = ("name: tdx-any\nevidence:\n  required: [tdx-quote]\n  tdx-quote:\n"
              "    tcb_status: [UpToDate, OutOfDate, SWHardeningNeeded, ConfigurationNeeded]\n"
              "certificate:\n  max_lifetime: 1h\n")


@pytest.fixture(scope="module")
def ca(tmp_path_factory, db_url_factory, bundle_bytes) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A production-profile CA with the bundle imported, served over HTTP on a loopback port."""
    from ca_service.services.bootstrap import init_ca
    from ca_service.services.container import Services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("home"), db_url_factory(), profile="production")
    init_ca(settings)
    svc = Services.create(settings, clock=FixedClock(DSTACK.verify_time))
    cs.import_bundle(svc, bundle_bytes)
    for doc in (TDX_POLICY, _snp_policy(DSTACK, "snp-dstack"), _snp_policy(VIRTEE, "snp-virtee")):
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        policies.activate(svc, ref.policy.name, ref.version, actor="test")
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield {"svc": svc, "url": f"http://127.0.0.1:{server.server_port}"}
    finally:
        server.shutdown()
        t.join(5)
        svc.close()


def _attest(ca: dict[str, Any], policy: str, kind: str, evidence: bytes, collateral: list[bytes]) -> requests.Response:
    body = {"policy": policy, "evidence": [{"type": kind, "data": _b64(evidence),
                                            "collateral": [_b64(c) for c in collateral]}]}
    return requests.post(f"{ca['url']}/v1/attestations", json=body, timeout=30)


def _issue(ca: dict[str, Any], policy: str, kind: str, evidence: bytes, collateral: list[bytes]) -> requests.Response:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from ca_service.agent.client import make_csr

    ch = requests.post(f"{ca['url']}/v1/challenges", timeout=30).json()
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), ("a.cvm.local",)).public_bytes(Encoding.PEM).decode()
    body = {"challenge_id": ch["id"], "csr": csr, "policy": policy,
            "evidence": [{"type": kind, "data": _b64(evidence), "collateral": [_b64(c) for c in collateral]}]}
    return requests.post(f"{ca['url']}/v1/certificates", json=body, timeout=30)


def _at(ca: dict[str, Any], v: Vector) -> None:
    ca["svc"].clock = FixedClock(v.verify_time)


# --- attack 1: leave the expired CRL out ------------------------------------------------------------------


def test_snp_without_its_expired_crl_is_refused_by_the_cas_crl(ca):
    _at(ca, DSTACK)
    report = DSTACK.read("report")
    for send in ([DSTACK.read("vek"), DSTACK.read("cert_chain")], []):
        r = _attest(ca, "snp-dstack", "snp-report", report, send)
        assert r.status_code == 422, r.text
        p = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert p["code"] == "revocation.amd_crl_expired" and p["item"] == "amd_crl", p
        r = _issue(ca, "snp-dstack", "snp-report", report, send)
        assert r.status_code == 422 and r.json()["code"] == "revocation.amd_crl_expired", r.text
    # with its CRL the answer is the same: the request cannot choose
    r = _attest(ca, "snp-dstack", "snp-report", report, [DSTACK.read(k) for k in ("vek", "cert_chain", "crl")])
    assert r.status_code == 422 and r.json()["code"] == "revocation.amd_crl_expired"


def test_snp_with_a_valid_crl_is_affirming_and_records_the_cas_collateral(ca):
    _at(ca, VIRTEE)
    r = _attest(ca, "snp-virtee", "snp-report", VIRTEE.read("report"), [])
    assert r.status_code == 200, r.text
    out = r.json()
    sub = out["ear_claims"]["submods"]["snp-report"]
    assert sub["ear.status"] == "affirming"
    used = {u["item"]: u for u in sub["ca-service.collateral"]}
    assert set(used) == {"amd.vcek", "amd.vcek_chain", "amd.vcek_crl"}
    assert {u["source"] for u in used.values()} == {"cache"}
    assert used["amd.vcek_crl"]["sha256"] == hashlib.sha256(VIRTEE.read("crl")).hexdigest()
    assert used["amd.vcek_crl"]["next_update"].startswith("20")
    # the appraisal records it too
    assert {u["item"] for u in out["appraisal"]["collateral"]["snp-report"]} == set(used)


# --- attack 2: an older, still-valid TCB Info -------------------------------------------------------------


def _cached_tcb_info(ca: dict[str, Any], v: Vector) -> Any:
    fmspc = bytes.fromhex(json.loads(json.loads(v.read("collateral"))["tcb_info"])["fmspc"])
    with ca["svc"].db.read() as session:
        return select_at(session, endpoints.tcb_info("tdx", fmspc).kind, fmspc.hex(), v.verify_time)


def test_an_older_tcb_info_sent_with_the_quote_does_not_replace_the_cas_newer_one(ca):
    _at(ca, GOTDX_B)
    doc = json.loads(GOTDX_B.read("collateral"))
    sent = json.loads(doc["tcb_info"])
    cached = _cached_tcb_info(ca, GOTDX_B)
    cached_info = json.loads(top_level_spans(cached.body)["tcbInfo"])
    # the premise: the request's TCB Info is genuine, still valid, and older than the CA's
    assert sent["issueDate"] < cached_info["issueDate"] and sent["nextUpdate"] > GOTDX_B.verify_time.isoformat()
    r = _attest(ca, "tdx-any", "tdx-quote", GOTDX_B.read("quote"), [GOTDX_B.read("collateral")])
    assert r.status_code == 200, r.text
    sub = r.json()["ear_claims"]["submods"]["tdx-quote"]
    sent_digest = hashlib.sha256(doc["tcb_info"].encode()).hexdigest()
    cas_digest = hashlib.sha256(top_level_spans(cached.body)["tcbInfo"]).hexdigest()
    assert sub["ca-service.collateral-sha256"]["intel.tcb_info"] == cas_digest != sent_digest
    used = {u["item"]: u for u in sub["ca-service.collateral"]}
    assert used["intel.tcb_info.tdx"]["source"] == "cache"
    assert used["intel.tcb_info.tdx"]["sha256"] == cached.sha256


def test_request_collateral_fills_what_the_ca_lacks_after_verification(tmp_path_factory, db_url_factory):
    """An empty cache, offline: the request's collateral is verified to the pinned roots, used, recorded as
    source "request", and cached; a forged one is refused with the verifier's code."""
    from ca_service.services.attestation import AttestationRequest, attest
    from ca_service.services.issuance import EvidenceItem

    svc = fresh_services(tmp_path_factory, db_url_factory, clock=FixedClock(VIRTEE.verify_time))
    try:
        ref, _ = policies.apply_policy(svc, _snp_policy(VIRTEE, "snp-virtee"), actor="test")
        policies.activate(svc, "snp-virtee", ref.version, actor="test")
        own = tuple(VIRTEE.read(k) for k in ("vek", "cert_chain", "crl"))
        res = attest(svc, AttestationRequest("snp-virtee", (EvidenceItem("snp-report", VIRTEE.read("report"), own),)))
        used = {u["item"]: u["source"] for u in res.claims["submods"]["snp-report"]["ca-service.collateral"]}
        assert used == {"amd.vcek": "request", "amd.vcek_chain": "request", "amd.vcek_crl": "request"}
        # a forged CRL is refused even though the CA now holds a good one: sent collateral is verified first
        bad_crl = bytearray(own[2])
        bad_crl[-10] ^= 1
        with pytest.raises(Exception) as ei:
            attest(svc, AttestationRequest("snp-virtee", (EvidenceItem("snp-report", VIRTEE.read("report"),
                                                                        (own[0], own[1], bytes(bad_crl))),)))
        assert ei.value.code == "revocation.amd_crl_bad_signature"
        # now cached: the same report without collateral is judged by the cache
        res = attest(svc, AttestationRequest("snp-virtee", (EvidenceItem("snp-report", VIRTEE.read("report")),)))
        used = {u["item"]: u["source"] for u in res.claims["submods"]["snp-report"]["ca-service.collateral"]}
        assert used == {"amd.vcek": "cache", "amd.vcek_chain": "cache", "amd.vcek_crl": "cache"}
        assert res.claims["ear.status"] == "affirming"
    finally:
        svc.close()


def test_offline_evidence_verify_still_judges_by_the_users_files():
    """ca_service.evidence.verify (and the CLI) use exactly what the relying party passes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # without a CRL: missing, refused (docs/revocation.md); accepted only when the caller says so
        with pytest.raises(Exception) as ei:
            verify("snp-report", DSTACK.read("report"), collateral=[DSTACK.read("vek"), DSTACK.read("cert_chain")],
                   at=DSTACK.verify_time)
        assert ei.value.code == "revocation.amd_crl_missing"
        r = verify("snp-report", DSTACK.read("report"), collateral=[DSTACK.read("vek"), DSTACK.read("cert_chain")],
                   at=DSTACK.verify_time, allow_unchecked_revocation=True)
        assert r.claims["crl"]["checked"] is False and r.warnings == ("revocation.amd_crl_missing",)
        with pytest.raises(Exception) as ei:
            verify("snp-report", DSTACK.read("report"),
                   collateral=[DSTACK.read(k) for k in ("vek", "cert_chain", "crl")], at=DSTACK.verify_time)
    assert ei.value.code == "revocation.amd_crl_expired"
