"""NVIDIA OCSP answers as the CA's own collateral (issue 11 sections 1 and 2), over real HTTP (loopback)
against a CA of its own (its cache starts empty) on the session's database (PostgreSQL in the
PostgreSQL run). The device chains are under a test root pinned for this CA only (TrustRoots documents
how); each test uses its own GPU (its own GSP BROM) so its answers are its own.

- answers a request sends are verified, cached (source ``request``) and judge later requests
  without any (source ``cache``); an older answer never displaces a newer cached one;
- expired answers in the cache are refused offline (``revocation.nvidia_ocsp_expired``) unless the
  policy allows it, and a fresh answer sent fills in;
- a revoked answer is kept: the device stays refused;
- online, the CA asks the (replayed) responder itself by POST (source ``vendor``), and a refresh asks
  again with the issuer chain it kept;
- an export of the cache imported into a fresh CA judges the same way there.
"""

from __future__ import annotations

import base64
import json
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import func, select
from werkzeug.serving import make_server

from ca_service.api.app import create_app
from ca_service.collateral.endpoints import endpoint_for
from ca_service.collateral.fetchers import RequestsFetcher, dump_bundle
from ca_service.db.models.collateral import CollateralItem
from ca_service.evidence.needs import NvidiaOcsp, needs_for
from ca_service.services import collateral, collateral_bundles, dryrun, issuance, policies
from ca_service.services.bootstrap import load_sim_tee
from tests.collateral.fixtures import fresh_services
from tests.collateral.replay import mirrors, serve
from tests.unit.evidence.nvidia.fakenvidia import VECTOR, FakeNvidia

ROOT = FakeNvidia()
NOW = datetime.now(UTC)
SIM = """  sim:
    tcb_status: [UpToDate]
    debug: false
"""


def _policy(name: str, extra: str = "") -> str:
    return (f"name: {name}\nevidence:\n  required: [sim, nvidia-gpu]\n{SIM}  nvidia-gpu:\n    min_driver: '500.0'\n"
            f"{extra}certificate:\n  max_lifetime: 24h\n")


def _with_test_root(roots: Any) -> Any:
    def patched(s: Any) -> Any:
        r = roots(s)
        return r.__class__(**{**r.__dict__, "nvidia_device": r.nvidia_device | ROOT.roots.nvidia_device})
    return patched


