"""Flow 1 with a GPU, over real HTTP (loopback) on the session's database: a CVM's sim TEE report
and an H100-shaped report both bound to the challenge and key, the GPU's device chain under a test
root (pinned for this test only, as TrustRoots documents), its OCSP answers as collateral.

- good OCSP: issued, the EAR affirms the GPU, notAfter capped at the OCSP answers' nextUpdate;
- no OCSP (for a GPU whose answers the CA does not hold: the CA keeps what it was sent,
  tests/integration/test_nvidia_ocsp_cache.py): refused revocation.nvidia_ocsp_missing, nothing issued;
  a policy with revocation.allow_unchecked issues it with the warning in the certificate's EAR;
- a dry run of a candidate without allow_unchecked says which recorded issuances it would refuse;
- re-appraisal (issue 14): a revoked answer learned later concerns exactly that GPU's certificate, and the
  collateral duty, refreshing from the replayed NVIDIA responder, revokes or flags exactly those certificates.
"""

from __future__ import annotations

import base64
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from werkzeug.serving import make_server

from ca_service.agent.client import make_csr
from ca_service.api.app import create_app
from ca_service.ca.profile import ear_from_certificate
from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value
from ca_service.services import dryrun, issuance, policies, tokens
from tests.conftest import certificate_count
from tests.unit.evidence.nvidia.fakenvidia import VECTOR, FakeNvidia

FAKE = FakeNvidia()
NOW = datetime.now(UTC)  # the sim TEE's certificates are made at init: the CA runs on its real clock
SIM = """  sim:
    tcb_status: [UpToDate]
    debug: false
    mrtd: ["84c7147e2fed6ef5d1e551583e58d4e0a32bac930402f1030e4b095387b5c8eb33f25789478a4007a2a09da4cf767237"]
"""


def _policy(name: str, extra: str = "") -> str:
    return (f"name: {name}\nevidence:\n  required: [sim, nvidia-gpu]\n{SIM}  nvidia-gpu:\n    min_driver: '500.0'\n"
            f"{extra}certificate:\n  max_lifetime: 24h\n  san:\n    dns: ['*.cvm.local']\n")


@pytest.fixture(scope="module")
def ca(ca_settings, sim_tee) -> Iterator[dict[str, Any]]:
    from ca_service.services.container import Services

    svc = Services.create(ca_settings)
    for doc in (_policy("sim-gpu"), _policy("sim-gpu-lenient", "revocation:\n  allow_unchecked: true\n")):
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        policies.activate(svc, ref.policy.name, ref.version, actor="test")
    admin = tokens.create_token(svc, role="admin", name="gpu-issuance", expires_in=None, actor="test")
    roots = issuance.trust_roots
    mp = pytest.MonkeyPatch()  # the test device root, pinned beside the vendor pins for this CA only
    def with_test_root(s: Any) -> Any:
        return FAKE.roots.__class__(**{**roots(s).__dict__,
                                       "nvidia_device": roots(s).nvidia_device | FAKE.roots.nvidia_device})

    from ca_service.services import reappraisal

    for module in (issuance, dryrun, reappraisal):  # every service that verifies (each imported the name)
        mp.setattr(module, "trust_roots", with_test_root)
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield {"svc": svc, "url": f"http://127.0.0.1:{server.server_port}", "tee": sim_tee,
               "admin": {"Authorization": f"Bearer {admin.secret}"}}
    finally:
        server.shutdown()
        t.join(5)
        mp.undo()
        svc.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _gpu_report(nonce32: bytes, gpu: FakeNvidia = FAKE) -> bytes:
    """The real report's layout with the requester nonce (bytes 4..36, signed) set, re-signed by the test AK."""
    raw = VECTOR.read("report")
    return gpu.report(raw[:4] + nonce32 + raw[36:])


def _issue(ca: dict[str, Any], policy: str, ocsp: list[bytes], gpu: FakeNvidia = FAKE) -> requests.Response:
    ch = requests.post(f"{ca['url']}/v1/challenges", timeout=30).json()
    key = ec.generate_private_key(ec.SECP256R1())
    binding = binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = ca["tee"].report(binding)
    body = {"challenge_id": ch["id"], "policy": policy,
            "csr": make_csr(key, ("gpu.cvm.local",)).public_bytes(Encoding.PEM).decode(),
            "evidence": [{"type": "sim", "data": _b64(sim)},
                         {"type": "nvidia-gpu", "data": _b64(_gpu_report(binding[:32], gpu)),
                          "collateral": [_b64(gpu.chain_pem()), *(_b64(o) for o in ocsp)]}]}
    return requests.post(f"{ca['url']}/v1/certificates", json=body, timeout=60)


