"""Flow 2 over the Flask app on a real database (SQLite, or PostgreSQL with CA_SERVICE_TEST_DATABASE=postgres):
a loader certified under the sim policy signs an integrity report, the CA logs it; every refusal is a
problem+json with one stable code and leaves neither a record nor a log entry."""

from __future__ import annotations

import base64
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import func, select

from ca_service.api.app import create_app
from ca_service.ca import integrity as pure
from ca_service.clock import FixedClock
from ca_service.db.models import TlogEntry
from ca_service.db.models.integrity import IntegrityReport as IntegrityRow
from ca_service.services import integrity as integrity_service
from ca_service.services.container import Services
from ca_service.services.log import publish_checkpoint
from ca_service.services.revocation import revoke
from ca_service.tlog.leaves import decode_leaf

ENGINE = pure.digest_of(b"vendor training engine v3", "sha384")
DATASET = pure.digest_of(b"clinic-a records", "sha256")


def _problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["code"] == code, body
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def _counts(services) -> tuple[int, int]:
    with services.db.read() as session:
        return (int(session.scalar(select(func.count()).select_from(TlogEntry)) or 0),
                int(session.scalar(select(func.count()).select_from(IntegrityRow)) or 0))


class Loader:
    """A loader with a certificate from the CA (sim flow) that builds and signs reports."""

    def __init__(self, issuer, key) -> None:
        body, self.key = issuer.body(key=key, dns=("loader.cvm.local",))
        resp = issuer.client.post("/v1/certificates", json=body)
        assert resp.status_code == 201, resp.get_json()
        self.response = resp.get_json()
        self.chain = tuple(x509.load_pem_x509_certificates(self.response["certificate_chain"].encode()))
        self.serial = self.response["serial"]

    def report(self, *, order_id: str = "order-42", at: datetime | None = None, serial: str | None = None,
               components=None) -> pure.IntegrityReport:
        return pure.build_report(
            order_id=order_id, loader_certificate_serial=serial or self.serial,
            issued_at=at or datetime.now(UTC),
            components=components or [pure.Component("engine", ENGINE), pure.Component("dataset/clinic-a", DATASET)],
            arguments_digest=pure.digest_of(b"--epochs 3", "sha256"))

    def body(self, report: pure.IntegrityReport | bytes | None = None, *, key=None, alg: str | None = None) -> dict:
        raw = report if isinstance(report, bytes) else (report or self.report()).raw
        key = key or self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            sig = key.sign(pure.signing_input(raw))
        else:
            from cryptography.hazmat.primitives import hashes

            h = hashes.SHA256() if isinstance(key.curve, ec.SECP256R1) else hashes.SHA384()
            sig = key.sign(pure.signing_input(raw), ec.ECDSA(h))
        return {"report": base64.b64encode(raw).decode(), "signature": base64.b64encode(sig).decode(),
                "alg": alg or pure.alg_for_key(self.key.public_key())}


@pytest.fixture(autouse=True)
def any_signer(services, monkeypatch):
    """This module tests the report mechanics with certificates of the sim policy: allow any signer.
    The default bar (loader certificates only) is tested in test_loader_api.py and below."""
    monkeypatch.setattr(services, "settings", services.settings.with_(integrity_policies="*"))


