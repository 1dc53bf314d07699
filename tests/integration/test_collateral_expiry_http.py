"""Certificates that expire with their collateral (issue 14), issued as a CVM gets one: ``ca-service init`` +
``serve`` on the session's database, ``POST /v1/certificates`` over HTTP with a TDX quote bound to the
challenge and the CSR key, judged by collateral the CA holds (imported with ``collateral import``).

The vendor is the test Intel PKI (tests/collateral/testroot.py, pinned by CA_SERVICE_INSECURE_TEST_ROOTS),
its clock set 28 days less 3 hours back: its Root CA CRL (issued two days before its clock, due 30 days
after issue) is due 3 hours from now, before every other item (TCB Info, QE Identity and the PCK CRL are
due in two days, the chains in years). So:

- under tdx-cvm (24 h ceiling, no grace) ``notAfter`` is that CRL's ``nextUpdate`` and the EAR in the
  certificate names it (``collateral-expires-at``, ``collateral-expires-item``);
- with a grace of 2 h (``collateral.max_age_past_next_update``) it is 2 h later;
- with ``certificate.min_lifetime: 4h`` the request is refused, 403 ``certificate.collateral_expiring``,
  naming the item and when it expires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from ca_service.ca.profile import ear_from_certificate
from tests.collateral.testroot import TestIntel
from tests.integration.test_reappraise_testroot import REPO, running_ca

POLICY = (REPO / "policies" / "tdx-cvm.yaml").read_text()
POLICIES = {
    "tdx-cvm.yaml": POLICY,
    "tdx-grace.yaml": POLICY.replace("name: tdx-cvm", "name: tdx-grace")
                            .replace("max_age_past_next_update: 0h", "max_age_past_next_update: 2h"),
    "tdx-floor.yaml": POLICY.replace("name: tdx-cvm", "name: tdx-floor")
                            .replace("max_lifetime: 24h", "max_lifetime: 24h\n  min_lifetime: 4h"),
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory, db_url_factory) -> Any:
    ti = TestIntel(now=datetime.now(UTC) - timedelta(days=28) + timedelta(hours=3))
    host = ti.platform("host")
    root = ti.write_root(tmp_path_factory.mktemp("test-intel-root") / "root.pem")
    bundle = ti.bundle(ti.collateral(host.fmspc, evaluation=20))
    with running_ca(tmp_path_factory, db_url_factory(), f"intel={root}", POLICIES, bundle, None) as c:
        assert len(c.imported["added"]) == 4  # TCB Info, QE Identity, the PCK CRL and the Root CA CRL
        yield c, ti, host


def _root_crl_due(ti: TestIntel) -> datetime:
    return x509.load_der_x509_crl(ti.root_crl).next_update_utc


def test_notafter_is_the_first_collateral_expiry_and_the_ear_names_it(ca):
    c, ti, host = ca
    due = _root_crl_due(ti)
    assert timedelta(hours=2) < due - datetime.now(UTC) < timedelta(hours=3, minutes=1)
    r = c.issue(ti, host, "tdx-cvm")
    assert r.status_code == 201, r.text
    leaf = x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0]
    assert leaf.not_valid_after_utc == due  # not the policy's 24 h
    ear = ear_from_certificate(leaf)
    assert (ear["ca-service.collateral-expires-item"], ear["ca-service.collateral-expires-at"]) == \
        ("intel.root_ca_crl", due.isoformat())
    # the certificate's record says the same
    assert c.record(r.json()["serial"])["not_after"].replace("Z", "+00:00") == due.isoformat()


def test_a_grace_period_lets_the_certificate_outlive_the_item_by_that_much(ca):
    c, ti, host = ca
    r = c.issue(ti, host, "tdx-grace")
    assert r.status_code == 201, r.text
    leaf = x509.load_pem_x509_certificates(r.json()["certificate_chain"].encode())[0]
    assert leaf.not_valid_after_utc == _root_crl_due(ti) + timedelta(hours=2)
    assert ear_from_certificate(leaf)["ca-service.collateral-expires-item"] == "intel.root_ca_crl"


def test_less_than_the_minimum_lifetime_is_refused_naming_the_item(ca):
    c, ti, host = ca
    r = c.issue(ti, host, "tdx-floor")
    assert r.status_code == 403, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "certificate.collateral_expiring"
    assert (body["item"], body["expires_at"], body["min_lifetime"]) == \
        ("intel.root_ca_crl", _root_crl_due(ti).isoformat(), "4:00:00")
