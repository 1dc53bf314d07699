"""`ca-service evidence verify` on the real vectors, the way a relying party runs it: files on
disk, `--at` the vector's verify_time, `--json`; exit code and JSON match the manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vectors.manifest import Vector, vectors_for
from tests.vectors.test_intel_vectors import EXPECTED_CODE
from tests.vectors.test_snp_vectors import KNOWN_REFUSALS

CLI = [sys.executable, "-m", "ca_service.cli", "evidence", "verify"]
INTEL = vectors_for("tdx") + vectors_for("sgx")
SNP = vectors_for("snp")


def _run(args: list[str]) -> tuple[int, dict]:
    p = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("v", INTEL, ids=lambda v: v.path)
def test_intel_vector_via_cli(v: Vector):
    rc, out = _run([f"{v.tee}-quote", str(v.dir / v.files["quote"]), "--collateral",
                    str(v.dir / v.files["collateral"]), "--at", v.verify_time.isoformat()])
    exp = v.expected
    assert out["type"] == f"{v.tee}-quote"
    if exp["verify_ok"]:
        assert rc == 0 and out["ok"] is True, out.get("error")
        assert out["tcb_status"] == exp["tcb_status"]
        assert sorted(out["advisory_ids"]) == sorted(exp["advisory_ids"])
        assert all(c["result"] == "pass" for c in out["checks"]) and out["checks"]
        assert len(out["claims"]["report_data"]) == 128
    else:
        assert rc == 1 and out["ok"] is False
        assert out["error"]["code"] == EXPECTED_CODE[exp["error"]]


@pytest.mark.parametrize("v", INTEL[:2], ids=lambda v: v.path)
def test_intel_vector_now_is_expired(v: Vector):
    """Without --at, "now" is long past the collateral window: refused, never a pass."""
    rc, out = _run([f"{v.tee}-quote", str(v.dir / v.files["quote"]), "--collateral",
                    str(v.dir / v.files["collateral"])])
    assert rc == 1 and out["error"]["code"] in ("evidence.collateral_expired", "evidence.certificate_expired")


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.path)
def test_snp_vector_via_cli(v: Vector):
    coll = [str(v.dir / v.files[k]) for k in ("vek", "cert_chain", "crl") if k in v.files]
    args = ["snp-report", str(v.dir / v.files["report"]), "--at", v.verify_time.isoformat()]
    for c in coll:
        args += ["--collateral", c]
    rc, out = _run(args)
    refusal = KNOWN_REFUSALS.get(v.path)
    if refusal is None:
        assert rc == 0 and out["ok"] is True, out.get("error")
        exp = v.expected
        assert out["claims"]["signing_key"] == exp["signing_key"].lower()
        rt = out["claims"]["reported_tcb"]
        assert {k: rt[k] for k in exp["reported_tcb"]} == exp["reported_tcb"]
    else:
        assert rc == 1 and out["error"]["code"] == refusal[0]
