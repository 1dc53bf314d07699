"""Event logs over HTTP (docs/event-log.md): POST /v1/attestations with the real TDX vectors and their
logs, POST /v1/certificates with the sim TEE whose RTMRs replay a log holding loader measurements;
refusals are problem+json naming the RTMR; recorded logs are replayed again by a policy dry run."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca_service.api.app import create_app
from ca_service.ca.profile import ear_from_certificate
from ca_service.clock import FixedClock
from ca_service.crypto.keys import spki_der
from ca_service.evidence.binding import binding_value
from ca_service.evidence.sim.attester import SimMeasurements
from ca_service.services import dryrun, policies
from ca_service.services.container import Services
from tests.conftest import certificate_count
from tests.unit.evidence.eventlog import builders as b
from tests.vectors.manifest import vectors_for

REPO = Path(__file__).resolve().parents[2]
V = {v.path: v for v in vectors_for("tdx-eventlog")}
NEAR = V["tdx-eventlog/nearmpc-dstack-json"]
ENGINE = b"the vendor's training engine image"
ENGINE_DIGEST = "sha384:" + hashlib.sha384(ENGINE).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["code"] == code, body
    return body


def _apply(services, doc: str, name: str) -> None:
    ref, _ = policies.apply_policy(services, doc, actor="test")
    policies.activate(services, name, ref.version, actor="test")


@pytest.fixture(scope="module")
def tdx_policies(services):
    doc = (REPO / "policies" / "trusted-loader-tdx.yaml").read_text()
    _apply(services, doc, "trusted-loader-tdx")
    # the same pins without a loader: the real dstack TD then passes
    boot_only = doc.replace("name: trusted-loader-tdx", "name: tdx-boot-chain-test").split("    # SHA-384 of")[0]
    boot_only += "certificate:\n  max_lifetime: 6h\n  key_types: [ec-p256]\n  eku: [clientAuth]\n"
    _apply(services, boot_only, "tdx-boot-chain-test")


@pytest.fixture(scope="module")
def sim_loader_policy(services):
    doc = (REPO / "policies" / "sim.yaml").read_text().replace("name: sim", "name: sim-loader-evlog-test")
    doc = doc.replace("    mrtd:", f"    loader_digests: [\"{ENGINE_DIGEST}\"]\n    mrtd:")
    _apply(services, doc, "sim-loader-evlog-test")


def _vector_client(ca_settings, v):
    svc = Services.create(ca_settings, clock=FixedClock(v.verify_time))
    return svc, create_app(services=svc).test_client()


def _tdx_item(v, log: bytes | None, collateral: Path | None = None) -> dict:
    coll = collateral or (v.dir / v.files["collateral"])
    item = {"type": "tdx-quote", "data": _b64(v.read("quote")), "collateral": [_b64(coll.read_bytes())]}
    if log is not None:
        item["event_log"] = _b64(log)
    return item


def test_real_quote_and_log_appraised_as_of_its_time(ca_settings, tdx_policies):
    svc, client = _vector_client(ca_settings, NEAR)
    try:
        r = client.post("/v1/attestations", json={"policy": "tdx-boot-chain-test",
                                                  "evidence": [_tdx_item(NEAR, NEAR.read("event_log_json"))]})
        assert r.status_code == 200, r.get_json()
        out = r.get_json()
        assert out["appraisal"]["passed"] is True, [c for c in out["appraisal"]["checks"] if not c["passed"]]
        meas = out["ear_claims"]["submods"]["tdx-quote"]["ca-service.measurements"]
        assert meas["loaded_digests"] == []
        assert meas["event_log_sha256"] == hashlib.sha256(NEAR.read("event_log_json")).hexdigest()
        # the loader policy: every check passes but the loader digest, which the TD never measured
        r = client.post("/v1/attestations", json={"policy": "trusted-loader-tdx",
                                                  "evidence": [_tdx_item(NEAR, NEAR.read("event_log_json"))]})
        failed = [c for c in r.get_json()["appraisal"]["checks"] if not c["passed"]]
        assert [(c["claim"], c["actual"]) for c in failed] == [("loader_digests", [])]
    finally:
        svc.close()


def test_log_of_another_td_is_a_problem_naming_the_rtmr(ca_settings, tdx_policies):
    # (the CA's collateral cache only moves forward, so this module stays at the nearmpc vector's time;
    # the manifest's negative pairs are refused through the library and the CLI in tests/vectors)
    other, gce = V["tdx-eventlog/dstack-verifier-json"], V["tdx-eventlog/gce-cos113-ccel"]
    svc, client = _vector_client(ca_settings, NEAR)
    try:
        body = {"policy": "tdx-boot-chain-test", "evidence": [_tdx_item(NEAR, other.read("event_log_json"))]}
        p = _problem(client.post("/v1/attestations", json=body), 422, "evidence.event_log_mismatch")
        assert p["field"] == "rtmr0"
        # a truncated CCEL: its own code, never a 500
        body["evidence"][0]["event_log"] = _b64(gce.read("ccel")[:1000])
        p = _problem(client.post("/v1/attestations", json=body), 422, "evidence.event_log_malformed")
        assert p["field"].startswith("record[")
        # an IMA list alone cannot be replayed
        del body["evidence"][0]["event_log"]
        body["evidence"][0]["ima_log"] = _b64(b"10 " + b"ab" * 48 + b" ima-ng sha384:00 /bin/sh\n")
        _problem(client.post("/v1/attestations", json=body), 422, "evidence.event_log_unsupported")
    finally:
        svc.close()


def test_event_log_field_must_be_base64(client, tdx_policies):
    body = {"policy": "tdx-boot-chain-test", "evidence": [_tdx_item(NEAR, None)]}
    body["evidence"][0]["event_log"] = "not base64!"
    p = _problem(client.post("/v1/attestations", json=body), 422, "request.schema")
    assert p["errors"][0]["field"] == "evidence.0.event_log"


def _loader_log(engine: bytes = ENGINE) -> tuple[bytes, SimMeasurements]:
    boot = [e for e in json.loads(NEAR.read("event_log_json")) if e["imr"] != 3]
    events = [*boot, b.load_event("loader", b"loader build"), b.load_event("engine", engine)]
    regs = b.replay_json(events)
    return b.dumps(events), SimMeasurements(rtmr0=regs[0], rtmr1=regs[1], rtmr2=regs[2], rtmr3=regs[3])


def _boot_log() -> tuple[bytes, SimMeasurements]:
    """The same TD before its loader ran: the CVM's own evidence (docs/loader.md: a loader certificate
    links to a CVM certificate of the same MRTD and RTMR0-2)."""
    boot = [e for e in json.loads(NEAR.read("event_log_json")) if e["imr"] != 3]
    regs = b.replay_json(boot)
    return b.dumps(boot), SimMeasurements(rtmr0=regs[0], rtmr1=regs[1], rtmr2=regs[2], rtmr3=regs[3])


def _sim_body(issuer, sim_tee, log: bytes | None, m: SimMeasurements, policy: str) -> dict:
    ch = issuer.challenge()
    key = ec.generate_private_key(ec.SECP256R1())
    ev = sim_tee.report(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())), m)
    body, _ = issuer.body(challenge=ch, key=key, evidence=ev, policy=policy)
    if log is not None:
        body["evidence"][0]["event_log"] = _b64(log)
    return body


def test_sim_loader_certificate_from_a_replayed_log(issuer, client, services, sim_tee, sim_loader_policy):
    log, m = _loader_log()
    cvm = client.post("/v1/certificates", json=_sim_body(issuer, sim_tee, *_boot_log(), "sim"))
    assert cvm.status_code == 201, cvm.get_json()
    r = client.post("/v1/certificates", json=_sim_body(issuer, sim_tee, log, m, "sim-loader-evlog-test"))
    assert r.status_code == 201, r.get_json()
    out = r.get_json()
    assert out["ear"]["ca-service.cvm-serial"] == cvm.get_json()["serial"]
    checks = {c["claim"]: c for c in out["appraisal"]["checks"]}
    assert checks["loader_digests"]["passed"] is True and ENGINE_DIGEST in checks["loader_digests"]["actual"]
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(out["certificate_chain"].encode())
    meas = ear_from_certificate(leaf)["submods"]["sim"]["ca-service.measurements"]
    assert meas["loaded_digests"] == ["sha384:" + hashlib.sha384(b"loader build").hexdigest(), ENGINE_DIGEST]
    # a policy dry run replays the recorded log again (the log is stored with the evidence)
    report = dryrun.dry_run(services, "sim-loader-evlog-test", actor="test", serials=[out["serial"]])
    assert [i.outcome for i in report.items] == ["pass"], [i.to_json() for i in report.items]
    # and so does a re-appraisal (reappraise --dry-run): same status, nothing refused
    from sqlalchemy import select

    from ca_service.db.models import Certificate, EvidenceBlob
    from ca_service.services import reappraisal

    with services.db.read() as session:
        cert = session.scalars(select(Certificate).where(Certificate.serial == out["serial"])).one()
        refs = cert.evidence[0]
        assert refs["event_log_sha256"] == hashlib.sha256(log).hexdigest()
        blobs = {b.sha256: b.data for b in session.scalars(select(EvidenceBlob).where(
            EvidenceBlob.sha256.in_([refs["sha256"], refs["event_log_sha256"]])))}
        session.expunge(cert)
    again = reappraisal.reappraise_one(services, cert, blobs, services.clock.now())
    assert again.after == again.before and not again.changed, again.to_json()
    # a recorded log that is gone is a refusal, never a replay without it
    gone = reappraisal.reappraise_one(services, cert, {refs["sha256"]: blobs[refs["sha256"]]},
                                      services.clock.now())
    assert gone.after == "refused" and "event_log is no longer stored" in gone.reasons[0]


def test_sim_refusals(issuer, client, services, sim_tee, sim_loader_policy):
    before = certificate_count(services)
    log, m = _loader_log()
    # another engine in the log than the one the registers hold: the replay names RTMR3
    other, _ = _loader_log(b"another engine")
    p = _problem(client.post("/v1/certificates", json=_sim_body(issuer, sim_tee, other, m, "sim-loader-evlog-test")),
                 422, "evidence.event_log_mismatch")
    assert p["field"] == "rtmr3"
    # no log: the loader digest cannot be known, the appraisal fails closed
    p = _problem(client.post("/v1/certificates", json=_sim_body(issuer, sim_tee, None, m, "sim-loader-evlog-test")),
                 403, "appraisal.failed")
    assert [c["claim"] for c in p["failed_checks"]] == ["loader_digests"]
    # a TD that loaded another engine (log and registers agree): not a listed digest
    other_log, other_m = _loader_log(b"another engine")
    p = _problem(client.post("/v1/certificates",
                             json=_sim_body(issuer, sim_tee, other_log, other_m, "sim-loader-evlog-test")),
                 403, "appraisal.failed")
    assert [c["claim"] for c in p["failed_checks"]] == ["loader_digests"]
    assert certificate_count(services) == before
