"""Every NVIDIA vector in ../shared/vectors, verified as of its verify_time, with and without RIMs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.nvidia.chain import clear_caches
from ca_service.evidence.nvidia.rim import clear_caches as clear_rims
from ca_service.evidence.trust import DEFAULT_ROOTS, TrustRoots, is_pinned
from tests.vectors.manifest import Vector, vectors_for

NVIDIA = vectors_for("nvidia")
IDS = [v.id for v in NVIDIA]
WITH_RIMS = next(v for v in NVIDIA if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
V2025 = next(v for v in NVIDIA if v.id == "nvidia/hopper-h100-nvtrust-2025")
RIM_SETS = [k for k in WITH_RIMS.files if k.startswith("rims_")]


def rims(v: Vector, key: str) -> list[bytes]:
    return [(v.dir / name).read_bytes() for name in v.files[key]]


def code_of(v: Vector, collateral: list[bytes], at: datetime | None = None, evidence: bytes | None = None,
            **kw: object) -> str:
    try:
        verify("nvidia-gpu", v.read("report") if evidence is None else evidence, collateral=collateral,
               at=v.verify_time if at is None else at, **kw)  # type: ignore[arg-type]
    except EvidenceError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("v", NVIDIA, ids=IDS)
def test_vector_expected_outcome(v: Vector) -> None:
    exp = v.expected
    r = verify("nvidia-gpu", v.read("report"), collateral=[v.read("cert_chain")], at=v.verify_time)
    c = r.claims
    assert exp["signature_chain_valid"] and exp["report_signature_valid"]
    assert c["nonce"] == exp["nonce"] and r.report_data.hex() == exp["nonce"]
    assert c["driver_version"] == exp["driver_version"]
    assert c["vbios_version_raw"] == exp["vbios_version_raw"]
    assert c["n_measurement_blocks"] == exp["n_measurement_blocks"] == len(c["measurements"])
    assert c["rim"] is None and c["ocsp_checked"] is False and c["debug"] is None
    # what was not given is skipped, never passed: the RIM comparison and the OCSP check
    assert {ch.name for ch in r.checks if not ch.passed} == {"nvidia.rim.driver", "nvidia.rim.vbios", "nvidia.ocsp"}
    assert c["trailing_zero_padding"] == 0 and c["ocsp"]["state"] == "missing"
    assert all(ch.skipped for ch in r.checks if not ch.passed)
    json.dumps(r.to_json())


@pytest.mark.parametrize("rim_set", RIM_SETS)
def test_rim_sets_expected_outcome(rim_set: str) -> None:
    v, exp = WITH_RIMS, WITH_RIMS.expected[rim_set]
    try:
        r = verify("nvidia-gpu", v.read("report"), collateral=[v.read("cert_chain"), *rims(v, rim_set)],
                   at=v.verify_time)
        assert exp["measurements_match"] is True
    except EvidenceError as exc:  # a failed check is one verdict: refused, its result kept for the caller
        assert exp["measurements_match"] is False
        assert exc.code == "evidence.nvidia.rim_mismatch"
        assert exc.fields["failed_checks"] == ["nvidia.rim.vbios"]  # the driver RIM matches on its own
        r = exc.partial
    rim = r.claims["rim"]
    assert rim["driver_rim"]["sha256"] == __import__("hashlib").sha256((v.dir / exp["driver_rim"]).read_bytes()).hexdigest()
    assert rim["vbios_rim"]["sha256"] == __import__("hashlib").sha256((v.dir / exp["vbios_rim"]).read_bytes()).hexdigest()
    assert rim["driver_rim"]["signature_valid"] is exp["driver_rim_signature_valid"] is True
    assert rim["vbios_rim"]["signature_valid"] is exp["vbios_rim_signature_valid"] is True
    assert rim["measurements_match"] is exp["measurements_match"]
    assert rim["mismatched_indexes"] == exp["mismatched_indexes"]
    check = next(ch for ch in r.checks if ch.name == "nvidia.rim.vbios")
    assert check.passed is exp["measurements_match"]
    # one result per RIM: the driver RIM matches in both sets, the PROD VBIOS RIM holds the mismatches
    assert rim["driver"]["mismatched_indexes"] == [] and next(ch for ch in r.checks
                                                              if ch.name == "nvidia.rim.driver").passed
    assert rim["vbios"]["mismatched_indexes"] == exp["mismatched_indexes"]
    json.dumps(r.to_json())


def test_pins_match_the_vector_roots() -> None:
    for v in NVIDIA:
        dev = x509.load_pem_x509_certificate(v.read("device_root"))
        assert is_pinned(dev, DEFAULT_ROOTS.nvidia_device)
        assert is_pinned(x509.load_pem_x509_certificate((v.dir / "nvidia_rim_root.pem").read_bytes()),
                         DEFAULT_ROOTS.nvidia_rim)


def test_unpinned_roots_are_refused() -> None:
    v = WITH_RIMS
    coll = [v.read("cert_chain"), *rims(v, "rims_test_no_gpu")]
    clear_caches()
    clear_rims()
    assert code_of(v, coll, roots=TrustRoots(nvidia_device=frozenset())) == "evidence.root_untrusted"
    assert code_of(v, coll) == "ok"
    assert code_of(v, coll, roots=TrustRoots(nvidia_device=frozenset({"00" * 32}))) == "evidence.root_untrusted"
    assert code_of(v, coll, roots=TrustRoots(nvidia_rim=frozenset())) == "evidence.root_untrusted"  # warm RIM cache


def test_expired_certificates_are_refused() -> None:
    v = WITH_RIMS
    assert code_of(v, [v.read("cert_chain")], at=datetime(2020, 1, 1, tzinfo=UTC)) == "evidence.certificate_expired"
    # The RIM signers ("HCC RIM L4 Signer") expire 2025-06-22/26: RIMs are refused after that.
    late = datetime(2025, 7, 1, tzinfo=UTC)
    assert code_of(v, [v.read("cert_chain")], at=late) == "ok"
    assert code_of(v, [v.read("cert_chain"), *rims(v, "rims_test_no_gpu")], at=late) == "evidence.collateral_expired"


def test_nonce() -> None:
    v = WITH_RIMS
    nonce = bytes.fromhex(v.expected["nonce"])
    assert code_of(v, [v.read("cert_chain")], nonce=nonce) == "ok"
    assert code_of(v, [v.read("cert_chain")], nonce=bytes(32)) == "evidence.report_data_mismatch"
    assert code_of(v, [v.read("cert_chain")], nonce=nonce + b"\x00") == "evidence.report_data_mismatch"


def test_collateral_problems() -> None:
    v = WITH_RIMS
    assert code_of(v, []) == "evidence.collateral_missing"
    # Another H100's chain: valid to the root, but not the key that signed this report.
    assert code_of(v, [V2025.read("cert_chain")]) == "evidence.signature_invalid"
    pems = x509.load_pem_x509_certificates(v.read("cert_chain"))
    from cryptography.hazmat.primitives.serialization import Encoding

    no_leaf = b"".join(c.public_bytes(Encoding.PEM) for c in pems[1:])
    assert code_of(v, [no_leaf]) == "evidence.chain_invalid"
    only_root = pems[-1].public_bytes(Encoding.PEM)
    assert code_of(v, [only_root]) == "evidence.chain_invalid"
    assert code_of(v, [pems[0].public_bytes(Encoding.PEM)]) == "evidence.root_untrusted"
    # Order does not matter: DER, reversed.
    assert code_of(v, [c.public_bytes(Encoding.DER) for c in reversed(pems)]) == "ok"
    # Only one of the two RIMs: each is checked on its own (which are required is the policy's).
    driver, vbios = rims(v, "rims_test_no_gpu")
    assert code_of(v, [v.read("cert_chain"), driver]) == "ok"
    assert code_of(v, [v.read("cert_chain"), vbios]) == "ok"
    assert code_of(v, [v.read("cert_chain"), driver, driver, vbios]) == "evidence.collateral_invalid"
    # The 2025 report (driver 550.90.07) with the 2023 RIMs (545.00): RIMs for another version.
    assert code_of(V2025, [V2025.read("cert_chain"), driver, vbios], at=v.verify_time) == (
        "evidence.collateral_mismatch"
    )


def test_rims_valid_up_to_their_signer_expiry() -> None:
    v = WITH_RIMS
    coll = [v.read("cert_chain"), *rims(v, "rims_test_no_gpu")]
    expiry = datetime(2025, 6, 22, 9, 30, 33, tzinfo=UTC)  # the earliest L4 signer notAfter
    assert code_of(v, coll, at=expiry - timedelta(days=1)) == "ok"
    assert code_of(v, coll, at=expiry + timedelta(days=5)) == "evidence.collateral_expired"
