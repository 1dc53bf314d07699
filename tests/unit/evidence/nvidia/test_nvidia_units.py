"""NVIDIA pieces on their own: version rendering, RIM assignment and comparison rules."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence.nvidia.parse import OpaqueField, parse_report
from ca_service.evidence.nvidia.rim import GoldenMeasurement, verify_rim
from ca_service.evidence.nvidia.verify import _assign_rims, compare
from ca_service.evidence.trust import DEFAULT_ROOTS
from tests.vectors.manifest import vectors_for

V = next(v for v in vectors_for("nvidia") if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")
REPORT = parse_report(V.read("report"))
DRIVER, VBIOS = (verify_rim((V.dir / n).read_bytes(), DEFAULT_ROOTS.nvidia_rim, V.verify_time)
                 for n in V.files["rims_test_no_gpu"])


def test_versions() -> None:
    assert REPORT.vbios_version == "96.00.5E.00.01" and REPORT.driver_version == "545.00"
    short = replace(REPORT, opaque=(OpaqueField(6, b"\x00\x01"),))
    assert short.vbios_version == "" and short.driver_version == ""
    assert REPORT.measurement_list()[0] == REPORT.blocks[0].value.hex()


def test_signed_bytes_are_request_and_response_without_signature() -> None:
    assert REPORT.signed_bytes == REPORT.raw[:-96] and REPORT.signature == REPORT.raw[-96:]
    assert REPORT.raw[:4] == bytes.fromhex("11e001ff") and REPORT.raw[37:39] == bytes.fromhex("1160")


def test_assignment_by_version_case_insensitive() -> None:
    assert _assign_rims(REPORT, [VBIOS, DRIVER]) == (DRIVER, VBIOS)
    lower = replace(VBIOS, version=VBIOS.version.lower())
    assert _assign_rims(REPORT, [DRIVER, lower])[1] is lower
    with pytest.raises(EvidenceError) as err:
        _assign_rims(REPORT, [DRIVER, replace(VBIOS, version="96.00.9F.00.01")])
    assert err.value.code == "evidence.collateral_mismatch"


def test_compare_rules() -> None:
    assert compare(REPORT, DRIVER, VBIOS)["mismatched_indexes"] == []
    # Alternatives: any one matches.
    g = next(m for m in VBIOS.measurements if m.active)
    alt = replace(g, values=(b"\x00" * g.size, *g.values))
    vb = replace(VBIOS, measurements=tuple(alt if m is g else m for m in VBIOS.measurements))
    assert compare(REPORT, DRIVER, vb)["mismatched_indexes"] == []
    # A golden value for a block the report lacks is a mismatch.
    extra = replace(VBIOS, measurements=(*VBIOS.measurements, GoldenMeasurement(200, True, 48, (bytes(48),))))
    assert compare(REPORT, DRIVER, extra)["mismatched_indexes"] == [200]
    # Both RIMs active at one index: refused.
    d = next(m for m in DRIVER.measurements if m.active)
    clash = replace(VBIOS, measurements=(*VBIOS.measurements[:0], replace(d, values=d.values)))
    with pytest.raises(EvidenceError) as err:
        compare(REPORT, DRIVER, clash)
    assert err.value.code == "evidence.collateral_invalid"
