"""The explorer pages through the Flask app: content, hostile values escaped, CSP, opt-in.

Hostile values go in two ways: through the real write paths where the CA accepts them (a policy
description), and straight into the tables where the write paths refuse them (a subject, a SAN,
an integrity report's components), because the pages must stay safe even for data the current
validation would not let in.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from tests.conftest import make_settings

HOSTILE = '<script>alert("x")</script>'


def _publish(services: Any) -> None:
    from ca_service.services.log import publish_checkpoint

    publish_checkpoint(services)


def _issue(issuer: Any) -> dict[str, Any]:
    resp = issuer.issue()
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_home_shows_log_checkpoint_and_active_policies(client: Any, issuer: Any, services: Any) -> None:
    _issue(issuer)
    _publish(services)
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "Transparency log" in page and "Latest signed checkpoint" in page
    assert ">sim</a> version 1" in page
    assert "ca-service/log" in page  # the checkpoint note's origin line
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


def test_certificate_page_decodes_the_ear_and_verifies_inclusion(client: Any, issuer: Any, services: Any) -> None:
    issued = _issue(issuer)
    _publish(services)
    page = client.get(f"/certificates/{issued['serial']}").get_data(as_text=True)
    assert issued["serial"] in page
    assert "Inclusion <strong>verified</strong> by the server" in page
    assert "sim version 1" in page  # the policy, linked
    assert "84c7147e2fed6ef5d1e551583e58d4e0a32bac930402f1030e4b095387b5c8eb33f25789478a4007a2a09da4cf767237" in page
    assert "Trustworthiness vector" in page and "hardware" in page
    assert "ca-service verify chain.pem --root root.pem --proof proof.txt" in page
    proof = client.get(f"/certificates/{issued['serial']}/proof.txt")
    assert proof.status_code == 200 and proof.get_data(as_text=True).startswith("c2sp.org/tlog-proof@v1\n")
    chain = client.get(f"/certificates/{issued['serial']}/chain.pem").get_data(as_text=True)
    assert chain.count("-----BEGIN CERTIFICATE-----") == 2


def test_log_page_lists_entries_and_checkpoints(client: Any, issuer: Any, services: Any) -> None:
    issued = _issue(issuer)
    _publish(services)
    page = client.get("/log").get_data(as_text=True)
    assert issued["serial"] in page and "issuance" in page
    assert "Checkpoints" in page and "No checkpoint yet." not in page
    assert client.get("/log?before=zz").status_code == 200  # a bad cursor is ignored, not a 500


def test_revocation_shows_on_the_page(client: Any, issuer: Any, services: Any) -> None:
    from ca_service.services.revocation import revoke

    issued = _issue(issuer)
    revoke(services, issued["serial"], reason="keyCompromise", actor="test")
    page = client.get(f"/certificates/{issued['serial']}").get_data(as_text=True)
    assert "<strong>revoked</strong>" in page and "keyCompromise" in page


def test_search_by_serial_spki_and_measurement(client: Any, issuer: Any, services: Any) -> None:
    issued = _issue(issuer)
    resp = client.get(f"/search?q={issued['serial'].upper()}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/certificates/{issued['serial']}")
    row = client.get(f"/v1/certificates/{issued['serial']}").get_json()
    page = client.get(f"/search?q={row['spki_sha256']}").get_data(as_text=True)
    assert issued["serial"] in page
    mrtd = "84c7147e2fed6ef5d1e551583e58d4e0a32bac930402f1030e4b095387b5c8eb33f25789478a4007a2a09da4cf767237"
    page = client.get(f"/search?q={mrtd}").get_data(as_text=True)
    assert issued["serial"] in page
    api = client.get(f"/v1/certificates?measurement={mrtd}").get_json()
    assert issued["serial"] in [c["serial"] for c in api["certificates"]]
    nothing = client.get("/search?q=" + "ab" * 48).get_data(as_text=True)
    assert "No certificates." in nothing
    assert client.get("/v1/certificates?measurement=XYZ").status_code == 400


def test_unknown_things_are_html_404s(client: Any) -> None:
    for path in ("/certificates/abc", "/policies/none-such", "/integrity-reports/" + str(uuid.uuid4())):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.mimetype == "text/html", path
        assert "Content-Security-Policy" in resp.headers


def test_policy_pages_show_versions_diff_and_audit(client: Any, services: Any) -> None:
    from ca_service.services.policies import apply_policy

    base = {"name": "explorer-pol", "description": "first",
            "evidence": {"required": ["sim"], "sim": {"debug": False}},
            "certificate": {"max_lifetime": "1h", "key_types": ["ec-p256"], "san": {"dns": ["*.cvm.local"]}}}
    apply_policy(services, json.dumps(base), actor="test")
    apply_policy(services, json.dumps({**base, "description": "second"}), actor="test")
    page = client.get("/policies/explorer-pol").get_data(as_text=True)
    assert page.count("policy.apply") == 2 and "explorer-pol@2" in page
    diff = client.get("/policies/explorer-pol/diff?from=1&to=2").get_data(as_text=True)
    assert "description" in diff and "first" in diff and "second" in diff


def test_hostile_policy_description_is_escaped(client: Any, services: Any) -> None:
    from ca_service.services.policies import apply_policy

    doc = {"name": "hostile-pol", "description": HOSTILE,
           "evidence": {"required": ["sim"], "sim": {"debug": False}},
           "certificate": {"max_lifetime": "1h", "key_types": ["ec-p256"], "san": {"dns": ["*.cvm.local"]}}}
    apply_policy(services, json.dumps(doc), actor="test")
    page = client.get("/policies/hostile-pol/versions/1").get_data(as_text=True)
    assert HOSTILE not in page
    assert "&lt;script&gt;" in page


def _hostile_certificate(services: Any) -> str:
    """A certificate row with a hostile subject, SAN and EAR values, as if the checks had let it in."""
    from ca_service.db.models import Certificate

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTILE)]), critical=False)
            .sign(key, hashes.SHA256()))
    serial = format(cert.serial_number, "x")
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ear = {"ear.status": HOSTILE, "submods": {HOSTILE: {"ca-service.tee": HOSTILE, "ear.status": "warning",
                                                        "ca-service.measurements": {HOSTILE: HOSTILE},
                                                        "ca-service.advisory-ids": [HOSTILE]}}}
    with services.db.transaction() as session:
        session.add(Certificate(serial=serial, issued_at=now, not_before=now, not_after=now + timedelta(hours=1),
                                subject=cert.subject.rfc4514_string(), spki_sha256=hashlib.sha256(spki).hexdigest(),
                                evidence=[{"type": HOSTILE, "sha256": HOSTILE}], policy_name="sim", policy_version=1,
                                policy_digest="0" * 64, appraisal={"ear": ear, "checks": [
                                    {"evidence": HOSTILE, "claim": HOSTILE, "expected": HOSTILE, "actual": HOSTILE,
                                     "passed": False}]},
                                der=cert.public_bytes(Encoding.DER), status="valid"))
    return serial


def test_hostile_subject_san_and_ear_are_escaped(client: Any, services: Any) -> None:
    serial = _hostile_certificate(services)
    resp = client.get(f"/certificates/{serial}")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;") >= 5  # subject, SAN, TEE, measurement, check
    assert "<script" not in page.replace('<script src="/explorer/static/proof.js"></script>', "")


def test_hostile_integrity_report_is_escaped(client: Any, services: Any) -> None:
    from ca_service.db.models.integrity import IntegrityReport

    serial = _hostile_certificate(services)
    body = json.dumps({"order_id": HOSTILE, "components": [{"name": HOSTILE, "digest": HOSTILE}]}).encode()
    rid = str(uuid.uuid4())
    now = datetime.now(UTC)
    with services.db.transaction() as session:
        session.add(IntegrityReport(id=rid, sha256=hashlib.sha256(body).hexdigest(), report=body, signature=b"x",
                                    alg="ed25519", serial=serial, order_id=HOSTILE, issued_at=now, received_at=now,
                                    log_index=10**12 + int(uuid.uuid4().int % 10**6)))
    for path in (f"/integrity-reports/{rid}", "/integrity-reports"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page, path
        assert "&lt;script&gt;" in page, path


def test_explorer_is_off_by_default_in_production(tmp_path: Any, db_url_factory: Any) -> None:
    from ca_service.api.app import create_app
    from ca_service.config import Settings

    assert not make_settings(tmp_path, "sqlite://", profile="production").explorer_enabled
    assert make_settings(tmp_path, "sqlite://", profile="production", explorer=True).explorer_enabled
    assert Settings.from_env({"CA_SERVICE_EXPLORER": "off", "CA_SERVICE_PROFILE": "insecure-dev"}).explorer is False
    app = create_app(make_settings(tmp_path, db_url_factory(), profile="production"))
    assert app.test_client().get("/").status_code == 404


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_explorer_setting_is_strict(value: str) -> None:
    from ca_service.config import Settings
    from ca_service.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Settings.from_env({"CA_SERVICE_EXPLORER": value})
