"""ABI-level decoding: TCB_VERSION layouts (Table 3), guest policy bits (section 4.3), Table 23."""

from __future__ import annotations

import pytest

from ca_service.errors import EvidenceMalformed, EvidenceUnsupported
from ca_service.evidence.snp.parse import GuestPolicy, SigningKey, TcbLayout, TcbVersion, parse_report
from tests.vectors.manifest import vectors_for


def test_tcb_layouts() -> None:
    raw = 0x5400000000000A0B  # ucode 0x54, bytes 0/1 = 0x0B, 0x0A
    milan = TcbVersion.decode(raw, TcbLayout.FAMILY_19H)
    assert (milan.bl, milan.tee, milan.snp, milan.ucode, milan.fmc) == (0x0B, 0x0A, 0, 0x54, None)
    turin = TcbVersion.decode(0x5200000004030201, TcbLayout.FAMILY_1AH)
    assert (turin.fmc, turin.bl, turin.tee, turin.snp, turin.ucode) == (1, 2, 3, 4, 0x52)
    genoa = next(v for v in vectors_for("snp") if v.id == "snp/genoa-azure-vcek")
    r = parse_report(genoa.read("report"))
    t = r.tcb(TcbLayout.FAMILY_19H)["reported"]
    assert (t.bl, t.tee, t.snp, t.ucode) == (10, 0, 23, 84)


def test_guest_policy_bits() -> None:
    p = GuestPolicy(0xB0000).to_json()
    assert p["smt"] and p["reserved_must_be_one"] and p["debug"] and not p["migrate_ma"]
    p = GuestPolicy((1 << 18) | (1 << 20) | 0x0102).to_json()
    assert p["migrate_ma"] and p["single_socket"] and (p["abi_major"], p["abi_minor"]) == (1, 2)


def test_signing_key_and_errors() -> None:
    vlek = next(v for v in vectors_for("snp") if v.id == "snp/milan-aws-vlek")
    assert parse_report(vlek.read("report")).signing_key is SigningKey.VLEK
    with pytest.raises(EvidenceMalformed):
        parse_report(b"")
    with pytest.raises(EvidenceUnsupported):
        parse_report(bytes(0x4A0))
