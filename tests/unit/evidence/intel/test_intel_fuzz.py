"""Bad input never escapes as anything but an EvidenceError with a stable code.

Hypothesis drives random and structure-aware mutations of a real quote and of its collateral; the
regression corpus (tests/corpus/intel, expected codes in codes.json) replays inputs that once
reached a non-EvidenceError path inside pyca/cryptography, plus hand-made malformed headers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.intel.parse import parse_quote
from tests.vectors.manifest import vectors_for

CORPUS = Path(__file__).resolve().parents[4] / "tests" / "corpus" / "intel"
V4 = next(v for v in vectors_for("tdx") if v.path == "tdx/dcapqvl-v4-uptodate")
SGX = next(v for v in vectors_for("sgx") if v.path == "sgx/dcapqvl-v3-config-swhardening")
QUOTE = V4.read("quote")
COLL = V4.read("collateral")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(quote: bytes, collateral: bytes = COLL, kind: str = "tdx-quote") -> str | None:
    try:
        verify(kind, quote, collateral=[collateral], at=V4.verify_time)
    except EvidenceError as exc:
        assert exc.code.startswith(("evidence.", "revocation.intel_"))
        return exc.code
    return None


CODES: dict[str, str] = json.loads((CORPUS / "codes.json").read_text())


@pytest.mark.parametrize("name", sorted(CODES))
def test_regression_corpus(name: str) -> None:
    assert _outcome((CORPUS / name).read_bytes()) == CODES[name]


@FUZZ
@given(st.binary(min_size=1, max_size=6000))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    assert _outcome(data) is not None
    assert _outcome(data, kind="sgx-quote") is not None


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(QUOTE) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_mutated_quote_never_crashes(flips: list[tuple[int, int]]) -> None:
    m = bytearray(QUOTE)
    for off, x in flips:
        m[off] ^= x
    _outcome(bytes(m))


@FUZZ
@given(st.integers(0, len(QUOTE)), st.binary(max_size=64), st.integers(0, 64))
def test_spliced_quote_never_crashes(at: int, insert: bytes, cut: int) -> None:
    _outcome(QUOTE[:at] + insert + QUOTE[at + cut :])


@FUZZ
@given(st.sampled_from([0, 2, 4, 6]), st.integers(0, 0xFFFFFFFF))
def test_length_fields_never_crash(which: int, value: int) -> None:
    q = parse_quote(QUOTE)
    cert_at = QUOTE.index(q.cert_data)
    offsets = [q.signed_len, q.signed_len + 4 + 128 + 2, cert_at - 4, 0]
    off = offsets[which // 2]
    m = bytearray(QUOTE)
    m[off : off + 4] = value.to_bytes(4, "little")
    _outcome(bytes(m))


@FUZZ
@given(st.integers(0, len(COLL) - 1), st.integers(1, 255))
def test_mutated_collateral_json_never_crashes(off: int, x: int) -> None:
    m = bytearray(COLL)
    m[off] ^= x
    _outcome(QUOTE, bytes(m))


@pytest.mark.parametrize(
    "doc",
    [b"{}", b"[]", b'{"tcb_info": 1, "qe_identity": 2}', b'{"tcb_info": "x", "qe_identity": "y"}', b"{" * 10],
)
def test_malformed_collateral_json(doc: bytes) -> None:
    assert _outcome(QUOTE, doc) in ("evidence.collateral_invalid", "evidence.collateral_missing")


def test_oversized_and_trailing() -> None:
    assert _outcome(QUOTE + bytes(100)) is None  # zero padding after the signature data is ignored
    assert _outcome(QUOTE[:-71]) is not None  # the PEM chain is cut
    with pytest.raises(EvidenceError) as ei:
        verify("tdx-quote", QUOTE + bytes(1 << 20), collateral=[COLL], at=V4.verify_time)
    assert ei.value.code == "evidence.malformed"
