"""The relying party's CLI on TDX certificates, not only the sim: a CA (``init`` + ``serve``) pinning the
test Intel root (tests/collateral/testroot.py, CA_SERVICE_INSECURE_TEST_ROOTS) issues over HTTP to an
up-to-date host and to one a TCB recovery left OutOfDate (+INTEL-SA-99999), under a copy of
policies/tdx-cvm.yaml that accepts both. ``ca-service verify`` (online OCSP) passes the first with
``--expect tee=tdx status=affirming mrtd=... policy=...``; the second's EAR status is a warning, which
``--accept-insecure`` does not accept (it names the trust-vector claim that fell short) and only
``--accept-warning`` does; ``seal`` follows the same verdict, and ``unseal`` opens it with the key."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ca_service.agent.client import make_csr
from ca_service.crypto.keys import spki_der
from ca_service.evidence import verify as verify_evidence
from ca_service.evidence.binding import binding_value
from tests.collateral.testroot import REAL_CPU_SVN, Platform, TestIntel
from tests.integration.test_reappraise_testroot import CLI, REPO, running_ca

ADVISORY = "INTEL-SA-99999"  # the policy schema takes INTEL-SA-NNNNN


def _policy() -> str:
    doc = (REPO / "policies" / "tdx-cvm.yaml").read_text().replace("name: tdx-cvm", "name: tdx-rp")
    doc = doc.replace("tcb_status: [UpToDate]", "tcb_status: [UpToDate, OutOfDate]")
    doc = doc.replace("advisories: {allow: []}", f"advisories: {{allow: [{ADVISORY}]}}")
    assert "OutOfDate" in doc and ADVISORY in doc
    return doc + "  key_agreement: true\n"


@pytest.fixture(scope="module")
def tdx_ca(tmp_path_factory, db_url_factory) -> Any:
    ti = TestIntel()
    hosts = {"old": ti.platform("old"), "patched": ti.platform("patched", cpu_svn=(9, 9, *REAL_CPU_SVN[2:]))}
    recovery = ti.collateral(hosts["old"].fmspc, evaluation=21, levels=ti.tcb_levels(recovery=ADVISORY))
    root = ti.write_root(tmp_path_factory.mktemp("test-intel-root") / "root.pem")
    with running_ca(tmp_path_factory, db_url_factory(), f"intel={root}", {"tdx-rp.yaml": _policy()},
                    ti.bundle(recovery), None) as ca:
        yield ca, ti, hosts, recovery


def _issue(ca: Any, ti: TestIntel, host: Platform, out: Path) -> dict[str, Any]:
    """``POST /v1/certificates`` with a TDX quote bound to a fresh challenge and a new key, written as
    ``agent request`` writes them (chain.pem, key.pem)."""
    ch = requests.post(f"{ca.url}/v1/challenges", timeout=30).json()
    key = ec.generate_private_key(ec.SECP256R1())
    quote = ti.quote(host, binding_value(bytes.fromhex(ch["nonce"]), spki_der(key.public_key())))
    r = requests.post(f"{ca.url}/v1/certificates", timeout=60, json={
        "challenge_id": ch["id"], "policy": "tdx-rp",
        "csr": make_csr(key, (f"{host.name}.cvm.example",)).public_bytes(Encoding.PEM).decode(),
        "evidence": [{"type": "tdx-quote", "data": base64.b64encode(quote).decode()}]})
    assert r.status_code == 201, r.text
    out.mkdir()
    (out / "chain.pem").write_text(r.json()["certificate_chain"])
    (out / "key.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return {"serial": r.json()["serial"], "quote": quote, "dir": out}


def _cli(ca: Any, *args: Any) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *map(str, args)], env=ca.env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    return p


def _steps(p: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    assert p.stdout.startswith("{"), p.stdout + p.stderr
    return {s["name"]: s for s in json.loads(p.stdout)["steps"]}


def test_an_up_to_date_tdx_certificate_meets_tee_status_and_measurement_expectations(tdx_ca, tmp_path):
    ca, ti, hosts, recovery = tdx_ca
    got = _issue(ca, ti, hosts["patched"], tmp_path / "patched")
    claims = verify_evidence("tdx-quote", got["quote"], collateral=[recovery], at=ti.now, roots=ti.roots).claims
    root = ca.home / "root.pem"
    p = _cli(ca, "verify", got["dir"] / "chain.pem", "--root", root, "--accept-insecure", "--json",
             "--expect", "tee=tdx", "--expect", "status=affirming", "--expect", f"mrtd={claims['mrtd']}",
             "--expect", f"rtmr1={claims['rtmr1'].upper()}", "--expect", "policy=tdx-rp@1")
    steps = _steps(p)
    assert p.returncode == 0, steps
    assert steps["revocation"]["result"] == "pass" and steps["revocation"]["detail"].startswith("OCSP http")
    assert steps["status"] == {"name": "status", "result": "pass", "detail": "ear.status affirming"}
    for name in ("expect tee", "expect status", "expect mrtd", "expect rtmr1", "expect policy"):
        assert steps[name]["result"] == "pass", steps[name]
    wrong = _steps(_cli(ca, "verify", got["dir"] / "chain.pem", "--root", root, "--accept-insecure", "--json",
                        "--expect", "tee=snp", "--expect", "mrtd=" + "00" * 48))
    assert wrong["expect tee"]["result"] == "fail" and "expected snp" in wrong["expect tee"]["detail"]
    assert wrong["expect mrtd"]["result"] == "fail"


def test_a_warning_result_needs_accept_warning_not_accept_insecure(tdx_ca, tmp_path):
    ca, ti, hosts, _ = tdx_ca
    got = _issue(ca, ti, hosts["old"], tmp_path / "old")
    chain, root = got["dir"] / "chain.pem", ca.home / "root.pem"
    insecure_only = _cli(ca, "verify", chain, "--root", root, "--accept-insecure", "--json", "--expect", "tee=tdx")
    status = _steps(insecure_only)["status"]
    assert insecure_only.returncode == 1 and status["result"] == "fail", status
    assert status["detail"].startswith("ear.status warning (trust vector claims short: ") and "hardware=" in \
        status["detail"] and "--accept-warning accepts it" in status["detail"], status
    both = _cli(ca, "verify", chain, "--root", root, "--accept-insecure", "--accept-warning", "--json",
                "--expect", "tee=tdx")
    steps = _steps(both)
    assert both.returncode == 0, steps
    assert steps["status"]["result"] == "warn" and "accepted by --accept-warning; short: " in steps["status"]["detail"]
    assert "hardware=" in steps["status"]["detail"] and steps["expect tee"]["result"] == "pass"

    # seal follows the same verdict: refused without the opt-in, nothing written; sealed with it
    (tmp_path / "data").write_bytes(b"model weights key" * 1000)
    refused = _cli(ca, "seal", "--to", chain, "--root", root, "--accept-insecure", tmp_path / "data",
                   tmp_path / "data.sealed")
    assert refused.returncode == 1 and "seal: refused" in refused.stderr and not (tmp_path / "data.sealed").exists()
    sealed = _cli(ca, "seal", "--to", chain, "--root", root, "--accept-insecure", "--accept-warning",
                  "--expect", "tee=tdx", tmp_path / "data", tmp_path / "data.sealed")
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    opened = _cli(ca, "unseal", "--key", got["dir"] / "key.pem", tmp_path / "data.sealed", tmp_path / "data.out")
    assert opened.returncode == 0, opened.stderr
    assert (tmp_path / "data.out").read_bytes() == (tmp_path / "data").read_bytes()
