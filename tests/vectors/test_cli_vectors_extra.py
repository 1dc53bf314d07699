"""`ca-service evidence verify nitro|nvidia-gpu` on the real vectors, as a relying party runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vectors.manifest import Vector, vectors_for
from tests.vectors.test_nitro_vectors import KNOWN_REFUSALS as NITRO_REFUSALS

CLI = [sys.executable, "-m", "ca_service.cli", "evidence", "verify"]
NITRO = vectors_for("nitro")


def _run(args: list[str]) -> tuple[int, dict]:
    p = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("v", NITRO, ids=lambda v: v.path)
def test_nitro_vector_via_cli(v: Vector):
    rc, out = _run(["nitro", str(v.dir / v.files["cose_sign1"]), "--at", v.verify_time.isoformat()])
    assert out["type"] == "nitro"
    refusal = NITRO_REFUSALS.get(v.path)
    if refusal is None:
        assert rc == 0 and out["ok"] is True, out.get("error")
        assert out["claims"]["module_id"] == v.expected["module_id"]
        assert out["claims"]["debug"] is False
        assert all(c["result"] == "pass" for c in out["checks"] if c["name"] != "nitro.revocation")
        assert out["skipped_checks"] == ["nitro.revocation"]
    else:
        assert rc == 1 and out["ok"] is False and out["error"]["code"] == refusal[0]


def test_nitro_cli_now_is_expired_and_framing_refused():
    v = NITRO[0]
    rc, out = _run(["nitro", str(v.dir / v.files["cose_sign1"])])
    assert rc == 1 and out["error"]["code"] == "evidence.certificate_expired"
    rc, out = _run(["nitro", str(v.dir / v.files["raw"]), "--at", v.verify_time.isoformat()])
    assert rc == 1 and out["error"]["code"] == "evidence.malformed"
    rc, out = _run(["nitro", str(v.dir / v.files["cose_sign1"]), "--at", v.verify_time.isoformat(),
                    "--nonce", "01" * 32])
    assert rc == 1 and out["error"]["code"] == "evidence.report_data_mismatch"


NVIDIA = vectors_for("nvidia")
WITH_RIMS = next(v for v in NVIDIA if v.id == "nvidia/hopper-h100-nvtrust-2023-with-rims")


@pytest.mark.parametrize("v", NVIDIA, ids=lambda v: v.path)
def test_nvidia_vector_via_cli(v: Vector):
    rc, out = _run(["nvidia-gpu", str(v.dir / v.files["report"]), "--collateral", str(v.dir / v.files["cert_chain"]),
                    "--at", v.verify_time.isoformat(), "--nonce", v.expected["nonce"]])
    assert rc == 0 and out["ok"] is True, out.get("error")
    c = out["claims"]
    assert c["nonce"] == v.expected["nonce"] and c["driver_version"] == v.expected["driver_version"]
    assert c["vbios_version_raw"] == v.expected["vbios_version_raw"]
    assert len(c["measurements"]) == v.expected["n_measurement_blocks"]
    assert next(ch for ch in out["checks"] if ch["name"] == "nvidia.ocsp")["result"] == "skipped"
    assert out["skipped_checks"] == ["nvidia.ocsp", "nvidia.rim.driver", "nvidia.rim.vbios"]


@pytest.mark.parametrize("rim_set", ["rims_test_no_gpu", "rims_prod_vbios"])
def test_nvidia_rims_via_cli(rim_set: str):
    v = WITH_RIMS
    args = ["nvidia-gpu", str(v.dir / v.files["report"]), "--collateral", str(v.dir / v.files["cert_chain"]),
            "--at", v.verify_time.isoformat()]
    for name in v.files[rim_set]:
        args += ["--collateral", str(v.dir / name)]
    rc, out = _run(args)
    exp = v.expected[rim_set]
    failed = [c for c in out["checks"] if c["result"] == "fail"]
    if exp["measurements_match"]:
        assert rc == 0 and out["ok"] is True and not failed, out.get("error")
    else:  # one verdict: the failed comparison is a refusal, exit 1, and it says which indexes
        assert rc == 1 and out["ok"] is False and out["error"]["code"] == "evidence.nvidia.rim_mismatch"
        assert [c["name"] for c in failed] == ["nvidia.rim.vbios"]
        assert failed[0]["code"] == "evidence.nvidia.rim_mismatch"
    assert out["claims"]["rim"]["mismatched_indexes"] == exp["mismatched_indexes"]
    assert out["claims"]["rim"]["measurements_match"] is exp["measurements_match"]


def test_nvidia_cli_refusals():
    v = WITH_RIMS
    base = ["nvidia-gpu", str(v.dir / v.files["report"]), "--at", v.verify_time.isoformat()]
    rc, out = _run(base)
    assert rc == 1 and out["error"]["code"] == "evidence.collateral_missing"
    rc, out = _run([*base, "--collateral", str(v.dir / v.files["cert_chain"]), "--nonce", "00" * 32])
    assert rc == 1 and out["error"]["code"] == "evidence.report_data_mismatch"
    rc, out = _run(["nvidia-gpu", str(v.dir / v.files["report"]), "--collateral", str(v.dir / v.files["cert_chain"]),
                    *[a for n in v.files["rims_test_no_gpu"] for a in ("--collateral", str(v.dir / n))]])
    assert rc == 1 and out["error"]["code"] == "evidence.collateral_expired"  # now: the RIM signers expired
