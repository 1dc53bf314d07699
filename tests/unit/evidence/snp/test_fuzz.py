"""Property tests: whatever the bytes, the SNP parser and verifier answer with an EvidenceError leaf
(or a result), never another exception; and the corpus of crafted inputs keeps its codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.snp.azure import HCL_MAGIC, parse_hcl_report
from ca_service.evidence.snp.parse import REPORT_SIZE, parse_report
from ca_service.evidence.snp.verify import verify_snp
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

CORPUS = Path(__file__).resolve().parents[3] / "corpus" / "snp"
V = next(v for v in vectors_for("snp") if v.id == "snp/milan-azure-vtpm")
REPORT = V.read("report")
HCL = (V.dir / "hcl_report.bin").read_bytes()
COLLATERAL = load_collateral([V.read("vek"), V.read("cert_chain"), V.read("crl")])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(evidence: bytes) -> None:
    try:
        verify_snp(evidence, COLLATERAL, V.verify_time, DEFAULT_ROOTS)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_parse_report_any_bytes(data: bytes) -> None:
    try:
        parse_report(data)
    except EvidenceError:
        pass


@FUZZ
@given(st.integers(0, REPORT_SIZE - 1), st.binary(min_size=1, max_size=64))
def test_verify_splices_into_a_real_report(off: int, patch: bytes) -> None:
    mutated = (REPORT[:off] + patch + REPORT[off + len(patch) :])[:REPORT_SIZE]
    if mutated == REPORT:
        return
    with pytest.raises(EvidenceError):
        verify_snp(mutated, COLLATERAL, V.verify_time, DEFAULT_ROOTS)


@FUZZ
@given(st.integers(4, len(HCL) - 1), st.binary(min_size=1, max_size=32), st.integers(0, 1))
def test_verify_mutated_hcl_reports(off: int, patch: bytes, truncate: int) -> None:
    mutated = HCL[:off] + patch + HCL[off + len(patch) :]
    if truncate:
        mutated = mutated[:off]
    _run(mutated)
    try:
        parse_hcl_report(mutated)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_hcl_magic_then_anything(tail: bytes) -> None:
    _run(HCL_MAGIC + tail)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=2048), max_size=4))
def test_garbage_collateral(items: list[bytes]) -> None:
    try:
        verify("snp-report", REPORT, collateral=items, at=V.verify_time)
    except EvidenceError:
        pass


def _corpus() -> list[tuple[str, str]]:
    index = json.loads((CORPUS / "index.json").read_text())
    return sorted(index.items())


@pytest.mark.parametrize(("name", "code"), _corpus())
def test_corpus(name: str, code: str) -> None:
    with pytest.raises(EvidenceError) as err:
        verify("snp-report", (CORPUS / name).read_bytes(), collateral=COLLATERAL, at=V.verify_time)
    assert err.value.code == code
