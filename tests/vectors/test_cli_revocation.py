"""`ca-service evidence verify` offline with the relying party's own files (docs/revocation.md): the
files decide, a CRL that is missing or expired is refused (exit 1), and only the explicit flags accept
it, shown as skipped or warned, never as passed."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from tests.vectors.manifest import vectors_for

CLI = [sys.executable, "-m", "ca_service.cli", "evidence", "verify"]
SNP = {v.id: v for v in vectors_for("snp")}
VLEK = SNP["snp/milan-aws-vlek"]  # no CRL in the vector
DSTACK = SNP["snp/milan-dstack-vcek"]  # its CRL ended before the report's time


def _run(v, roles, *flags: str, as_json: bool = True) -> tuple[int, dict | str]:
    args = ["snp-report", str(v.dir / v.files["report"]), "--at", v.verify_time.isoformat(), *flags]
    for r in roles:
        args += ["--collateral", str(v.dir / v.files[r])]
    p = subprocess.run([*CLI, *args] + (["--json"] if as_json else []), capture_output=True, text=True,
                       timeout=120, env={"PATH": "/usr/bin:/bin"})
    return p.returncode, (json.loads(p.stdout) if as_json else p.stdout)


def test_missing_crl_is_refused_unless_explicitly_accepted_and_then_shown_skipped():
    rc, out = _run(VLEK, ("vek", "cert_chain"))
    assert rc == 1 and out["ok"] is False and out["error"]["code"] == "revocation.amd_crl_missing"
    assert out["error"]["item"] == "amd_crl" and out["error"]["state"] == "missing"
    rc, out = _run(VLEK, ("vek", "cert_chain"), "--allow-unchecked-revocation")
    assert rc == 0 and out["ok"] is True
    assert out["revocation"] == {"amd_crl": "missing"} and out["warnings"] == ["revocation.amd_crl_missing"]
    check = next(c for c in out["checks"] if c["name"] == "revocation.amd_crl")
    assert check["result"] == "skipped"
    assert out["claims"]["revoked"] is None


def test_expired_crl_and_the_grace():
    rc, out = _run(DSTACK, ("vek", "cert_chain", "crl"))
    assert rc == 1 and out["error"]["code"] == "revocation.amd_crl_expired"
    # 2026-05-12 .. 2026-06-18: 37 days late
    rc, out = _run(DSTACK, ("vek", "cert_chain", "crl"), "--revocation-grace", "30d")
    assert rc == 1 and out["error"]["code"] == "revocation.amd_crl_expired"
    rc, out = _run(DSTACK, ("vek", "cert_chain", "crl"), "--revocation-grace", "40d")
    assert rc == 0 and out["warnings"] == ["revocation.amd_crl_expired"]
    assert next(c for c in out["checks"] if c["name"] == "revocation.amd_crl")["result"] == "pass"
    assert out["revocation"] == {"amd_crl": "expired"}
    assert timedelta(days=30) < DSTACK.verify_time - DSTACK.verify_time.replace(month=5, day=12) < timedelta(days=40)


def test_bad_grace_is_a_usage_error():
    p = subprocess.run([*CLI, "snp-report", str(DSTACK.dir / DSTACK.files["report"]), "--revocation-grace", "soon"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--revocation-grace" in p.stderr
