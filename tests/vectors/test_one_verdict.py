"""Issue 11 section 3: one verdict. `ca-service evidence verify` exits 0 (genuine, vendor baseline
met), 1 (refused) or 2 (usage error); `--json` has one top-level verdict, `ok`, that agrees with
every check; a check not made is shown as skipped, never as passed. Run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors.manifest import vectors_for

CLI = [sys.executable, "-m", "ca_service.cli", "evidence", "verify"]
NVIDIA = {v.id: v for v in vectors_for("nvidia")}
WITH_RIMS = NVIDIA["nvidia/hopper-h100-nvtrust-2023-with-rims"]
V2025 = NVIDIA["nvidia/hopper-h100-nvtrust-2025"]
NITRO = vectors_for("nitro")
INTEL = vectors_for("tdx") + vectors_for("sgx")


def _run(args: list[str], as_json: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, *(["--json"] if as_json else [])], capture_output=True, text=True,
                          timeout=120)


def _agrees(out: dict) -> None:
    """The verdict agrees with every check, and skipped checks are listed as such."""
    results = [c["result"] for c in out["checks"]]
    assert set(results) <= {"pass", "fail", "skipped"}
    if out["ok"] is True:
        assert "fail" not in results and "error" not in out
    else:
        assert out["ok"] is False and "fail" in results and out["error"]["code"]
        failed = [c for c in out["checks"] if c["result"] == "fail"]
        assert out["error"]["code"] in {c.get("code") for c in failed}
    assert out["skipped_checks"] == [c["name"] for c in out["checks"] if c["result"] == "skipped"]


def _nvidia_args(v, rim_set: str | None = None) -> list[str]:
    args = ["nvidia-gpu", str(v.dir / v.files["report"]), "--collateral", str(v.dir / v.files["cert_chain"]),
            "--at", v.verify_time.isoformat()]
    for name in v.files.get(rim_set, []) if rim_set else []:
        args += ["--collateral", str(v.dir / name)]
    return args


def test_mismatching_vbios_rim_is_refused_not_ok():
    """The reported contradiction: a failed RIM check then OK with exit 0. Now: exit 1, ok false."""
    p = _run(_nvidia_args(WITH_RIMS, "rims_prod_vbios"))
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["ok"] is False
    assert out["error"]["code"] == "evidence.nvidia.rim_mismatch"
    _agrees(out)
    # the same in text: a FAIL line and a REFUSED verdict, never OK
    t = _run(_nvidia_args(WITH_RIMS, "rims_prod_vbios"), as_json=False)
    assert t.returncode == 1
    lines = t.stdout.strip().splitlines()
    assert any(line.strip().startswith("FAIL") for line in lines)
    assert lines[-1].startswith("REFUSED nvidia-gpu: [evidence.nvidia.rim_mismatch]")
    assert not any(line.startswith("OK") for line in lines)


def test_matching_rims_ok_with_skipped_ocsp():
    p = _run(_nvidia_args(WITH_RIMS, "rims_test_no_gpu"))
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["ok"] is True, out.get("error")
    _agrees(out)
    assert "nvidia.ocsp" in out["skipped_checks"]
    t = _run(_nvidia_args(WITH_RIMS, "rims_test_no_gpu"), as_json=False)
    assert t.returncode == 0
    assert t.stdout.strip().splitlines()[-1].startswith("OK nvidia-gpu")
    assert any(line.strip().startswith("skip  nvidia.ocsp") for line in t.stdout.splitlines())


@pytest.mark.parametrize("args", [
    lambda: _nvidia_args(V2025),
    lambda: [f"{INTEL[0].tee}-quote", str(INTEL[0].dir / INTEL[0].files["quote"]), "--collateral",
             str(INTEL[0].dir / INTEL[0].files["collateral"]), "--at", INTEL[0].verify_time.isoformat()],
    lambda: ["nitro", str(NITRO[0].dir / NITRO[0].files["cose_sign1"]), "--at", NITRO[0].verify_time.isoformat()],
], ids=["nvidia", "intel", "nitro"])
def test_every_family_one_verdict(args):
    p = _run(args())
    out = json.loads(p.stdout)
    assert p.returncode == (0 if out["ok"] else 1)
    _agrees(out)


def test_refusal_without_partial_still_names_a_failed_check():
    p = _run(["nvidia-gpu", str(WITH_RIMS.dir / WITH_RIMS.files["report"]), "--at", WITH_RIMS.verify_time.isoformat()])
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"]["code"] == "evidence.collateral_missing"
    _agrees(out)


def test_usage_errors_exit_2(tmp_path: Path):
    report = str(WITH_RIMS.dir / WITH_RIMS.files["report"])
    not_a_cert = tmp_path / "root.pem"
    not_a_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    cases = [
        ["no-such-tee", report],
        ["nvidia-gpu", report, "--at", "yesterday"],
        ["nvidia-gpu", report, "--nonce", "xyz"],
        ["nvidia-gpu", str(tmp_path / "missing.bin")],
        ["sim", report, "--sim-root", str(not_a_cert)],
        ["nvidia-gpu", report, "--no-such-flag"],
    ]
    for args in cases:
        p = _run(args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
