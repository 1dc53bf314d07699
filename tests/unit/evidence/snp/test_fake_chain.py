"""Cases no real vector shows, on a fake AMD hierarchy pinned only in these tests:
report v5, Turin (family 1Ah TCB layout, FMC, 8-byte hwID), a VCEK of the right chip at the wrong
TCB, a revoked ASK, a debug guest, a VLEK whose report carries a chip id, a masked chip id."""

from __future__ import annotations

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.snp.parse import parse_report
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.unit.evidence.snp.fakeamd import AT, FakeAmd, make_report, tcb_raw

CHIP = bytes(range(64))
TCB = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}


@pytest.fixture(scope="module")
def milan() -> FakeAmd:
    return FakeAmd("Milan")


@pytest.fixture(scope="module")
def turin() -> FakeAmd:
    return FakeAmd("Turin")


def code(evidence: bytes, collateral: list[bytes], amd: FakeAmd) -> str:
    try:
        verify("snp-report", evidence, collateral=collateral, at=AT, roots=amd.roots)
    except EvidenceError as exc:
        return exc.code
    return "ok"


def test_report_v5_verifies_and_reads_mitigation_vectors(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    report = make_report(key, version=5, mit=(0x5, 0x7))
    r = verify(
        "snp-report", report, collateral=[vcek, milan.chain_pem(), milan.crl()], at=AT, roots=milan.roots
    )
    assert r.claims["version"] == 5
    assert (r.claims["launch_mit_vector"], r.claims["current_mit_vector"]) == (5, 7)
    assert r.claims["cpuid"] == {"family": 0x19, "model": 1, "stepping": 1}
    assert r.claims["crl"]["checked"] is True
    parsed = parse_report(report)
    assert (
        parsed.launch_mit_vector == 5 and parse_report(make_report(key, version=3)).launch_mit_vector is None
    )


def test_fake_ark_is_not_trusted_by_default(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    with pytest.raises(EvidenceError) as err:
        verify(
            "snp-report", make_report(key), collateral=[vcek, milan.chain_pem()], at=AT, roots=DEFAULT_ROOTS
        )
    assert err.value.code == "evidence.root_untrusted"


def test_turin_layout_fmc_and_short_hwid(turin: FakeAmd) -> None:
    tcb = {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 82}
    key, vcek = turin.vek(chip_id=CHIP, tcb=tcb)
    report = make_report(key, tcb=tcb_raw(2, 3, 4, 82, fmc=1), cpuid=(0x1A, 0x02, 0x00), version=5)
    r = verify("snp-report", report, collateral=[vcek, turin.chain_pem(), turin.crl()], at=AT, roots=turin.roots)
    assert r.claims["product_line"] == "Turin" and r.claims["product"] == "Turin-B0"
    assert r.claims["reported_tcb"] == {"raw": tcb_raw(2, 3, 4, 82, fmc=1), **tcb}
    # FMC differs: TCB mismatch, even though bl/tee/snp/ucode agree.
    key2, vcek2 = turin.vek(chip_id=CHIP, tcb={**tcb, "fmc": 2})
    report2 = make_report(key2, tcb=tcb_raw(2, 3, 4, 82, fmc=1), cpuid=(0x1A, 0x02, 0x00))
    assert code(report2, [vcek2, turin.chain_pem(), turin.crl()], turin) == "evidence.snp.tcb_mismatch"
    # A Turin report claiming a Milan CPU.
    report3 = make_report(key, tcb=tcb_raw(2, 3, 4, 82, fmc=1), cpuid=(0x19, 0x01, 0x01))
    assert code(report3, [vcek, turin.chain_pem(), turin.crl()], turin) == "evidence.snp.product_mismatch"
    # Turin is ready but unpinned by default (no vector to check a pin against).
    with pytest.raises(EvidenceError) as err:
        verify("snp-report", report, collateral=[vcek, turin.chain_pem(), turin.crl()], at=AT)
    assert err.value.code == "evidence.root_untrusted"


def test_right_chip_wrong_tcb(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb={**TCB, "ucode": 116})
    assert code(make_report(key), [vcek, milan.chain_pem(), milan.crl()], milan) == "evidence.snp.tcb_mismatch"


def test_hwid_in_der_octet_string_encoding(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB, hwid=b"\x04\x40" + CHIP)
    assert code(make_report(key), [vcek, milan.chain_pem(), milan.crl()], milan) == "ok"
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB, hwid=b"\x04\x20" + CHIP[:32])
    assert code(make_report(key), [vcek, milan.chain_pem(), milan.crl()], milan) == "evidence.collateral_invalid"


def test_masked_chip_id_binds_by_signature_only(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    report = bytearray(make_report(key, chip_id=bytes(64)))
    report[0x48] |= 0x02  # MASK_CHIP_KEY
    from tests.unit.evidence.snp.fakeamd import sign_body

    signed = sign_body(key, bytes(report))
    r = verify("snp-report", signed, collateral=[vcek, milan.chain_pem(), milan.crl()], at=AT,
               roots=milan.roots)
    assert r.claims["hwid_matches_chip_id"] is None and r.claims["mask_chip_key"] is True


def test_vlek_is_never_matched_on_chip_id(milan: FakeAmd) -> None:
    key, vlek = milan.vek(chip_id=CHIP, tcb=TCB, vlek=True)
    report = make_report(key, signing_key=1, chip_id=b"\xaa" * 64)
    r = verify("snp-report", report, collateral=[vlek, milan.chain_pem(vlek=True), milan.crl()], at=AT,
               roots=milan.roots)
    assert r.claims["signing_key"] == "vlek" and r.claims["hwid_matches_chip_id"] is None
    assert r.revocation == {"amd_crl": "good"}
    assert r.claims["vek"]["csp_id"] == "CN=csp.example"
    # A VLEK must chain through the ASVK, not the ASK.
    assert code(report, [vlek, milan.chain_pem(vlek=False)], milan) == "evidence.collateral_missing"


def test_revoked_ask(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    crl = milan.crl(revoked=(milan.ask.serial_number,))
    assert code(make_report(key), [vcek, milan.chain_pem(), crl], milan) == "evidence.certificate_revoked"
    other = milan.crl(revoked=(0x12345,))
    assert code(make_report(key), [vcek, milan.chain_pem(), other], milan) == "ok"


def test_debug_guest_is_refused_after_everything_else(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    report = make_report(key, policy=0x30000 | (1 << 19))
    assert code(report, [vcek, milan.chain_pem()], milan) == "evidence.debug_enabled"
    forged = bytearray(report)
    forged[0x2A0] ^= 1
    assert code(bytes(forged), [vcek, milan.chain_pem()], milan) == "evidence.signature_invalid"


def test_expired_vcek(milan: FakeAmd) -> None:
    from datetime import timedelta

    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB, not_before=AT + timedelta(days=1))
    assert code(make_report(key), [vcek, milan.chain_pem()], milan) == "evidence.certificate_expired"


def test_unknown_signing_key_selector(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB)
    for sel in (2, 7):
        assert (
            code(make_report(key, signing_key=sel), [vcek, milan.chain_pem()], milan)
            == "evidence.unsupported"
        )


def test_product_name_and_issuer_must_agree(milan: FakeAmd) -> None:
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB, product_name="Genoa-B0")
    assert code(make_report(key), [vcek, milan.chain_pem()], milan) == "evidence.snp.product_mismatch"
    key, vcek = milan.vek(chip_id=CHIP, tcb=TCB, product_name="Venice-A0")
    assert code(make_report(key), [vcek, milan.chain_pem()], milan) == "evidence.snp.product_mismatch"
