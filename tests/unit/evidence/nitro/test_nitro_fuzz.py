"""Property tests: whatever the bytes, the Nitro parser and verifier answer with an EvidenceError
leaf (or a result), never another exception; and the corpus of crafted inputs keeps its codes."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.collateral_items import Collateral
from ca_service.evidence.nitro.parse import parse_document, parse_evidence
from ca_service.evidence.nitro.verify import verify_nitro
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

CORPUS = Path(__file__).resolve().parents[3] / "corpus" / "nitro"
V = next(v for v in vectors_for("nitro") if v.id == "nitro/dstack-nsm-2025-12-25")
COSE = V.read("cose_sign1")
PAYLOAD = cbor2.loads(COSE)[2]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=64) | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12) | st.integers(-2, 40),
                                                                      children, max_size=10),
    max_leaves=20,
)


def _run(evidence: bytes) -> None:
    try:
        verify_nitro(evidence, Collateral(), V.verify_time, DEFAULT_ROOTS)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_parse_any_bytes(data: bytes) -> None:
    try:
        parse_evidence(data)
    except EvidenceError:
        pass


@FUZZ
@given(st.binary(max_size=2048))
def test_cose_prefix_then_anything(tail: bytes) -> None:
    _run(b"\x84" + tail)
    _run(b"\xd2\x84" + tail)


@FUZZ
@given(cbor_values)
def test_any_cbor_document(value: object) -> None:
    try:
        parse_document(cbor2.dumps(value))
    except EvidenceError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
                                        "public_key", "user_data", "nonce"]), cbor_values))
def test_document_with_known_keys_and_any_values(over: dict[str, object]) -> None:
    doc = dict(cbor2.loads(PAYLOAD))
    doc.update(over)
    arr = cbor2.loads(COSE)
    _run(cbor2.dumps([arr[0], arr[1], cbor2.dumps(doc), arr[3]]))


@FUZZ
@given(st.integers(0, len(COSE) - 1), st.binary(min_size=1, max_size=32), st.booleans())
def test_verify_splices_into_a_real_document(off: int, patch: bytes, truncate: bool) -> None:
    mutated = COSE[:off] + patch + COSE[off + len(patch):]
    if truncate:
        mutated = mutated[: off + len(patch)]
    if mutated == COSE:
        return
    with pytest.raises(EvidenceError):
        verify_nitro(mutated, Collateral(), V.verify_time, DEFAULT_ROOTS)


def test_deep_nesting_is_malformed() -> None:
    with pytest.raises(EvidenceError) as err:
        parse_evidence(b"\x84" + b"\x81" * 100_000)
    assert err.value.code == "evidence.malformed"


def _corpus() -> list[tuple[str, str]]:
    return sorted(json.loads((CORPUS / "index.json").read_text()).items())


@pytest.mark.parametrize(("name", "code"), _corpus())
def test_corpus(name: str, code: str) -> None:
    with pytest.raises(EvidenceError) as err:
        verify("nitro", (CORPUS / name).read_bytes(), at=V.verify_time)
    assert err.value.code == code
