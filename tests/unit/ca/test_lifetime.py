"""Certificates that expire with their collateral (ca/lifetime.py), on the expiries the verifiers
report for real vectors: notAfter capped at the first nextUpdate/notAfter (+ the policy's grace), the
item named, and a request refused with ``certificate.collateral_expiring`` under ``min_lifetime``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ca_service.ca.lifetime import cap_lifetime
from ca_service.evidence import verify
from ca_service.policy.model import load_policy
from tests.vectors.manifest import load_manifest

POLICY = (Path(__file__).parents[3] / "policies" / "tdx-cvm.yaml").read_text()


def _policy(grace: str = "0h", min_lifetime: str | None = None, max_lifetime: str = "24h"):
    text = POLICY.replace("max_age_past_next_update: 0h", f"max_age_past_next_update: {grace}")
    text = text.replace("max_lifetime: 24h", f"max_lifetime: {max_lifetime}"
                        + (f"\n  min_lifetime: {min_lifetime}" if min_lifetime else ""))
    return load_policy(text)


@pytest.fixture(scope="module")
def tdx():
    v = next(v for v in load_manifest() if v.path == "tdx/gcp-c3-v4-uptodate"
             and v.files["collateral"].startswith("collateral-2025-06"))
    return verify("tdx-quote", v.read("quote"), collateral=[v.read("collateral")], at=v.verify_time)


@pytest.fixture(scope="module")
def snp():
    v = next(v for v in load_manifest() if v.path == "snp/milan-virtee-vcek")
    return verify("snp-report", v.read("report"), collateral=[v.read(r) for r in ("vek", "cert_chain", "crl")],
                  at=v.verify_time)


def test_verifiers_report_every_expiry(tdx, snp):
    assert set(tdx.expires_at) == {"intel.tcb_info", "intel.qe_identity", "intel.pck_crl", "intel.root_ca_crl",
                                   "intel.pck_chain", "intel.collateral_chains"}
    assert set(snp.expires_at) == {"amd.vcek", "amd.ask", "amd.ark", "amd.crl"}
    # the PCK CRL of 2025-06 is due first (2025-07-04T09:19:31Z), before TCB Info and QE Identity
    assert tdx.earliest_expiry is not None and tdx.earliest_expiry[0] == "intel.pck_crl"
    assert tdx.earliest_expiry[1].isoformat() == "2025-07-04T09:19:31+00:00"
    assert tdx.to_json()["expires_at"]["intel.tcb_info"] == "2025-07-04T09:51:38+00:00"


def test_far_from_expiry_the_policy_ceiling_holds(tdx):
    now = tdx.expires_at["intel.pck_crl"] - timedelta(days=10)
    cap = cap_lifetime(_policy(), now, timedelta(hours=24), [tdx.expires_at])
    assert cap.lifetime == timedelta(hours=24) and not cap.capped
    assert cap.expires_item == "intel.pck_crl" and cap.collateral_expires_at == tdx.expires_at["intel.pck_crl"]


def test_near_expiry_notafter_is_the_first_next_update(tdx, snp):
    due = tdx.expires_at["intel.pck_crl"]
    now = due - timedelta(hours=3)
    cap = cap_lifetime(_policy(), now, timedelta(hours=24), [snp.expires_at, tdx.expires_at])
    assert cap.capped and now + cap.lifetime == due and cap.expires_item == "intel.pck_crl"
    # a grace period lets it outlive the nextUpdate by that much, never past the policy ceiling
    cap = cap_lifetime(_policy(grace="2h"), now, timedelta(hours=24), [tdx.expires_at])
    assert now + cap.lifetime == due + timedelta(hours=2)
    cap = cap_lifetime(_policy(grace="7d"), now, timedelta(hours=24), [tdx.expires_at])
    assert cap.lifetime == timedelta(hours=24) and not cap.capped


def test_shorter_than_min_lifetime_is_refused_naming_the_item(tdx, snp):
    due = snp.expires_at["amd.crl"]
    with pytest.raises(Exception) as ei:
        cap_lifetime(_policy(min_lifetime="1h"), due - timedelta(minutes=30), timedelta(hours=24), [snp.expires_at])
    assert ei.value.code == "certificate.collateral_expiring" and ei.value.status == 403
    assert ei.value.fields["item"] == "amd.crl" and ei.value.fields["expires_at"] == due.isoformat()
    # exactly the minimum is still issued
    cap = cap_lifetime(_policy(min_lifetime="1h"), due - timedelta(hours=1), timedelta(hours=24), [snp.expires_at])
    assert cap.lifetime == timedelta(hours=1)


def test_nothing_judged_against_leaves_the_ceiling():
    cap = cap_lifetime(_policy(), load_manifest()[0].verify_time, timedelta(hours=5), [{}])
    assert cap.lifetime == timedelta(hours=5) and cap.expires_item is None and not cap.capped
