"""Which TEE instance evidence attests: RTMR3 (where the loader measures) never changes it."""

from __future__ import annotations

from ca_service.evidence.base import VerifiedEvidence
from ca_service.evidence.instance import instance_of, instance_of_items


def _ve(kind: str, **claims: str) -> VerifiedEvidence:
    return VerifiedEvidence(kind=kind, report_data=b"", claims=claims, checks=(), evidence_sha256="0" * 64)


TD = {"mrtd": "aa" * 48, "rtmr0": "01" * 48, "rtmr1": "02" * 48, "rtmr2": "03" * 48, "rtmr3": "00" * 48}


def test_tdx_and_sim_identity_ignores_rtmr3():
    a = instance_of(_ve("tdx-quote", **TD))
    b = instance_of(_ve("tdx-quote", **{**TD, "rtmr3": "ff" * 48}))
    assert a is not None and b is not None and a.digest == b.digest
    assert instance_of(_ve("tdx-quote", **{**TD, "rtmr2": "04" * 48})).digest != a.digest
    assert instance_of(_ve("sim", **TD)).digest != a.digest  # another family never collides


def test_snp_identity_is_measurement_and_chip():
    a = instance_of(_ve("snp-report", measurement="11" * 48, chip_id="22" * 64, host_data="33" * 32))
    b = instance_of(_ve("snp-report", measurement="11" * 48, chip_id="44" * 64))
    assert a is not None and b is not None and a.digest != b.digest
    assert a.digest == instance_of(_ve("snp-report", measurement="11" * 48, chip_id="22" * 64)).digest


def test_no_identity_without_its_registers():
    assert instance_of(_ve("tdx-quote", mrtd="aa" * 48)) is None
    assert instance_of(_ve("nvidia-gpu", **TD)) is None
    gpu, cpu = _ve("nvidia-gpu"), _ve("sim", **TD)
    assert instance_of_items([gpu, cpu]) == instance_of(cpu)
    assert instance_of_items([gpu]) is None
