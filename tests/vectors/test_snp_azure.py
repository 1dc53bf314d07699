"""Azure SNP CVMs: the HCL report wrapping, its runtime-data binding and runtime key claims."""

from __future__ import annotations

import hashlib
import struct

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.snp.azure import parse_hcl_report
from tests.vectors.manifest import Vector, vectors_for

AZURE = [v for v in vectors_for("snp") if (v.dir / "hcl_report.bin").exists()]
IDS = [v.id for v in AZURE]


def coll(v: Vector) -> list[bytes]:
    return [v.read(r) for r in ("vek", "cert_chain", "crl")]


def hcl(v: Vector) -> bytes:
    return (v.dir / "hcl_report.bin").read_bytes()


def code_of(evidence: bytes, v: Vector) -> str:
    try:
        verify("snp-report", evidence, collateral=coll(v), at=v.verify_time)
    except EvidenceError as exc:
        return exc.code
    return "ok"


def test_both_azure_vectors_are_present() -> None:
    assert {v.id for v in AZURE} == {"snp/milan-azure-vtpm", "snp/genoa-azure-vcek"}


@pytest.mark.parametrize("v", AZURE, ids=IDS)
def test_hcl_report_verifies_and_exposes_runtime_claims(v: Vector) -> None:
    raw = hcl(v)
    assert raw[0x20:0x4C0] == v.read("report")
    r = verify("snp-report", raw, collateral=coll(v), at=v.verify_time)
    az = r.claims["azure"]
    runtime = parse_hcl_report(raw).runtime_data
    # The binding: SNP REPORT_DATA = SHA-256(runtime data) || 32 zero bytes.
    assert r.claims["hw_report_data"] == hashlib.sha256(runtime).hexdigest() + "00" * 32
    assert az["runtime_data_sha256"] == hashlib.sha256(runtime).hexdigest()
    kids = {k["kid"]: k for k in az["runtime_keys"]}
    assert set(kids) == {"HCLAkPub", "HCLEkPub"}
    assert kids["HCLAkPub"]["kty"] == "RSA" and kids["HCLAkPub"]["key_ops"] == ["sign"]
    assert len(kids["HCLAkPub"]["thumbprint_sha256"]) == 43
    assert az["vm_configuration"]["secure-boot"] is True
    # What a nonce binds to on Azure is the guest's HCL user-data.
    assert r.report_data.hex() == az["user_data"] == r.claims["report_data"]
    assert any(c.name == "azure.runtime_binding" and c.passed for c in r.checks)
    assert r.evidence_sha256 == hashlib.sha256(raw).hexdigest()


def test_user_data_is_the_nonce_on_azure() -> None:
    v = next(v for v in AZURE if v.id == "snp/milan-azure-vtpm")
    # trustee test_evaluate_v2 nonce (the TPM quote's extraData) is the HCL user-data's first 48 bytes.
    nonce = bytes.fromhex(
        "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"
    )
    verify("snp-report", hcl(v), collateral=coll(v), at=v.verify_time, nonce=nonce)


@pytest.mark.parametrize("v", AZURE, ids=IDS)
def test_runtime_data_tampering_is_refused(v: Vector) -> None:
    raw = bytearray(hcl(v))
    start = raw.index(b'"HCLAkPub"')
    raw[start + 30] ^= 0x01  # inside the attestation key's JWK
    assert code_of(bytes(raw), v) in ("evidence.report_data_mismatch", "evidence.malformed")
    # A swapped key that is still valid JSON: only the hash catches it.
    raw = bytearray(hcl(v))
    i = raw.index(b'"user-data":"') + len(b'"user-data":"')
    raw[i] = ord("1") if raw[i] != ord("1") else ord("2")
    assert code_of(bytes(raw), v) == "evidence.report_data_mismatch"


@pytest.mark.parametrize("v", AZURE, ids=IDS)
def test_malformed_hcl_wrapping(v: Vector) -> None:
    raw = hcl(v)
    assert code_of(raw[:0x100], v) == "evidence.malformed"
    assert code_of(raw[:0x4D0], v) == "evidence.malformed"  # runtime header cut
    var_size = struct.unpack_from("<I", raw, 0x4C0 + 16)[0]
    assert code_of(raw[: 0x4D4 + var_size - 1], v) == "evidence.malformed"  # runtime data cut
    tdx = bytearray(raw)
    struct.pack_into("<I", tdx, 0x4C0 + 8, 4)  # report_type TDX
    assert code_of(bytes(tdx), v) == "evidence.unsupported"
    odd_hash = bytearray(raw)
    struct.pack_into("<I", odd_hash, 0x4C0 + 12, 9)
    assert code_of(bytes(odd_hash), v) == "evidence.unsupported"
    sizes = bytearray(raw)
    struct.pack_into("<I", sizes, 0x4C0 + 16, var_size + 1)
    assert code_of(bytes(sizes), v) == "evidence.malformed"
    padding = bytearray(raw)
    padding[-1] = 1
    assert code_of(bytes(padding), v) == "evidence.malformed"
    # A flipped byte of the wrapped SNP report: the SNP signature.
    inner = bytearray(raw)
    inner[0x20 + 0x90] ^= 0x01  # MEASUREMENT
    assert code_of(bytes(inner), v) == "evidence.signature_invalid"
