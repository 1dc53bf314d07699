"""Each family states what its evidence needs (issue 14 "Shape", STYLE.md 16), on the real vectors: the
service only maps the needs to endpoints and orchestrates."""

from __future__ import annotations

import pytest

from ca_service.collateral.endpoints import endpoint_for
from ca_service.collateral.errors import UrlNotAllowed
from ca_service.errors import CollateralMissing, EvidenceUnsupported
from ca_service.evidence import needs
from ca_service.evidence.needs import needs_for
from tests.vectors.manifest import vectors_for

SNP = {v.path: v for v in vectors_for("snp")}
TDX = {v.path: v for v in vectors_for("tdx")}


def test_an_intel_quote_needs_its_fmspc_tcb_info_qe_identity_and_both_crls():
    v = TDX["tdx/dcapqvl-v4-uptodate"]
    (alternative,) = needs_for("tdx-quote", v.read("quote"))
    assert [type(n) for n in alternative] == [needs.IntelTcbInfo, needs.IntelQeIdentity, needs.IntelPckCrl,
                                              needs.IntelRootCaCrl]
    assert alternative[0].tee == "tdx" and len(alternative[0].fmspc) == 6
    assert [isinstance(n, needs.REVOCATION_NEEDS) for n in alternative] == [False, False, True, True]


def test_a_vlek_report_is_judged_by_what_it_was_sent_with_and_the_cas_vlek_crl():
    v = SNP["snp/milan-aws-vlek"]
    with pytest.raises(CollateralMissing):  # KDS publishes no VLEKs: without one sent, nothing to judge by
        needs_for("snp-report", v.read("report"))
    (alternative,) = needs_for("snp-report", v.read("report"), [v.read("vek"), v.read("cert_chain")])
    assert alternative == (needs.Sent("vlek"), needs.AmdCrl("Milan", "vlek"))
    assert endpoint_for(alternative[1]).url == "https://kdsintf.amd.com/vlek/v1/Milan/crl"
    with pytest.raises(UrlNotAllowed):  # no vendor serves it
        endpoint_for(alternative[0])


def test_kinds_without_a_family_answer_are_refused():
    with pytest.raises(EvidenceUnsupported):
        needs_for("sim", b"")
