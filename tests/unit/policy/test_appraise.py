"""appraise(): every rule reads the verifiers' claim names; unknown or missing claims fail."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca_service.evidence.base import VerifiedEvidence
from ca_service.policy.appraise import appraise
from ca_service.policy.model import Policy, policy_from_document

CERT = {"max_lifetime": "1h"}


def policy(kind: str, rules: dict[str, Any]) -> Policy:
    return policy_from_document({"name": "t", "evidence": {"required": [kind], kind: rules}, "certificate": CERT})


def ve(kind: str, claims: dict[str, Any], **kw: Any) -> VerifiedEvidence:
    return VerifiedEvidence(kind=kind, report_data=b"\0" * 64, claims=claims, checks=(), evidence_sha256="0" * 64,
                            **kw)


def one(p: Policy, item: VerifiedEvidence, claim: str):
    return next(c for c in appraise(p, [item], insecure_allowed=False).checks if c.claim == claim)


def test_presence_and_extra_types():
    p = policy("tdx-quote", {"debug": False})
    r = appraise(p, [], insecure_allowed=False)
    assert not r.passed and r.failed[0].claim == "present"
    r = appraise(p, [ve("tdx-quote", {"debug": False}), ve("snp-report", {"debug": False})], insecure_allowed=False)
    assert {(c.evidence, c.claim) for c in r.failed} == {("snp-report", "allowed_type")}
    r = appraise(p, [ve("tdx-quote", {"debug": False})] * 2, insecure_allowed=False)
    assert {c.claim for c in r.failed} == {"present"}


def test_no_checks_is_not_a_pass():
    from ca_service.policy.appraise import Appraisal

    assert Appraisal("t", "0" * 64, ()).passed is False


def test_sim_needs_the_insecure_profile():
    p = policy("sim", {"debug": False})
    item = ve("sim", {"debug": False}, insecure=True)
    assert not appraise(p, [item], insecure_allowed=False).passed
    assert appraise(p, [item], insecure_allowed=True).passed


@pytest.mark.parametrize("claims, passed", [
    ({"debug": False}, True),
    ({"debug": True}, False),
    ({"td_attributes": "0000001000000000"}, True),
    ({"td_attributes": "0100001000000000"}, False),
    ({}, False),
])
def test_tdx_debug(claims, passed):
    assert one(policy("tdx-quote", {"debug": False}), ve("tdx-quote", claims), "debug").passed is passed


def test_sgx_debug_from_attributes():
    p = policy("sgx-quote", {"debug": False})
    assert one(p, ve("sgx-quote", {"attributes": "0500000000000000e700000000000000"}), "debug").passed
    assert not one(p, ve("sgx-quote", {"attributes": "0700000000000000e700000000000000"}), "debug").passed


def test_snp_debug_from_policy_bits():
    p = policy("snp-report", {"debug": False})
    assert one(p, ve("snp-report", {"policy": {"debug": False}}), "debug").passed
    assert not one(p, ve("snp-report", {"policy": {"debug": True}}), "debug").passed


def test_tcb_status_and_advisories():
    p = policy("tdx-quote", {"tcb_status": ["UpToDate", "SWHardeningNeeded"], "advisories": {"allow": ["INTEL-SA-00615"]}})
    ok = ve("tdx-quote", {}, tcb_status="SWHardeningNeeded", advisory_ids=("INTEL-SA-00615",))
    assert appraise(p, [ok], insecure_allowed=False).passed
    bad = ve("tdx-quote", {}, tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00615", "INTEL-SA-00960"))
    failed = {c.claim: c for c in appraise(p, [bad], insecure_allowed=False).failed}
    assert failed["tcb_status"].actual == "OutOfDate"
    assert failed["advisories"].actual == ["INTEL-SA-00615", "INTEL-SA-00960"]


@pytest.mark.parametrize("date, passed", [
    ("2024-03-13T00:00:00Z", True), ("2024-11-13T00:00:00Z", True), ("2023-08-09T00:00:00Z", False),
    ("not a date", False), (None, False),
])
def test_min_tcb_date(date, passed):
    p = policy("tdx-quote", {"min_tcb_date": "2024-03-13"})
    claims = {"tcb_date": date} if date else {}
    assert one(p, ve("tdx-quote", claims), "min_tcb_date").passed is passed


def test_min_tcb_evaluation_data_number():
    p = policy("tdx-quote", {"min_tcb_evaluation_data_number": 17})
    assert one(p, ve("tdx-quote", {"tcb_evaluation_data_number": 17}), "min_tcb_evaluation_data_number").passed
    assert not one(p, ve("tdx-quote", {"tcb_evaluation_data_number": 16}), "min_tcb_evaluation_data_number").passed
    assert not one(p, ve("tdx-quote", {"tcb_evaluation_data_number": True}), "min_tcb_evaluation_data_number").passed


svn = st.binary(min_size=16, max_size=16)


@given(svn, svn)
def test_svn_is_component_wise(actual: bytes, minimum: bytes):
    p = policy("tdx-quote", {"min_tee_tcb_svn": minimum.hex()})
    check = one(p, ve("tdx-quote", {"tee_tcb_svn": actual.hex()}), "min_tee_tcb_svn")
    assert check.passed is all(a >= m for a, m in zip(actual, minimum, strict=True))


def test_svn_component_wise_is_not_lexicographic():
    p = policy("sgx-quote", {"min_cpu_svn": "0b0b0000000000000000000000000000"})
    # lexicographically greater, but the second component is lower: refused
    assert not one(p, ve("sgx-quote", {"cpu_svn": "0c010000000000000000000000000000"}), "min_cpu_svn").passed


def test_snp_min_tcb_component_wise():
    p = policy("snp-report", {"min_tcb": {"bl": 3, "snp": 8, "ucode": 115}})
    good = ve("snp-report", {"reported_tcb": {"bl": 4, "tee": 0, "snp": 8, "ucode": 115}})
    assert one(p, good, "min_tcb").passed
    low_ucode = ve("snp-report", {"reported_tcb": {"bl": 9, "tee": 9, "snp": 9, "ucode": 114}})
    c = one(p, low_ucode, "min_tcb")
    assert not c.passed and c.actual == {"bl": 9, "snp": 9, "ucode": 114}
    p = policy("snp-report", {"min_tcb": {"fmc": 1}})
    assert not one(p, good, "min_tcb").passed  # a component the report does not carry fails


def test_snp_launch_and_committed_tcb():
    p = policy("snp-report", {"min_launch_tcb": {"snp": 8}, "min_committed_tcb": {"snp": 9}})
    r = appraise(p, [ve("snp-report", {"launch_tcb": {"snp": 8}, "committed_tcb": {"snp": 8}})],
                 insecure_allowed=False)
    assert {c.claim for c in r.failed} == {"min_committed_tcb"}


def test_snp_guest_policy_and_platform_info_bits():
    p = policy("snp-report", {"guest_policy": {"migrate_ma": False, "smt": True}, "platform_info": {"tsme_en": True}})
    item = ve("snp-report", {"policy": {"migrate_ma": False, "smt": True, "debug": False},
                             "platform_info": {"tsme_en": False}})
    failed = {c.claim: c for c in appraise(p, [item], insecure_allowed=False).failed}
    assert set(failed) == {"platform_info"} and failed["platform_info"].actual == {"tsme_en": False}
    missing = ve("snp-report", {"policy": {"smt": True}, "platform_info": {"tsme_en": True}})
    assert not one(p, missing, "guest_policy").passed  # an absent bit is not a pass


def test_snp_product_line_vmpl_signing_key_and_svn():
    p = policy("snp-report", {"product": ["Milan"], "vmpl": [0], "signing_key": ["vcek"], "min_guest_svn": 2})
    item = ve("snp-report", {"product": "Milan-B0", "product_line": "Milan", "vmpl": 0, "signing_key": "vcek",
                             "guest_svn": 2})
    assert appraise(p, [item], insecure_allowed=False).passed
    item = ve("snp-report", {"product": "Genoa", "product_line": "Genoa", "vmpl": 1, "signing_key": "vlek",
                             "guest_svn": 1})
    assert len(appraise(p, [item], insecure_allowed=False).failed) == 4


def test_measurements_are_allow_lists_case_insensitive():
    m = "ab" * 48
    p = policy("snp-report", {"measurement": [m], "host_data": ["cd" * 32]})
    item = ve("snp-report", {"measurement": m.upper(), "host_data": "cd" * 32})
    assert appraise(p, [item], insecure_allowed=False).passed
    assert not appraise(p, [ve("snp-report", {"measurement": "ef" * 48, "host_data": "cd" * 32})],
                        insecure_allowed=False).passed


def test_rtmr_each_index_is_its_own_check():
    p = policy("tdx-quote", {"rtmr": {"0": ["aa" * 48], "2": ["bb" * 48]}})
    r = appraise(p, [ve("tdx-quote", {"rtmr0": "aa" * 48, "rtmr2": "cc" * 48})], insecure_allowed=False)
    assert [c.claim for c in r.checks] == ["present", "rtmr0", "rtmr2"] and [c.claim for c in r.failed] == ["rtmr2"]


def test_loader_digests_need_the_event_log_claim():
    d = "sha384:" + "ab" * 48
    p = policy("tdx-quote", {"loader_digests": [d]})
    assert not one(p, ve("tdx-quote", {}), "loader_digests").passed
    assert one(p, ve("tdx-quote", {"loaded_digests": ["sha384:" + "00" * 48, d]}), "loader_digests").passed


def test_unknown_rule_fails_closed():
    p = policy("tdx-quote", {"debug": False})
    doc = dict(p.document)
    doc["evidence"] = {"required": ["tdx-quote"], "tdx-quote": {"debug": False}}
    forged = Policy(name="t", document={**doc, "evidence": {"required": ["tdx-quote"],
                                                            "tdx-quote": {"frobnicate": 1}}},
                    canonical=p.canonical, digest=p.digest)
    c = one(forged, ve("tdx-quote", {}), "frobnicate")
    assert not c.passed and c.actual == "unsupported rule"