@pytest.fixture
def loader(issuer):
    return Loader(issuer, ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("make_key", [lambda: ec.generate_private_key(ec.SECP256R1()),
                                      lambda: ec.generate_private_key(ec.SECP384R1()),
                                      ed25519.Ed25519PrivateKey.generate], ids=["p256", "p384", "ed25519"])
def test_submit_log_and_read_back_with_proof(issuer, client, services, make_key):
    loader = Loader(issuer, make_key())
    report = loader.report(order_id=f"order-{uuid.uuid4()}")
    before = _counts(services)
    resp = client.post("/v1/integrity-reports", json=loader.body(report))
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    assert set(out) == {"id", "sha256", "log_index", "serial"}
    assert out["sha256"] == report.sha256 and out["serial"] == loader.serial
    assert resp.headers["Location"].endswith(f"/v1/integrity-reports/{out['id']}")
    assert _counts(services) == (before[0] + 1, before[1] + 1)
    # the leaf at log_index is this report's
    with services.db.read() as session:
        leaf = decode_leaf(bytes(session.get(TlogEntry, out["log_index"]).leaf))
    assert leaf.type == "integrity-report"
    assert dict(leaf.body) == {"report_sha256": report.sha256, "loader_serial": loader.serial,
                               "order_id": report.order_id, "components_sha256": report.components_sha256}
    # read back; proof once a checkpoint covers it
    publish_checkpoint(services)
    got = client.get(f"/v1/integrity-reports/{out['id']}")
    assert got.status_code == 200
    rec = got.get_json()
    assert base64.b64decode(rec["report"]) == report.raw
    assert rec["document"]["components"][0] == {"name": "engine", "digest": ENGINE}
    assert rec["log_index"] == out["log_index"] and rec["serial"] == loader.serial
    assert rec["proof"] is not None
    vkey = client.get("/v1/log/vkey").get_data(as_text=True).strip()
    cp = pure.check_report_proof(report, rec["proof"], vkey)
    assert cp.size > out["log_index"]
    # the relying party's offline check with the root alone
    signed = pure.SignedReport(report=report, signature=base64.b64decode(rec["signature"]), alg=rec["alg"],
                               chain=loader.chain)
    pure.verify_signed_report(signed, services.keys.certificate("root"), datetime.now(UTC))


def test_proof_is_null_before_a_checkpoint_covers_it(loader, client, services):
    publish_checkpoint(services)
    out = client.post("/v1/integrity-reports", json=loader.body()).get_json()
    assert client.get(f"/v1/integrity-reports/{out['id']}").get_json()["proof"] is None


def test_duplicate_returns_the_existing_record_and_logs_once(loader, client, services):
    body = loader.body()
    first = client.post("/v1/integrity-reports", json=body)
    assert first.status_code == 201
    after_first = _counts(services)
    # the same report, even with a fresh (ECDSA is randomised) signature, is the same record
    for again in (body, loader.body(base64.b64decode(body["report"]))):
        resp = client.post("/v1/integrity-reports", json=again)
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json() == first.get_json()
    assert _counts(services) == after_first


def _flip(b64: str, pos: int | None = None) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[len(raw) // 2 if pos is None else pos] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _non_canonical(loader):
    doc = json.loads(loader.report().raw)
    return loader.body(json.dumps(doc, indent=1).encode())


def _with_field(loader, **extra):
    doc = json.loads(loader.report().raw) | extra
    return loader.body(rfc8785.dumps(doc))


def _tampered_digest(loader):
    body = loader.body()
    raw = base64.b64decode(body["report"]).replace(ENGINE[-8:].encode(), b"00000000")
    return body | {"report": base64.b64encode(raw).decode()}


REFUSALS = {
    "tampered-digest": (_tampered_digest, 422, "integrity.signature_invalid"),
    "tampered-signature": (lambda ld: (b := ld.body()) | {"signature": _flip(b["signature"], -1)},
                           422, "integrity.signature_invalid"),
    "non-canonical": (_non_canonical, 422, "integrity.not_canonical"),
    "duplicate-key": (lambda ld: ld.body(ld.report().raw[:-1] + b',"v":1}'), 422, "integrity.not_canonical"),
    "unknown-serial": (lambda ld: ld.body(ld.report(serial="1234abcd")), 422, "integrity.certificate_unknown"),
    "other-key": (lambda ld: ld.body(key=ec.generate_private_key(ec.SECP256R1())), 422,
                  "integrity.signature_invalid"),
    "wrong-alg": (lambda ld: ld.body(alg="ecdsa-p384-sha384"), 422, "integrity.alg_mismatch"),
    "ed25519-alg-for-ec-key": (lambda ld: ld.body(alg="ed25519"), 422, "integrity.alg_mismatch"),
    "unknown-alg": (lambda ld: ld.body(alg="ES256"), 422, "request.schema"),
    "garbage-report-b64": (lambda ld: ld.body() | {"report": "not base64!"}, 422, "request.schema"),
    "garbage-signature-b64": (lambda ld: ld.body() | {"signature": "@@@@"}, 422, "request.schema"),
    "unknown-envelope-field": (lambda ld: ld.body() | {"certificate": "x"}, 422, "request.schema"),
    "missing-signature": (lambda ld: {k: v for k, v in ld.body().items() if k != "signature"}, 422, "request.schema"),
    "unknown-report-field": (lambda ld: _with_field(ld, note="hi"), 422, "integrity.malformed"),
    "unknown-component-field": (
        lambda ld: ld.body(rfc8785.dumps(json.loads(ld.report().raw) | {
            "components": [{"name": "engine", "digest": ENGINE, "size": 3}]})), 422, "integrity.malformed"),
    "version-true": (lambda ld: _with_field(ld, v=True), 422, "integrity.malformed"),
    "version-2": (lambda ld: _with_field(ld, v=2), 422, "integrity.malformed"),
    "upper-case-digest": (lambda ld: _with_field(ld, arguments_digest="sha256:" + "A" * 64), 422,
                          "integrity.malformed"),
    "duplicate-component": (lambda ld: ld.body(rfc8785.dumps(json.loads(ld.report().raw) | {
        "components": [{"name": "engine", "digest": ENGINE}] * 2})), 422, "integrity.malformed"),
    "not-json-report": (lambda ld: ld.body(b"\xff\xfe"), 422, "integrity.malformed"),
    "future": (lambda ld: ld.body(ld.report(at=datetime.now(UTC) + timedelta(hours=1))), 422,
               "integrity.time_invalid"),
    "before-the-certificate": (lambda ld: ld.body(ld.report(at=datetime.now(UTC) - timedelta(days=2))), 422,
                               "integrity.certificate_expired"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_log_nothing(loader, client, services, case):
    make, status, code = REFUSALS[case]
    body = make(loader)
    before = _counts(services)
    _problem(client.post("/v1/integrity-reports", json=body), status, code)
    assert _counts(services) == before


def test_flipped_report_bytes_are_refused(loader, client, services):
    """Flip a seeded sample of report bytes (python-tuf style): always a 4xx integrity/request code."""
    body = loader.body()
    raw = base64.b64decode(body["report"])
    before = _counts(services)
    rng = random.Random(8785)
    seen = set()
    for pos in rng.sample(range(len(raw)), 24):
        resp = client.post("/v1/integrity-reports", json=body | {"report": _flip(body["report"], pos)})
        assert 400 <= resp.status_code < 500 and resp.mimetype == "application/problem+json", pos
        code = resp.get_json()["code"]
        assert code.startswith("integrity."), (pos, code)
        seen.add(code)
    assert "integrity.signature_invalid" in seen
    assert _counts(services) == before


def test_revoked_certificate(loader, client, services):
    body = loader.body()
    revoke(services, loader.serial, reason="keyCompromise", actor="test")
    before = _counts(services)
    _problem(client.post("/v1/integrity-reports", json=body), 422, "integrity.certificate_revoked")
    assert _counts(services) == before


def test_expired_certificate(loader, ca_settings, services):
    later = datetime.now(UTC) + timedelta(days=3)
    svc = Services.create(ca_settings, clock=FixedClock(later))
    try:
        client = create_app(services=svc).test_client()
        before = _counts(services)
        # dated now (the certificate was valid) but submitted after it expired
        _problem(client.post("/v1/integrity-reports", json=loader.body()), 422, "integrity.certificate_expired")
        # dated after it expired
        _problem(client.post("/v1/integrity-reports", json=loader.body(loader.report(at=later))), 422,
                 "integrity.certificate_expired")
        assert _counts(services) == before
    finally:
        svc.close()


def test_policy_allowlist(loader, client, services, monkeypatch):
    before = _counts(services)
    monkeypatch.setattr(services, "settings", services.settings.with_(integrity_policies=None))
    _problem(client.post("/v1/integrity-reports", json=loader.body()), 403, "integrity.policy_not_allowed")
    with pytest.raises(Exception) as exc_info:
        integrity_service.submit_report(services, loader.report().raw, base64.b64decode(loader.body()["signature"]),
                                        "ecdsa-p256-sha256", allowed_policies={"trusted-loader"})
    assert getattr(exc_info.value, "code", None) == "integrity.policy_not_allowed"
    monkeypatch.setattr(services, "settings", services.settings.with_(integrity_policies="trusted-loader,training-cvm"))
    _problem(client.post("/v1/integrity-reports", json=loader.body()), 403, "integrity.policy_not_allowed")
    assert _counts(services) == before
    monkeypatch.setattr(services, "settings", services.settings.with_(integrity_policies="trusted-loader,sim"))
    assert client.post("/v1/integrity-reports", json=loader.body()).status_code == 201


def test_configured_policies(ca_settings):
    prod = ca_settings.with_(profile="production")
    # unset: loader certificates only, in every profile (docs/loader.md)
    assert integrity_service.configured_loader_policies(ca_settings, {}) is integrity_service.LOADER_POLICIES
    assert integrity_service.configured_loader_policies(prod, {}) is integrity_service.LOADER_POLICIES
    assert integrity_service.configured_loader_policies(prod, {integrity_service.POLICIES_ENV: "*"}) is None
    assert integrity_service.configured_loader_policies(
        prod, {integrity_service.POLICIES_ENV: " trusted-loader , x,"}) == {"trusted-loader", "x"}


def test_request_shape_refusals(client):
    _problem(client.post("/v1/integrity-reports", data=b"{", content_type="application/json"), 400,
             "request.malformed_json")
    _problem(client.post("/v1/integrity-reports", data=b"x", content_type="text/plain"), 415,
             "request.unsupported_media_type")
    _problem(client.post("/v1/integrity-reports", json=[]), 422, "request.schema")
    _problem(client.get("/v1/integrity-reports/00000000-0000-4000-8000-000000000000"), 404, "integrity.not_found")
    _problem(client.get("/v1/integrity-reports/not-a-uuid"), 404, "integrity.not_found")


def test_concurrent_duplicates_log_once(loader, services):
    """The same report submitted by several threads at once: one record, one leaf (dedupe under the log lock)."""
    from concurrent.futures import ThreadPoolExecutor

    body = loader.body()
    raw, sig = base64.b64decode(body["report"]), base64.b64decode(body["signature"])
    before = _counts(services)
    with ThreadPoolExecutor(6) as pool:
        records = list(pool.map(lambda _: integrity_service.submit_report(services, raw, sig, body["alg"]), range(6)))
    assert sum(r.created for r in records) == 1
    assert len({(r.id, r.log_index) for r in records}) == 1
    assert _counts(services) == (before[0] + 1, before[1] + 1)


def test_certificate_not_signed_by_the_issuing_key(client, services):
    """A certificates row whose DER another key signed (a forged or foreign row) does not sign reports."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from ca_service.db.models import Certificate

    now = datetime.now(UTC)
    key, rogue = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    issuing = services.keys.certificate("issuing")
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
            .issuer_name(issuing.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .sign(rogue, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    der = cert.public_bytes(Encoding.DER)
    with services.db.transaction() as session:
        session.add(Certificate(serial=format(serial, "x"), issued_at=now, not_before=cert.not_valid_before_utc,
                                not_after=cert.not_valid_after_utc, subject="CN=rogue",
                                spki_sha256=hashlib.sha256(b"x").hexdigest(), evidence=[], policy_name="rogue-test",
                                policy_version=1, policy_digest="0" * 64, appraisal={}, der=der, status="valid"))
    report = pure.build_report(order_id="o", loader_certificate_serial=serial, issued_at=now,
                               components=[pure.Component("engine", ENGINE)], arguments_digest=ENGINE)
    sig, alg = pure.sign_report(key, report)
    before = _counts(services)
    _problem(client.post("/v1/integrity-reports", json={"report": base64.b64encode(report.raw).decode(),
                                                        "signature": base64.b64encode(sig).decode(), "alg": alg}),
             422, "integrity.certificate_untrusted")
    assert _counts(services) == before
