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
        assert all(c["result"] == "pass" for c in out["checks"])
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
