"""Every Intel TDX/SGX vector in ../shared/vectors, verified as of its verify_time (and just outside)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.intel.parse import parse_quote
from tests.vectors.manifest import Vector, vectors_for

VECTORS = vectors_for("tdx") + vectors_for("sgx")

# dcap-qvl's refusal text (manifest expected.error) -> our stable code.
EXPECTED_CODE = {
    "Verification failed: No matching TCB level found": "evidence.tcb_level_unmatched",
    "Verification failed: Debug mode is enabled": "evidence.debug_enabled",
    "Verification failed: SEPT_VE_DISABLE is not enabled": "evidence.sept_ve_disable_unset",
    "Verification failed: Invalid MR service TD": "evidence.identity_mismatch",
}


def _id(v: Vector) -> str:
    return f"{v.path}:{v.files['collateral'].split('/')[0]}"


def _verify(v: Vector, at=None):
    at = at or v.verify_time
    return verify(f"{v.tee}-quote", v.read("quote"), collateral=[v.read("collateral")], at=at)


def test_every_intel_vector_is_listed():
    assert len(VECTORS) >= 15


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_vector_expected_outcome(v: Vector) -> None:
    exp = v.expected
    if exp["verify_ok"]:
        r = _verify(v)
        assert r.tcb_status == exp["tcb_status"]
        assert list(r.advisory_ids) == exp["advisory_ids"]
        assert r.claims["fmspc"].upper() == v.raw["collateral_dates"]["fmspc"].upper()
        assert r.claims["tcb_evaluation_data_number"] == v.raw["collateral_dates"]["tcbEvaluationDataNumber"]
        assert r.claims["tcb_date"] == exp["platform_tcb_level_match"]["tcbDate"]
        assert set(r.collateral_sha256) >= {"intel.collateral", "intel.tcb_info", "intel.pck_chain"}
        assert r.report_data.hex() == r.claims["report_data"]
        if v.tee == "tdx":
            for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner",
                      "mrownerconfig", "mrseam", "td_attributes", "xfam", "tee_tcb_svn"):
                assert r.claims[k] == r.claims[k].lower()
            assert len(r.claims["mrtd"]) == 96
        else:
            for k in ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "attributes"):
                assert k in r.claims
    else:
        with pytest.raises(EvidenceError) as ei:
            _verify(v)
        assert ei.value.code == EXPECTED_CODE[exp["error"]]


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_one_second_after_collateral_expiry(v: Vector) -> None:
    until = v.raw["valid_until"]
    from datetime import datetime

    at = datetime.fromisoformat(until.replace("Z", "+00:00")) + timedelta(seconds=1)
    with pytest.raises(EvidenceError) as ei:
        _verify(v, at)
    # the item that expires first names the refusal: TCB Info / QE Identity, or a CRL (a revocation source)
    dates = v.raw["collateral_dates"]
    first = {dates["tcb_info_nextUpdate"]: "evidence.collateral_expired",
             dates["qe_identity_nextUpdate"]: "evidence.collateral_expired",
             dates["root_ca_crl_nextUpdate"]: "revocation.intel_root_ca_crl_expired",
             dates["pck_crl_nextUpdate"]: "revocation.intel_pck_crl_expired"}
    # a vector refused for its own reason is refused for it first (revocation is judged after the verifier)
    deferred = first[until].startswith("revocation.")
    assert ei.value.code == (EXPECTED_CODE[v.expected["error"]] if deferred and not v.expected["verify_ok"]
                             else first[until])


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_before_pck_not_before(v: Vector) -> None:
    q = parse_quote(v.read("quote"))
    leaf = x509.load_pem_x509_certificates(q.cert_data)[0]
    at = leaf.not_valid_before_utc - timedelta(seconds=1)
    with pytest.raises(EvidenceError) as ei:
        _verify(v, at)
    assert ei.value.code == "evidence.certificate_expired"


@pytest.mark.parametrize("v", VECTORS, ids=_id)
def test_tee_kind_must_match(v: Vector) -> None:
    other = "sgx-quote" if v.tee == "tdx" else "tdx-quote"
    with pytest.raises(EvidenceError) as ei:
        verify(other, v.read("quote"), collateral=[v.read("collateral")], at=v.verify_time)
    assert ei.value.code == "evidence.unsupported"


def test_collateral_missing() -> None:
    v = VECTORS[0]
    with pytest.raises(EvidenceError) as ei:
        verify("tdx-quote", v.read("quote"), collateral=[], at=v.verify_time)
    assert ei.value.code == "evidence.collateral_missing"
