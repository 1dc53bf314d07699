"""The sim TEE: regenerated vectors equal the committed ones; every signed byte matters; the three
gates (pin, profile, policy) hold."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca_service.errors import EvidenceError
from ca_service.evidence import TrustRoots, verify
from ca_service.evidence.sim.attester import InsecureSimTee, InsecureSimTeeWarning, SimMeasurements
from ca_service.evidence.sim.parse import SIGNED_LEN

HERE = Path(__file__).resolve().parents[3] / "vectors" / "sim"
SEED = b"ca-service sim vector seed 0"
AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tee() -> InsecureSimTee:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSimTeeWarning)
        return InsecureSimTee.from_seed(SEED)


@pytest.fixture(scope="module")
def roots(tee) -> TrustRoots:
    return TrustRoots().with_sim_root(tee.root_der())


def test_regenerates_committed_vectors(tee):
    assert tee.report(bytes(range(64))) == (HERE / "report-seed0.bin").read_bytes()
    assert tee.root_der() == (HERE / "root-seed0.der").read_bytes()


def test_constructing_warns():
    with pytest.warns(InsecureSimTeeWarning):
        InsecureSimTee.from_seed(b"x")


def test_committed_vector_verifies(roots):
    ve = verify("sim", (HERE / "report-seed0.bin").read_bytes(), at=AT, roots=roots, nonce=bytes(range(64)))
    assert ve.insecure is True and ve.kind == "sim" and ve.tcb_status == "UpToDate"
    assert ve.report_data == bytes(range(64))
    assert ve.claims["debug"] is False


def test_every_signed_byte_flip_is_refused(roots):
    raw = (HERE / "report-seed0.bin").read_bytes()
    for i in range(SIGNED_LEN + 64):  # header + body + the signature itself
        mutated = bytearray(raw)
        mutated[i] ^= 0x01
        with pytest.raises(EvidenceError) as ei:
            verify("sim", bytes(mutated), at=AT, roots=roots)
        expected = {"evidence.malformed"} if i < 8 else {"evidence.unsupported"} if i < 12 else {
            "evidence.signature_invalid"}
        assert ei.value.code in expected, (i, ei.value.code)


def test_unpinned_root_and_other_sim(tee, roots):
    raw = tee.report(b"\x00" * 64)
    with pytest.raises(EvidenceError) as ei:
        verify("sim", raw, at=AT)
    assert ei.value.code == "evidence.root_untrusted"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = InsecureSimTee.from_seed(b"another machine")
    with pytest.raises(EvidenceError) as ei:
        verify("sim", other.report(b"\x00" * 64), at=AT, roots=roots)
    assert ei.value.code == "evidence.root_untrusted"


def test_validity_window(tee, roots):
    with pytest.raises(EvidenceError) as ei:
        verify("sim", tee.report(b""), at=datetime(2024, 1, 1, tzinfo=UTC), roots=roots)
    assert ei.value.code == "evidence.certificate_expired"


def test_baseline_attributes(tee, roots):
    with pytest.raises(EvidenceError) as ei:
        verify("sim", tee.report(b"", SimMeasurements(debug=True)), at=AT, roots=roots)
    assert ei.value.code == "evidence.debug_enabled"
    with pytest.raises(EvidenceError) as ei:
        verify("sim", tee.report(b"", SimMeasurements(sept_ve_disable=False)), at=AT, roots=roots)
    assert ei.value.code == "evidence.sept_ve_disable_unset"


def test_nonce_must_lead_report_data(tee, roots):
    with pytest.raises(EvidenceError) as ei:
        verify("sim", tee.report(b"\x01" * 64), at=AT, roots=roots, nonce=b"\x02")
    assert ei.value.code == "evidence.report_data_mismatch"


def test_naive_time_refused(tee, roots):
    with pytest.raises(ValueError):
        verify("sim", tee.report(b""), at=datetime(2026, 1, 1), roots=roots)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_random_bytes_never_crash(roots, data):
    with pytest.raises(EvidenceError):
        verify("sim", data, at=AT, roots=roots)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 1457), junk=st.binary(max_size=8))
def test_truncated_or_extended(roots, cut, junk):
    from hypothesis import assume

    raw = (HERE / "report-seed0.bin").read_bytes()
    candidate = raw[:cut] + junk
    assume(candidate != raw)
    with pytest.raises(EvidenceError):
        verify("sim", candidate, at=AT, roots=roots)
