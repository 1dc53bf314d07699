"""NVIDIA OCSP as the CA's own collateral, as an operator runs it: ``ca-service init`` + ``ca-service
serve`` (online, ``CA_SERVICE_COLLATERAL_MIRRORS`` pointing ocsp.ndis.nvidia.com at a loopback replay of
the responder) on the session's database (PostgreSQL with CA_SERVICE_TEST_DATABASE), the test device
root pinned by ``CA_SERVICE_INSECURE_TEST_ROOTS=nvidia_device=...`` (refused in production).

A GPU issuance that sends only its device chain: the CA POSTs one OCSP request per certificate, caches
the answers (source ``vendor``), caps the certificate at their nextUpdate; the next issuance is judged
by the cache (source ``cache``); a GPU whose BROM the responder does not know is refused
``revocation.nvidia_ocsp_missing``.
"""

from __future__ import annotations

import base64
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.agent.client import make_csr
from ca_service.collateral.endpoints import endpoint_for
from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value
from ca_service.evidence.needs import needs_for, served
from ca_service.services.bootstrap import load_sim_tee
from tests.collateral.replay import serve
from tests.conftest import make_settings
from tests.integration.test_reappraise_testroot import running_ca
from tests.unit.evidence.nvidia.fakenvidia import VECTOR, FakeNvidia

ROOT = FakeNvidia()
NOW = datetime.now(UTC)
NEXT_UPDATE = NOW + timedelta(hours=5)
POLICY = """name: sim-gpu
evidence:
  required: [sim, nvidia-gpu]
  sim:
    tcb_status: [UpToDate]
    debug: false
  nvidia-gpu:
    min_driver: '500.0'
certificate:
  max_lifetime: 24h
  san:
    dns: ['*.cvm.local']
"""


def _entries(gpu: FakeNvidia) -> list[dict[str, Any]]:
    (alternative,) = needs_for("nvidia-gpu", gpu.report(), [gpu.chain_pem()], ROOT.roots)
    answers = gpu.all_good(this_update=NOW - timedelta(hours=1), next_update=NEXT_UPDATE)
    return [{"url": endpoint_for(n).url, "status": 200, "headers": {"Content-Type": "application/ocsp-response"},
             "body_b64": base64.b64encode(a).decode(), "fetched_at": NOW.isoformat()}
            for n, a in zip(served(alternative), answers, strict=True)]


def _issue(ca: Any, tee: Any, gpu: FakeNvidia) -> requests.Response:
    ch = requests.post(f"{ca.url}/v1/challenges", timeout=30).json()
    key = ec.generate_private_key(ec.SECP256R1())
    binding = binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key()))
    raw = VECTOR.read("report")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = tee.report(binding)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return requests.post(f"{ca.url}/v1/certificates", timeout=60, json={
        "challenge_id": ch["id"], "policy": "sim-gpu",
        "csr": make_csr(key, ("gpu.cvm.local",)).public_bytes(Encoding.PEM).decode(),
        "evidence": [{"type": "sim", "data": b64(sim)},
                     {"type": "nvidia-gpu", "data": b64(gpu.report(raw[:4] + binding[:32] + raw[36:])),
                      "collateral": [b64(gpu.chain_pem())]}]})


def _ocsp_used(r: requests.Response) -> list[dict[str, Any]]:
    assert r.status_code == 201, r.text
    return [u for u in r.json()["appraisal"]["collateral"]["nvidia-gpu"] if u["item"] == "nvidia.ocsp"]


def test_the_ca_asks_nvidia_caches_and_judges_by_its_answers(tmp_path_factory, db_url_factory, monkeypatch):
    gpu = ROOT.other_device()
    root_pem = tmp_path_factory.mktemp("nvidia-root") / "root.pem"
    root_pem.write_bytes(ROOT.certs[0].public_bytes(Encoding.PEM))
    db_url = db_url_factory()
    with serve(_entries(gpu)) as (replay, base):
        monkeypatch.setenv("CA_SERVICE_COLLATERAL", "online")
        monkeypatch.setenv("CA_SERVICE_COLLATERAL_MIRRORS", f"ocsp.ndis.nvidia.com={base}")
        with running_ca(tmp_path_factory, db_url, f"nvidia_device={root_pem}", {"sim-gpu.yaml": POLICY}, b"[]",
                        None) as ca:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tee = load_sim_tee(make_settings(ca.home, db_url))
            r = _issue(ca, tee, gpu)
            used = _ocsp_used(r)
            assert len(used) == 3 and {u["source"] for u in used} == {"vendor"}, used
            assert {u["url"].removeprefix("https://ocsp.ndis.nvidia.com") for u in used} <= set(replay.requests)
            leaf = x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0]
            assert leaf.not_valid_after_utc <= NEXT_UPDATE  # never outlives NVIDIA's answers
            # the responder is gone: the CA's cache judges the next issuance
            replay.set([])
            asked = len(replay.requests)
            assert {u["source"] for u in _ocsp_used(_issue(ca, tee, gpu))} == {"cache"}
            assert len(replay.requests) == asked  # within the answers' window minus the margin: not asked again
            # a GPU whose BROM NVIDIA's responder does not know: refused, naming the item
            r = _issue(ca, tee, ROOT.other_device())
            assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_missing", r.text


def test_offline_nothing_is_asked(tmp_path_factory, db_url_factory, monkeypatch):
    """Offline (the default), the same CA asks no one: a GPU without answers is refused missing."""
    root_pem = tmp_path_factory.mktemp("nvidia-root") / "root.pem"
    root_pem.write_bytes(ROOT.certs[0].public_bytes(Encoding.PEM))
    db_url = db_url_factory()
    gpu = ROOT.other_device()
    with serve(_entries(gpu)) as (replay, base):
        monkeypatch.setenv("CA_SERVICE_COLLATERAL", "offline")
        monkeypatch.setenv("CA_SERVICE_COLLATERAL_MIRRORS", f"ocsp.ndis.nvidia.com={base}")
        with running_ca(tmp_path_factory, db_url, f"nvidia_device={root_pem}", {"sim-gpu.yaml": POLICY}, b"[]",
                        None) as ca:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tee = load_sim_tee(make_settings(ca.home, db_url))
            r = _issue(ca, tee, gpu)
            assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_missing", r.text
            assert replay.requests == []