def test_issued_with_good_ocsp_and_capped_by_it(ca):
    next_update = NOW + timedelta(hours=2)
    r = _issue(ca, "sim-gpu", FAKE.all_good(this_update=NOW - timedelta(hours=1), next_update=next_update))
    assert r.status_code == 201, r.text
    leaf = x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0]
    assert leaf.not_valid_after_utc <= next_update  # never outlives the OCSP answers
    gpu = ear_from_certificate(leaf)["submods"]["nvidia-gpu"]
    assert gpu["ear.status"] == "affirming" and "ca-service.warnings" not in gpu
    assert {k for k in gpu["ca-service.collateral-sha256"] if k.startswith("ocsp")} == {"ocsp0", "ocsp1", "ocsp2"}
    # the CA keeps the answers: the same GPU without any is judged by them, and capped by them again
    r = _issue(ca, "sim-gpu", [])
    assert r.status_code == 201, r.text
    leaf = x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0]
    assert leaf.not_valid_after_utc <= next_update
    used = ear_from_certificate(leaf)["submods"]["nvidia-gpu"]["ca-service.collateral"]
    assert {u["source"] for u in used if u["item"] == "nvidia.ocsp"} == {"cache"} and len(used) >= 4


def test_without_ocsp_refused_or_warned_by_policy(ca):
    before = certificate_count(ca["svc"])
    r = _issue(ca, "sim-gpu", [], FAKE.other_device())
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "revocation.nvidia_ocsp_missing", r.text
    gpu = FAKE.other_device()
    # only the GPU's own BROM answer (the CA may hold good answers for the shared CAs above it, or none)
    expired = [gpu.ocsp(3, this_update=NOW - timedelta(days=9), next_update=NOW - timedelta(days=2))]
    r = _issue(ca, "sim-gpu", expired, gpu)
    assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_expired", r.text
    assert certificate_count(ca["svc"]) == before
    r = _issue(ca, "sim-gpu-lenient", [], FAKE.other_device())
    assert r.status_code == 201, r.text
    gpu = ear_from_certificate(x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0])[
        "submods"]["nvidia-gpu"]
    assert gpu["ear.status"] == "warning"
    assert gpu["ca-service.warnings"][0].startswith("revocation.nvidia_ocsp_missing")
    # a candidate without allow_unchecked would refuse that issuance, and the dry run says why
    r = requests.post(f"{ca['url']}/v1/policies/sim-gpu-lenient/dry-run", headers=ca["admin"], timeout=60,
                      json={"document": _policy("sim-gpu-lenient")})
    assert r.status_code == 200, r.text
    items = r.json()["results"]
    assert items and all(i["outcome"] == "error" and i["error"]["code"] == "revocation.nvidia_ocsp_missing"
                         for i in items), [i.get("error") for i in items]
    # and the policy as it is (allow_unchecked) would admit them again
    r = requests.post(f"{ca['url']}/v1/policies/sim-gpu-lenient/dry-run", headers=ca["admin"], timeout=60,
                      json={"document": _policy("sim-gpu-lenient", "revocation:\n  allow_unchecked: true\n")})
    assert r.status_code == 200 and {i["outcome"] for i in r.json()["results"]} == {"pass"}, r.text


def test_a_revoked_answer_the_ca_learns_later_reappraises_that_gpus_certificate(ca):
    """issue 14: an NVIDIA update that changes a verdict. A GPU's certificate is issued with good answers;
    later a request brings a revoked answer for its GSP BROM (verified and kept by the CA, the request
    refused). The change concerns that certificate only, and re-appraised it is refused as revoked."""
    from ca_service.collateral.endpoints import endpoint_for
    from ca_service.evidence.needs import NvidiaOcsp, needs_for
    from ca_service.services import reappraisal

    gpu, other = FAKE.other_device(), FAKE.other_device()
    good = dict(this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(hours=3))
    r = _issue(ca, "sim-gpu", gpu.all_good(**good), gpu)
    assert r.status_code == 201, r.text
    serial = r.json()["serial"]
    assert _issue(ca, "sim-gpu", other.all_good(**good), other).status_code == 201
    later = dict(this_update=NOW - timedelta(minutes=30), next_update=NOW + timedelta(hours=3))
    revoked = gpu.all_good(**good)[:2] + [gpu.ocsp(3, status=ocsp.OCSPCertStatus.REVOKED, **later)]
    r = _issue(ca, "sim-gpu", revoked, gpu)
    assert r.status_code == 422 and r.json()["code"] == "evidence.certificate_revoked", r.text
    (alternative,) = needs_for("nvidia-gpu", gpu.report(), [gpu.chain_pem()], FAKE.roots)
    brom = [endpoint_for(n) for n in alternative if isinstance(n, NvidiaOcsp)][-1]
    found = reappraisal.reappraise(ca["svc"], changed={(brom.kind.value, brom.key)})
    assert [f.serial for f in found] == [serial]
    assert found[0].after == "refused" and "evidence.certificate_revoked" in found[0].reasons[0], found[0]


