"""Loader certificates over HTTP on a real database (SQLite, or PostgreSQL with
CA_SERVICE_TEST_DATABASE=postgres), the way a CVM agent and its trusted loader use the API
(docs/loader.md): the link to the CVM certificate, the refusals, the revocation cascade, and
loader-signed integrity reports checked against what the loader measured."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select

from ca_service.agent.client import make_csr
from ca_service.ca import integrity as pure
from ca_service.ca.loader_ext import cvm_reference
from ca_service.crypto.keys import spki_der
from ca_service.db.models import AuditEvent, Certificate, TlogEntry
from ca_service.evidence.binding import binding_value
from ca_service.evidence.sim.attester import SimTd
from ca_service.evidence.sim.eventlog import sim_boot_events
from ca_service.services import policies, tokens
from ca_service.tlog.leaves import decode_leaf

ENGINE_BYTES = b"ca-service demo training engine v1\n"
ENGINE = "sha384:" + hashlib.sha384(ENGINE_BYTES).hexdigest()  # the digest policies/trusted-loader.yaml lists
ARGS = pure.digest_of(b"--epochs 3")


@pytest.fixture(scope="module", autouse=True)
def loader_policy(services):
    source = resources.files("ca_service.data").joinpath("trusted-loader.yaml").read_text()
    ref, _ = policies.apply_policy(services, source, actor="test")
    policies.activate(services, ref.policy.name, ref.version, actor="test")
    return ref


@pytest.fixture
def admin(services):
    t = tokens.create_token(services, role="admin", name=f"ldr-{uuid.uuid4().hex[:6]}", expires_in=None, actor="test")
    return {"Authorization": f"Bearer {t.secret}"}


def _problem(resp, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["code"] == code, body
    return body


def _counts(services) -> tuple[int, int]:
    with services.db.read() as session:
        return (int(session.scalar(select(func.count()).select_from(Certificate)) or 0),
                int(session.scalar(select(func.count()).select_from(TlogEntry)) or 0))


class Party:
    """A TD (its own image, so its own TEE instance) with a CVM agent and a loader, over the test client."""

    def __init__(self, client, tee, image: str | None = None) -> None:
        self.client = client
        self.td = SimTd(tee, sim_boot_events(image or f"test image {uuid.uuid4()}"))

    def request(self, policy: str, *, key=None, cvm_serial: str | None = None, dns=()) -> Any:
        ch = self.client.post("/v1/challenges").get_json()
        key = key or ec.generate_private_key(ec.SECP256R1())
        report, log = self.td.evidence(binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())))
        body: dict[str, Any] = {
            "challenge_id": ch["id"], "csr": make_csr(key, dns).public_bytes(Encoding.PEM).decode(), "policy": policy,
            "evidence": [{"type": "sim", "data": base64.b64encode(report).decode(),
                          "event_log": base64.b64encode(log).decode()}]}
        if cvm_serial is not None:
            body["cvm_serial"] = cvm_serial
        resp = self.client.post("/v1/certificates", json=body)
        resp.key = key
        return resp

    def cvm(self) -> dict[str, Any]:
        resp = self.request("sim", dns=("t.cvm.local",))
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()

    def loader(self, engine: str = ENGINE, **kw) -> Any:
        self.td.measure("engine", engine)
        self.td.measure("args", ARGS)
        return self.request("trusted-loader", **kw)


@pytest.fixture
def party(client, sim_tee):
    return Party(client, sim_tee)


def test_loader_certificate_links_to_its_cvm(party, services):
    cvm = party.cvm()
    resp = party.loader()
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    leaf = x509.load_pem_x509_certificates(out["certificate_chain"].encode())[0]
    cvm_der = x509.load_pem_x509_certificates(cvm["certificate_chain"].encode())[0].public_bytes(Encoding.DER)
    ref = cvm_reference(leaf)
    assert ref is not None and ref.serial == cvm["serial"] and ref.sha256 == hashlib.sha256(cvm_der).hexdigest()
    ear = out["ear"]
    assert ear["ca-service.cvm-serial"] == cvm["serial"]
    assert ear["ca-service.instance-id"] == cvm["ear"]["ca-service.instance-id"]
    sub = ear["submods"]["sim"]
    assert sub["ca-service.engine"] == ENGINE and sub["ca-service.args"] == ARGS
    assert sub["ca-service.loaded"] == [{"role": "engine", "digest": ENGINE}, {"role": "args", "digest": ARGS}]
    assert sub["ca-service.measurements"]["rtmr3"] != "00" * 48
    assert [c for c in out["appraisal"]["checks"] if c["claim"] == "loader_digests"][0]["passed"] is True
    with services.db.read() as session:
        row = session.get(Certificate, out["serial"])
        assert row.cvm_serial == cvm["serial"] and row.policy_name == "trusted-loader"
        cvm_row = session.get(Certificate, cvm["serial"])
        assert row.not_after <= cvm_row.not_after and cvm_row.cvm_serial is None


def test_no_cvm_certificate_no_loader_certificate(party, services):
    before = _counts(services)
    body = _problem(party.loader(), 403, "loader.cvm_certificate_missing")
    assert body["instance"].startswith("sim mrtd ")
    assert _counts(services) == before  # no certificate, no log leaf


def test_another_engine_is_refused(party):
    party.cvm()
    other = pure.digest_of(b"an engine nobody published")
    body = _problem(party.loader(engine=other), 403, "appraisal.failed")
    failed = {c["claim"]: c for c in body["failed_checks"]}
    assert list(failed) == ["loader_digests"] and failed["loader_digests"]["actual"][0] == other


def test_a_named_cvm_certificate_must_be_this_instance(party, client, sim_tee):
    elsewhere = Party(client, sim_tee).cvm()
    party.cvm()
    _problem(party.loader(cvm_serial=elsewhere["serial"]), 403, "loader.cvm_certificate_missing")


def test_a_loader_certificate_is_no_cvm_certificate(party, services):
    party.cvm()
    first = party.loader()
    assert first.status_code == 201
    # revoke the CVM certificate: the loader certificate of the same instance must not stand in for it
    from ca_service.services.revocation import revoke

    revoke(services, first.get_json()["ear"]["ca-service.cvm-serial"], reason="superseded", actor="test")
    _problem(party.request("trusted-loader"), 403, "loader.cvm_certificate_missing")


def test_revoking_the_cvm_revokes_its_loaders(party, client, services, admin):
    cvm = party.cvm()
    loaders = [party.loader().get_json()["serial"], party.request("trusted-loader").get_json()["serial"]]
    r = client.post(f"/v1/certificates/{cvm['serial']}/revoke", json={"reason": "keyCompromise"}, headers=admin)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["loaders"] == [{"serial": s, "status": "revoked"} for s in loaders]
    for serial in loaders:
        got = client.get(f"/v1/certificates/{serial}").get_json()
        assert (got["status"], got["revocation_reason"]) == ("revoked", "keyCompromise")
    crl = x509.load_der_x509_crl(client.get("/v1/ca/crl").data)
    for serial in [cvm["serial"], *loaders]:
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    with services.db.read() as session:
        audits = session.execute(select(AuditEvent).where(AuditEvent.action == "certificate.revoke",
                                                          AuditEvent.target.in_(loaders))).scalars().all()
        assert sorted(a.target for a in audits) == sorted(loaders)
        assert all(a.detail["cvm_serial"] == cvm["serial"] for a in audits)
        leaves = [decode_leaf(e.leaf) for e in session.execute(select(TlogEntry).order_by(TlogEntry.idx.desc())
                                                                .limit(3)).scalars()]
    assert sorted(leaf.body["serial"] for leaf in leaves if leaf.type == "revocation") == sorted([cvm["serial"],
                                                                                                 *loaders])
    _problem(party.request("trusted-loader"), 403, "loader.cvm_certificate_missing")


def test_retiring_a_cvm_policy_with_revoke_takes_the_loaders(client, sim_tee, services):
    doc = resources.files("ca_service.data").joinpath("sim.yaml").read_text().replace("name: sim", "name: sim-retire")
    ref, _ = policies.apply_policy(services, doc, actor="test")
    policies.activate(services, "sim-retire", ref.version, actor="test")
    p = Party(client, sim_tee)
    resp = p.request("sim-retire", dns=("r.cvm.local",))
    assert resp.status_code == 201, resp.get_json()
    loader = p.loader().get_json()["serial"]
    # a version can be retired once another is active
    ref2, _ = policies.apply_policy(services, doc.replace("Development CVMs", "Development CVMs v2"), actor="test")
    policies.activate(services, "sim-retire", ref2.version, actor="test")
    result = policies.retire(services, "sim-retire", ref.version, actor="test", revoke=True)
    assert set(result.revoked) == {resp.get_json()["serial"], loader}
    assert client.get(f"/v1/certificates/{loader}").get_json()["status"] == "revoked"


# --- integrity reports signed by the loader -----------------------------------------------------------


def _report(serial: str, *, engine: str = ENGINE, args: str = ARGS, order: str | None = None) -> pure.IntegrityReport:
    return pure.build_report(order_id=order or f"o-{uuid.uuid4().hex[:8]}", loader_certificate_serial=serial,
                             issued_at=datetime.now(UTC), arguments_digest=args,
                             components=[pure.Component("engine", engine),
                                         pure.Component("dataset/lab", pure.digest_of(b"lab", "sha256"))])


def _body(report: pure.IntegrityReport, key) -> dict[str, str]:
    sig, alg = pure.sign_report(key, report)
    return {"report": base64.b64encode(report.raw).decode(), "signature": base64.b64encode(sig).decode(), "alg": alg}


def test_loader_signs_reports_checked_against_its_log(party, client, services):
    cvm = party.cvm()
    resp = party.loader()
    serial, key = resp.get_json()["serial"], resp.key
    ok = client.post("/v1/integrity-reports", json=_body(_report(serial), key))
    assert ok.status_code == 201, ok.get_json()
    before = _counts(services)
    body = _problem(client.post("/v1/integrity-reports", json=_body(_report(serial, engine=pure.digest_of(b"x")), key)),
                    422, "integrity.component_not_measured")
    assert body["role"] == "engine" and body["component"] == "engine"
    body = _problem(client.post("/v1/integrity-reports", json=_body(_report(serial, args=pure.digest_of(b"y")), key)),
                    422, "integrity.component_not_measured")
    assert body["component"] == "arguments_digest"
    assert _counts(services) == before
    # the CVM's own certificate does not sign reports (CA_SERVICE_INTEGRITY_POLICIES unset: loaders only)
    cvm_key = party.request("sim", dns=("u.cvm.local",))
    assert cvm_key.status_code == 201
    _problem(client.post("/v1/integrity-reports", json=_body(_report(cvm_key.get_json()["serial"]), cvm_key.key)),
             403, "integrity.policy_not_allowed")
    assert cvm["serial"]


def test_report_of_a_loader_whose_cvm_is_revoked_is_refused(party, client, services):
    cvm = party.cvm()
    resp = party.loader()
    serial, key = resp.get_json()["serial"], resp.key
    from ca_service.services.revocation import revoke

    revoke(services, cvm["serial"], reason="keyCompromise", actor="test")
    _problem(client.post("/v1/integrity-reports", json=_body(_report(serial), key)), 422,
             "integrity.certificate_revoked")


def test_explorer_links_the_loader_and_its_cvm(party, client):
    cvm = party.cvm()
    loader = party.loader().get_json()
    page = client.get(f"/certificates/{loader['serial']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="cvm-link"' in html and f"/certificates/{cvm['serial']}" in html
    html = client.get(f"/certificates/{cvm['serial']}").get_data(as_text=True)
    assert "Loader certificates of this CVM" in html and loader["serial"] in html
