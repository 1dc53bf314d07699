"""The issuance path caps notAfter at the collateral's first expiry and records it in the EAR.

The sim TEE is judged against no vendor collateral, so this test gives its verification result an
expiry (the only stand-in here; tests/unit/ca/test_lifetime.py runs the cap on real vectors' expiries)
and checks what the certificate and its EAR say over the API."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from cryptography import x509

from ca_service.ca.profile import ear_from_certificate
from ca_service.services import issuance


def test_notafter_capped_and_ear_records_collateral_expiry(issuer, services, monkeypatch):
    now = services.clock.now()
    due = (now + timedelta(hours=3)).replace(microsecond=0)
    real_verify = issuance.evidence_mod.verify

    def with_expiry(*a, **kw):
        return dataclasses.replace(real_verify(*a, **kw), expires_at={"test.crl": due,
                                                                     "test.chain": due + timedelta(days=1)})

    monkeypatch.setattr(issuance.evidence_mod, "verify", with_expiry)
    resp = issuer.issue()
    assert resp.status_code == 201, resp.get_json()
    leaf = x509.load_pem_x509_certificates(resp.get_json()["certificate_chain"].encode())[0]
    assert leaf.not_valid_after_utc == due  # not the sim policy's 24 h
    ear = ear_from_certificate(leaf)
    assert ear["ca-service.collateral-expires-at"] == due.isoformat()
    assert ear["ca-service.collateral-expires-item"] == "test.crl"
    # an expiry past the policy ceiling leaves the ceiling
    monkeypatch.setattr(issuance.evidence_mod, "verify", lambda *a, **kw: dataclasses.replace(
        real_verify(*a, **kw), expires_at={"test.crl": now + timedelta(days=30)}))
    leaf = x509.load_pem_x509_certificates(issuer.issue().get_json()["certificate_chain"].encode())[0]
    after = services.clock.now()
    assert now + timedelta(hours=24) <= leaf.not_valid_after_utc + timedelta(seconds=1)
    assert leaf.not_valid_after_utc <= after + timedelta(hours=24)