def _start(svc: Any) -> tuple[Any, str]:
    server = make_server("127.0.0.1", 0, create_app(services=svc), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _new_ca(tmp_path_factory: Any, db_url_factory: Any) -> Any:
    svc = fresh_services(tmp_path_factory, db_url_factory)
    for doc in (_policy("gpu"), _policy("gpu-lenient", "revocation:\n  allow_unchecked: true\n")):
        ref, _ = policies.apply_policy(svc, doc, actor="test")
        policies.activate(svc, ref.policy.name, ref.version, actor="test")
    return svc


@pytest.fixture(scope="module")
def ca(tmp_path_factory, db_url_factory) -> Iterator[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    roots = issuance.trust_roots
    for module in (issuance, dryrun):
        mp.setattr(module, "trust_roots", _with_test_root(roots))
    import ca_service.services.attestation as attestation

    mp.setattr(attestation, "trust_roots", _with_test_root(roots))
    svc = _new_ca(tmp_path_factory, db_url_factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(svc.settings)
    server, url = _start(svc)
    try:
        yield {"svc": svc, "url": url, "tee": tee, "factories": (tmp_path_factory, db_url_factory)}
    finally:
        server.shutdown()
        mp.undo()
        svc.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _attest(ca: dict[str, Any], gpu: FakeNvidia, answers: list[bytes], policy: str = "gpu",
            url: str | None = None, tee: Any = None) -> requests.Response:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = (tee or ca["tee"]).report(bytes(64))
    body = {"policy": policy, "evidence": [
        {"type": "sim", "data": _b64(sim)},
        {"type": "nvidia-gpu", "data": _b64(gpu.report(VECTOR.read("report"))),
         "collateral": [_b64(gpu.chain_pem()), *(_b64(a) for a in answers)]}]}
    return requests.post(f"{url or ca['url']}/v1/attestations", json=body, timeout=60)


def _ocsp_used(r: requests.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    used = r.json()["ear_claims"]["submods"]["nvidia-gpu"]["ca-service.collateral"]
    return sorted((u for u in used if u["item"] == "nvidia.ocsp"), key=lambda u: u["key"])


def _good(gpu: FakeNvidia, age: timedelta = timedelta(hours=1), valid: timedelta = timedelta(days=2)) -> list[bytes]:
    return gpu.all_good(this_update=NOW - age, next_update=NOW - age + valid)


def _rows(svc: Any, key_part: str | None = None) -> int:
    with svc.db.read() as session:
        stmt = select(func.count()).select_from(CollateralItem).where(CollateralItem.kind == "nvidia.ocsp")
        if key_part is not None:
            stmt = stmt.where(CollateralItem.key.contains(key_part))
        return int(session.scalar(stmt) or 0)


def _brom_key(gpu: FakeNvidia) -> str:
    return format(gpu.certs[3].serial_number, "x")


def test_sent_answers_are_cached_and_judge_later_requests(ca):
    gpu = ROOT.other_device()
    r = _attest(ca, gpu, _good(gpu))
    used = _ocsp_used(r)
    assert len(used) == 3 and {u["source"] for u in used} <= {"request", "cache"}
    assert any(u["source"] == "request" and u["key"].endswith(_brom_key(gpu)) for u in used)
    assert r.json()["ear_claims"]["submods"]["nvidia-gpu"]["ear.status"] == "affirming"
    # the same GPU again, without answers: judged by the CA's cache
    again = _ocsp_used(_attest(ca, gpu, []))
    assert [u["sha256"] for u in again] == [u["sha256"] for u in used]
    assert {u["source"] for u in again} == {"cache"}
    expires = datetime.fromisoformat(_attest(ca, gpu, []).json()["ear_claims"]["ca-service.collateral-expires-at"])
    assert expires <= NOW - timedelta(hours=1) + timedelta(days=2)


def test_an_older_answer_never_displaces_a_newer_cached_one(ca):
    gpu = ROOT.other_device()
    newer = _ocsp_used(_attest(ca, gpu, _good(gpu, age=timedelta(hours=1))))
    older = _good(gpu, age=timedelta(hours=30))  # still valid, but older than what the CA holds
    used = _ocsp_used(_attest(ca, gpu, older))
    assert [u["sha256"] for u in used] == [u["sha256"] for u in newer]
    assert {u["source"] for u in used} == {"cache"}
    assert _rows(ca["svc"], _brom_key(gpu)) == 2  # verified and kept, never chosen over the newer one


def test_a_wrongly_signed_answer_does_not_hide_the_cas_good_one(ca):
    gpu = ROOT.other_device()
    _ocsp_used(_attest(ca, gpu, _good(gpu)))
    forged = [gpu.ocsp(i, signer="stranger", this_update=NOW, next_update=NOW + timedelta(days=9)) for i in (1, 2, 3)]
    assert {u["source"] for u in _ocsp_used(_attest(ca, gpu, forged))} == {"cache"}
    # on its own (nothing cached for another GPU's BROM), the forged answer is refused by its state
    other = ROOT.other_device()
    r = _attest(ca, other, [other.ocsp(3, signer="stranger", this_update=NOW, next_update=NOW + timedelta(days=1))])
    assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_bad_signature", r.text


def test_expired_cached_answers_are_refused_unless_the_policy_allows_then_filled_by_fresh_ones(ca):
    gpu = ROOT.other_device()
    expired = _good(gpu, age=timedelta(days=9), valid=timedelta(days=2))
    r = _attest(ca, gpu, expired)
    assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_expired", r.text
    assert _rows(ca["svc"], _brom_key(gpu)) == 1  # kept: it is genuine, only out of date
    r = _attest(ca, gpu, [])  # offline, the cache's expired answer decides
    assert r.status_code == 422 and r.json()["code"] == "revocation.nvidia_ocsp_expired", r.text
    r = _attest(ca, gpu, [], policy="gpu-lenient")
    assert r.status_code == 200, r.text
    assert r.json()["ear_claims"]["submods"]["nvidia-gpu"]["ca-service.warnings"] == ["revocation.nvidia_ocsp_expired"]
    used = _ocsp_used(_attest(ca, gpu, _good(gpu)))  # a fresh answer fills what the CA lacks
    assert any(u["source"] == "request" and u["key"].endswith(_brom_key(gpu)) for u in used)


def test_a_revoked_answer_is_kept_and_the_device_stays_refused(ca):
    gpu = ROOT.other_device()
    revoked = gpu.all_good(this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=1))
    revoked[2] = gpu.ocsp(3, status=ocsp.OCSPCertStatus.REVOKED, this_update=NOW - timedelta(hours=1),
                          next_update=NOW + timedelta(days=1))
    r = _attest(ca, gpu, revoked)
    assert r.status_code == 422 and r.json()["code"] == "evidence.certificate_revoked", r.text
    r = _attest(ca, gpu, [])
    assert r.status_code == 422 and r.json()["code"] == "evidence.certificate_revoked", r.text


def test_online_the_ca_asks_the_responder_and_a_refresh_asks_again(ca):
    svc, gpu = ca["svc"], ROOT.other_device()
    (alternative,) = needs_for("nvidia-gpu", gpu.report(VECTOR.read("report")), [gpu.chain_pem()], ROOT.roots)
    eps = [endpoint_for(n) for n in alternative if isinstance(n, NvidiaOcsp)]

    def entries(answers: list[bytes]) -> list[dict[str, Any]]:
        return [{"url": ep.url, "status": 200, "headers": {"Content-Type": "application/ocsp-response"},
                 "body_b64": _b64(a), "fetched_at": NOW.isoformat()} for ep, a in zip(eps, answers, strict=True)]

    first = _good(gpu, age=timedelta(hours=2))
    with serve(entries(first)) as (replay, base):
        fetcher = RequestsFetcher(mirrors=mirrors(base))
        collateral.attach_fetcher(svc, fetcher)
        try:
            used = _ocsp_used(_attest(ca, gpu, []))
        finally:
            collateral.attach_fetcher(svc, None)
        brom = next(u for u in used if u["key"].endswith(_brom_key(gpu)))
        assert brom["source"] == "vendor" and brom["url"] == eps[2].url
        assert eps[2].url.removeprefix("https://ocsp.ndis.nvidia.com") in replay.requests  # POSTed, by its GET form
        assert {u["source"] for u in _ocsp_used(_attest(ca, gpu, []))} == {"cache"}  # offline again
        # a refresh rebuilds the endpoint from the cached URL and verifies with the kept issuer chain
        replay.set(entries(_good(gpu, age=timedelta(minutes=10))))
        before = _rows(svc, _brom_key(gpu))
        result = collateral.refresh(svc, fetcher, within=timedelta(days=30), roots=issuance.trust_roots(svc))
        mine = {ep.url for ep in eps}  # the other tests' GPUs are not served here: those answer 404
        assert not [x for x in result.refused if x["url"] in mine], result.refused
        assert _rows(svc, _brom_key(gpu)) == before + 1
    newest = next(u for u in _ocsp_used(_attest(ca, gpu, [])) if u["key"].endswith(_brom_key(gpu)))
    assert newest["sha256"] != brom["sha256"]


def test_an_exported_cache_judges_the_same_in_a_fresh_ca(ca):
    gpu = ROOT.other_device()
    used = _ocsp_used(_attest(ca, gpu, _good(gpu)))
    bundle = dump_bundle(collateral_bundles.cached_responses(ca["svc"]))
    fresh = _new_ca(*ca["factories"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = load_sim_tee(fresh.settings)
    server, url = _start(fresh)
    try:
        result = collateral.import_bundle(fresh, bundle, roots=_with_test_root(issuance.trust_roots)(fresh))
        assert result.added and not result.already_cached
        again = _ocsp_used(_attest(ca, gpu, [], url=url, tee=tee))
        assert [u["sha256"] for u in again] == [u["sha256"] for u in used]
        assert {u["source"] for u in again} == {"cache"}
    finally:
        server.shutdown()
        fresh.close()


def test_collateral_fetch_for_a_gpu_on_a_connected_machine_then_import(ca, tmp_path):
    """issue 14, air-gapped CAs: ``collateral fetch --for REPORT --device-chain CHAIN`` asks NVIDIA's
    responder (replayed) for exactly that GPU's answers and records each with the issuer chain it was
    verified with; the air-gapped CA imports the bundle (verified again) and judges by it."""
    from click.testing import CliRunner

    from ca_service.cli.main import cli

    gpu = ROOT.other_device()
    (alternative,) = needs_for("nvidia-gpu", gpu.report(VECTOR.read("report")), [gpu.chain_pem()], ROOT.roots)
    eps = [endpoint_for(n) for n in alternative if isinstance(n, NvidiaOcsp)]
    answers = _good(gpu)
    entries = [{"url": ep.url, "status": 200, "headers": {}, "body_b64": _b64(a), "fetched_at": NOW.isoformat()}
               for ep, a in zip(eps, answers, strict=True)]
    (tmp_path / "root.pem").write_bytes(ROOT.certs[0].public_bytes(Encoding.PEM))
    (tmp_path / "gpu.bin").write_bytes(gpu.report(VECTOR.read("report")))
    (tmp_path / "chain.pem").write_bytes(gpu.chain_pem())
    env = {"CA_SERVICE_PROFILE": "insecure-dev", "CA_SERVICE_HOME": str(tmp_path / "home"),
           "CA_SERVICE_INSECURE_TEST_ROOTS": f"nvidia_device={tmp_path / 'root.pem'}"}
    with serve(entries) as (replay, base), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(cli, ["collateral", "fetch", "--for", str(tmp_path / "gpu.bin"), "--device-chain",
                                       str(tmp_path / "chain.pem"), "--mirror", f"ocsp.ndis.nvidia.com={base}",
                                       "--json", str(tmp_path / "bundle.json")], env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    bundle = json.loads((tmp_path / "bundle.json").read_text())
    assert sorted(e["url"] for e in bundle) == sorted(ep.url for ep in eps)
    assert all("X-Ca-Service-Issuer-Chain" in e["headers"] for e in bundle)
    result = collateral.import_bundle(ca["svc"], (tmp_path / "bundle.json").read_bytes(),
                                      roots=issuance.trust_roots(ca["svc"]))
    assert len(result.added) == 3
    assert {u["source"] for u in _ocsp_used(_attest(ca, gpu, []))} == {"cache"}
