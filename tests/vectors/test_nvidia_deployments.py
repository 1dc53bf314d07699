"""GPU evidence as real deployments send it (issue 11 section 4), on the real H100 vectors: zero
padding after the signature (the NVML buffer) accepted and recorded, anything else refused; RIMs
checked one at a time, each with its own result; the policy says which RIMs it requires."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ca_service.errors import EvidenceError
from ca_service.evidence import verify
from ca_service.evidence.nvidia.parse import NVML_REPORT_BUFFER
from ca_service.policy.appraise import appraise
from ca_service.policy.model import load_policy
from tests.vectors.manifest import vectors_for

NVIDIA = {v.id: v for v in vectors_for("nvidia")}
V = NVIDIA["nvidia/hopper-h100-nvtrust-2023-with-rims"]
V2025 = NVIDIA["nvidia/hopper-h100-nvtrust-2025"]
DRIVER, VBIOS = V.files["rims_test_no_gpu"]
PROD_VBIOS = V.files["rims_prod_vbios"][1]
CLI = [sys.executable, "-m", "ca_service.cli", "evidence", "verify"]


def _verify(v, report: bytes, *rim_names: str):
    return verify("nvidia-gpu", report, collateral=[v.read("cert_chain"), *((v.dir / n).read_bytes()
                                                                           for n in rim_names)], at=v.verify_time)


def _code(v, report: bytes, *rim_names: str) -> str:
    try:
        _verify(v, report, *rim_names)
    except EvidenceError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("v", [V, V2025], ids=lambda v: v.id)
def test_zero_padding_is_accepted_and_recorded(v):
    report = v.read("report")
    for pad in (1, 7, NVML_REPORT_BUFFER - len(report)):
        padded = report + bytes(pad)
        r = _verify(v, padded)
        assert r.claims["trailing_zero_padding"] == pad
        assert r.claims["nonce"] == v.expected["nonce"]  # the same report: same claims, same signature
        assert r.evidence_sha256 != _verify(v, report).evidence_sha256  # the digest is of what was sent
        assert f"{pad} bytes of zero padding" in next(c for c in r.checks if c.name == "nvidia.report_parsed").detail


@pytest.mark.parametrize("v", [V, V2025], ids=lambda v: v.id)
def test_anything_else_after_the_signature_is_refused(v):
    report = v.read("report")
    room = NVML_REPORT_BUFFER - len(report)
    for bad in (b"\x01", bytes(room - 1) + b"\x80", b"\x00" * 5 + b"\xff" + b"\x00" * 5, bytes(room + 1),
                b"\x00" * (room + 1000)):
        assert _code(v, report + bad) == "evidence.nvidia.trailing_data", len(bad)
    # the padding is not signed, but the report before it is: a flipped signed byte still fails
    flipped = bytearray(report + bytes(16))
    flipped[60] ^= 1  # inside the first measurement value
    assert _code(v, bytes(flipped)) == "evidence.signature_invalid"


def test_each_rim_on_its_own():
    report = V.read("report")
    only_vbios = _verify(V, report, VBIOS)
    checks = {c.name: c.result for c in only_vbios.checks}
    assert checks["nvidia.rim.vbios"] == "pass" and checks["nvidia.rim.driver"] == "skipped"
    rim = only_vbios.claims["rim"]
    assert rim["driver"] is None and rim["vbios"]["mismatched_indexes"] == [] and rim["measurements_match"] is True
    only_driver = _verify(V, report, DRIVER)
    assert {c.name: c.result for c in only_driver.checks}["nvidia.rim.vbios"] == "skipped"
    assert only_driver.claims["rim"]["driver"]["mismatched_indexes"] == []
    # the PROD VBIOS RIM alone: its own mismatches, refused with the RIM named
    with pytest.raises(EvidenceError) as err:
        _verify(V, report, PROD_VBIOS)
    assert err.value.code == "evidence.nvidia.rim_mismatch" and err.value.fields["failed_checks"] == ["nvidia.rim.vbios"]
    assert err.value.partial.claims["rim"]["vbios"]["mismatched_indexes"] == [1, 2, 3, 9]
    # with the driver RIM beside it the driver result is its own (pass) and the VBIOS one fails
    with pytest.raises(EvidenceError) as err:
        _verify(V, report, DRIVER, PROD_VBIOS)
    results = {c.name: c.result for c in err.value.partial.checks}
    assert results["nvidia.rim.driver"] == "pass" and results["nvidia.rim.vbios"] == "fail"


def _policy(rules: str) -> str:
    return (f"name: gpu\nevidence:\n  required: [tdx-quote, nvidia-gpu]\n  tdx-quote:\n    debug: false\n"
            f"  nvidia-gpu:\n{rules}certificate:\n  max_lifetime: 1h\n")


@pytest.mark.parametrize(("rules", "rims", "failed"), [
    ("    rims: [vbios]\n", (VBIOS,), set()),
    ("    rims: [vbios]\n", (DRIVER,), {"measurements.vbios"}),
    ("    rims: [driver]\n", (DRIVER,), set()),
    ("    measurements: match_rim\n    rims: [vbios]\n", (VBIOS,), set()),
    ("    measurements: match_rim\n", (VBIOS,), {"measurements.driver"}),   # match_rim alone: both
    ("    measurements: match_rim\n", (DRIVER, VBIOS), set()),
    ("    rims: [driver, vbios]\n", (), {"measurements.driver", "measurements.vbios"}),
])
def test_the_policy_says_which_rims_it_requires(rules, rims, failed):
    policy = load_policy(_policy(rules))
    gpu = _verify(V, V.read("report"), *rims)
    result = appraise(policy, [gpu], insecure_allowed=False)
    gpu_failed = {c.claim for c in result.failed if c.evidence == "nvidia-gpu"}
    assert gpu_failed == failed
    for c in result.checks:
        if c.claim in failed:
            assert c.actual == "skipped"


def test_rims_policy_schema():
    from ca_service.errors import PolicyError

    for bad in ("    rims: []\n", "    rims: [firmware]\n", "    rims: [vbios, vbios]\n"):
        with pytest.raises(PolicyError):
            load_policy(_policy(bad))


def test_padding_and_single_rim_via_cli(tmp_path: Path):
    padded = tmp_path / "report.bin"
    padded.write_bytes(V.read("report") + bytes(NVML_REPORT_BUFFER - len(V.read("report"))))
    base = ["nvidia-gpu", str(padded), "--collateral", str(V.dir / V.files["cert_chain"]), "--at",
            V.verify_time.isoformat(), "--json"]
    p = subprocess.run([*CLI, *base, "--collateral", str(V.dir / VBIOS)], capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["ok"] is True, out.get("error")
    assert out["claims"]["trailing_zero_padding"] == NVML_REPORT_BUFFER - len(V.read("report"))
    assert "nvidia.rim.driver" in out["skipped_checks"]
    bad = tmp_path / "bad.bin"
    bad.write_bytes(V.read("report") + b"\x00\x00\x01")
    base[1] = str(bad)
    p = subprocess.run([*CLI, *base], capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"]["code"] == "evidence.nvidia.trailing_data"


def test_ocsp_files_via_cli(tmp_path: Path):
    """OCSP responses are --collateral files like any other (DER, recognised by content): for the real
    chain, answers NVIDIA did not sign are refused with the item named, exit 1."""
    from tests.unit.evidence.nvidia.test_nvidia_ocsp import _forged_for_real_chain

    args = [*CLI, "nvidia-gpu", str(V2025.dir / V2025.files["report"]), "--collateral",
            str(V2025.dir / V2025.files["cert_chain"]), "--at", V2025.verify_time.isoformat(), "--json"]
    for i, der in enumerate(_forged_for_real_chain(V2025)):
        (tmp_path / f"ocsp{i}.der").write_bytes(der)
        args += ["--collateral", str(tmp_path / f"ocsp{i}.der")]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["ok"] is False
    assert out["error"]["code"] == "revocation.nvidia_ocsp_bad_signature"
    ocsp_check = next(c for c in out["checks"] if c["name"] == "nvidia.ocsp")
    assert ocsp_check["result"] == "fail" and ocsp_check["code"] == "revocation.nvidia_ocsp_bad_signature"
    assert out["claims"]["ocsp"]["state"] == "bad_signature"