def test_the_duty_refreshes_a_revoked_answer_and_acts_on_exactly_that_gpus_certificates(ca, monkeypatch):
    """issue 14 end to end for NVIDIA: certificates issued over HTTP with good answers; later NVIDIA's
    responder (the loopback replay, as the mirror of ocsp.ndis.nvidia.com) answers revoked for two GPUs'
    GSP BROM certificates. The collateral duty's refresh brings those answers into the CA's cache, finds
    exactly them changed (status good -> revoked; the shared CAs' answers, good again, are no change), and
    acts on exactly those GPUs' certificates as their policies say: revoked (on the CRL) under a revoke
    policy, flagged under the default warn; a third GPU's certificate is untouched."""
    from ca_service.collateral.endpoints import endpoint_for
    from ca_service.collateral.fetchers import RequestsFetcher
    from ca_service.evidence.needs import NvidiaOcsp, needs_for
    from ca_service.services import collateral_duty, reappraisal
    from tests.collateral.replay import mirrors, serve

    svc = ca["svc"]
    ref, _ = policies.apply_policy(svc, _policy("sim-gpu-revoke", "collateral:\n  on_collateral_update: revoke\n"),
                                   actor="test")
    policies.activate(svc, ref.policy.name, ref.version, actor="test")
    monkeypatch.setattr(collateral_duty, "trust_roots", reappraisal.trust_roots)  # the test device root too
    good = dict(this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(hours=3))
    gpus = {"revoked": FAKE.other_device(), "flagged": FAKE.other_device(), "bystander": FAKE.other_device()}
    serials = {}
    for role, policy in (("revoked", "sim-gpu-revoke"), ("flagged", "sim-gpu"), ("bystander", "sim-gpu-revoke")):
        r = _issue(ca, policy, gpus[role].all_good(**good), gpus[role])
        assert r.status_code == 201, r.text
        serials[role] = r.json()["serial"]
    assert collateral_duty.run(svc, trigger="worker", actor="test").outcome == "done"  # its mark: the answers held
    later = dict(this_update=NOW - timedelta(minutes=30), next_update=NOW + timedelta(hours=3))
    entries, broms = [], {}
    for role, gpu in gpus.items():
        (alternative,) = needs_for("nvidia-gpu", gpu.report(), [gpu.chain_pem()], FAKE.roots)
        eps = [endpoint_for(n) for n in alternative if isinstance(n, NvidiaOcsp)]
        answers = gpu.all_good(**later)
        if role != "bystander":
            answers[-1] = gpu.ocsp(3, status=ocsp.OCSPCertStatus.REVOKED, **later)
            broms[role] = eps[-1].key
        entries += [{"url": ep.url, "status": 200, "headers": {"Content-Type": "application/ocsp-response"},
                     "body_b64": _b64(a), "fetched_at": NOW.isoformat()} for ep, a in zip(eps, answers, strict=True)]
    with serve(entries) as (replay, base):
        out = collateral_duty.run(svc, trigger="refresh", actor="test", fetcher=RequestsFetcher(mirrors=mirrors(base)),
                                  within=timedelta(days=30))
    assert out.outcome == "done" and out.refresh is not None
    assert sorted(c.key for c in out.changes) == sorted(broms.values()), [c.to_json() for c in out.changes]
    assert [c.reason for c in out.changes] == ["OCSP status good -> revoked"] * 2
    assert sorted((a["serial"], a["action"]) for a in out.actions) == sorted(
        [(serials["revoked"], "revoke"), (serials["flagged"], "warn")])
    got = {role: requests.get(f"{ca['url']}/v1/certificates/{s}", timeout=30).json() for role, s in serials.items()}
    assert got["revoked"]["status"] == "revoked"
    assert got["flagged"]["status"] == "valid"
    flag = got["flagged"]["appraisal"]["reappraisal"]
    assert flag["after"] == "refused" and "evidence.certificate_revoked" in flag["reasons"][0], flag
    assert got["bystander"]["status"] == "valid" and "reappraisal" not in got["bystander"]["appraisal"]
    crl = x509.load_der_x509_crl(requests.get(f"{ca['url']}/v1/ca/crl", timeout=30).content)
    listed = {format(e.serial_number, "x") for e in crl}
    assert serials["revoked"] in listed and serials["flagged"] not in listed and serials["bystander"] not in listed
