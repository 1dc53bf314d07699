"""Property tests: whatever the bytes, the NVIDIA report parser, the RIM reader and the verifier
answer with an EvidenceError leaf (or a result), never another exception; and the corpus keeps its codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import load_collateral
from ca_service.evidence.nvidia.parse import parse_report
from ca_service.evidence.nvidia.rim import verify_rim
from ca_service.evidence.nvidia.verify import verify_nvidia
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

CORPUS = Path(__file__).resolve().parents[3] / "corpus" / "nvidia"
V = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
REPORT = V.read("report")
CHAIN = V.read("cert_chain")
COLLATERAL = load_collateral([CHAIN])
DRIVER, VBIOS = ((V.dir / n).read_bytes() for n in V.files["rims_test_no_gpu"])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=5000))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        parse_report(data)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_valid_request_then_anything(tail: bytes) -> None:
    try:
        verify_nvidia(REPORT[:37] + b"\x11\x60" + tail, COLLATERAL, V.verify_time, DEFAULT_ROOTS)
    except EvidenceError:
        pass


@FUZZ
@given(st.integers(0, len(REPORT) - 1), st.binary(min_size=1, max_size=32), st.booleans())
def test_verify_splices_into_a_real_report(off: int, patch: bytes, truncate: bool) -> None:
    mutated = REPORT[:off] + patch + REPORT[off + len(patch):]
    if truncate:
        mutated = mutated[: off + len(patch)]
    if mutated == REPORT:
        return
    with pytest.raises(EvidenceError):
        verify_nvidia(mutated, COLLATERAL, V.verify_time, DEFAULT_ROOTS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VBIOS) - 1), st.binary(min_size=1, max_size=16))
def test_mangled_rims(off: int, patch: bytes) -> None:
    mutated = VBIOS[:off] + patch + VBIOS[off + len(patch):]
    try:
        verify_rim(mutated, DEFAULT_ROOTS.nvidia_rim, V.verify_time)
    except EvidenceError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=1024) | st.sampled_from([b"<x/>", b"<?xml version='1.0'?><a>&b;</a>",
                                                            b"<!DOCTYPE a [<!ENTITY b SYSTEM 'file:///etc/passwd'>]><a>&b;</a>"]),
                max_size=3))
def test_garbage_collateral(items: list[bytes]) -> None:
    try:
        verify("nvidia-gpu", REPORT, collateral=[CHAIN, *items], at=V.verify_time)
    except EvidenceError:
        pass


def test_external_entities_are_never_resolved() -> None:
    xxe = b"<!DOCTYPE a [<!ENTITY b SYSTEM 'file:///etc/passwd'>]><a>&b;</a>"
    with pytest.raises(EvidenceError) as err:
        verify_rim(xxe, DEFAULT_ROOTS.nvidia_rim, V.verify_time)
    assert err.value.code == "evidence.collateral_invalid"


def _corpus() -> list[tuple[str, str]]:
    return sorted(json.loads((CORPUS / "index.json").read_text()).items())


@pytest.mark.parametrize(("name", "code"), _corpus())
def test_corpus(name: str, code: str) -> None:
    with pytest.raises(EvidenceError) as err:
        verify("nvidia-gpu", (CORPUS / name).read_bytes(), collateral=[CHAIN], at=V.verify_time)
    assert err.value.code == code
